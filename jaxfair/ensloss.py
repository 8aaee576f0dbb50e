r"""EnsLoss: a fresh random convex-calibrated (CC) loss-derivative every batch ("doubly stochastic" SGD).

For a margin loss phi(y f(x)) with y in {-1, +1}, gradient descent only ever uses the derivative phi'(z) at the
margins z = y f(x). A convex phi is classification-calibrated iff phi'(0) < 0 (Bartlett, Jordan & McAuliffe,
2006), so CC losses are characterised by their derivatives:

  (D1) convex      <=>  phi' is non-decreasing;
  (D2) calibrated  <=>  phi'(0) < 0;
  (D3) bounded below: the integral of phi' over [0, inf) is finite (a fast enough rising tail).

EnsLoss (Dai, ICML 2025) draws a random derivative satisfying D1/D2 for every batch and back-propagates it
directly. Per batch, with logits o (B,), labels t in {0, 1}, y = 2t - 1 and margins z = y o:

  1. xi_i ~ N(0, 1) iid;  b_i = BoxCox^{-1}_lambda(xi_i) = exp(xi_i) if lambda = 0 else
     max(1 + lambda xi_i, 0)^(1/lambda)   (lambda < 0 with 1 + lambda xi <= 0 gives +inf);
  2. v = sort(-b) ascending, clipped from below at `clip` (default -1);
  3. rank matching: the k-th smallest margin gets v_(k), so g is non-decreasing in z within the batch (D1);
     ties in z are broken by position (a stable argsort), so the rule is deterministic;
  4. tail rescale (margin detached): g <- g / z where z > 1 (`tail="inverse"`, the default), or
     g <- g / (z (log z)^2) where z > e (`tail="inverse_log_squared"`, an older reference version);
  5. g <- g - shift (shift = 1e-6: strictly negative, D2);
  6. surrogate L = (1/n) sum_i stop_gradient(g_i) z_i over the n real examples, so dL/do_i = g_i y_i / n
     exactly. L's *value* is not a loss: monitor a real one (logistic / 0-1) instead.

Padding examples (mask = 0) take no part in the rank matching or the mean: the n real margins are matched
with n draws, exactly as if the batch had n examples.

Example::

  key = jax.random.fold_in(run_key, step)            # a fresh key every step
  value, grads = jax.value_and_grad(
      lambda p: ensloss(key, model(p, x)[:, 0], t))(params)

  # In the training core (jaxfair.training.make_train): the random derivative drives the update while a
  # real loss is monitored and evaluated.
  program = make_train(model=m, loss=ensloss_loss(), monitor_loss=losses.logistic, ...)

References:
  Ben Dai. EnsLoss: Stochastic Calibrated Loss Ensembles for Preventing Overfitting in Classification.
  ICML 2025 (PMLR 267:12001-12021), arXiv:2409.00908.
  P. L. Bartlett, M. I. Jordan, J. D. McAuliffe. Convexity, classification, and risk bounds. JASA 2006.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxfair import _checks
from jaxfair import losses as losses_lib

Array = jax.Array

TAILS = ("inverse", "inverse_log_squared", None)


def box_cox_inverse(xi: Array, lam: Array | float) -> Array:
  r"""Inverse Box-Cox transform: exp(xi) at lambda = 0, else max(1 + lambda xi, 0)^(1/lambda).

  Computed as exp(log1p(max(lambda xi, -1)) / lambda), which gives +inf when lambda < 0 and
  1 + lambda xi <= 0, and 0 when lambda > 0 and 1 + lambda xi <= 0. `lam` may be a traced scalar.
  """
  xi = jnp.asarray(xi)
  lam = jnp.asarray(lam, xi.dtype)
  is_zero = lam == 0
  safe = jnp.where(is_zero, jnp.ones_like(lam), lam)
  power = jnp.exp(jnp.log1p(jnp.maximum(safe * xi, -1.0)) / safe)
  return jnp.where(is_zero, jnp.exp(xi), power)


def draw_lambda(key: Array, epoch: Array | int, period: int, *, low: float = -1.0, high: float = 1.0) -> Array:
  """The random Box-Cox lambda ~ U(low, high) of epoch `epoch`, re-drawn every `period` epochs.

  Same (key, epoch // period) -> same lambda, so a loop can call it every step.
  """
  _checks.check_positive(period, "period")
  return jax.random.uniform(jax.random.fold_in(key, jnp.asarray(epoch) // period), (), minval=low,
                            maxval=high)


def _check_options(clip: Any, tail: Any, shift: Any) -> None:
  if tail not in TAILS:
    raise ValueError(f"`tail` must be one of {TAILS}, got {tail!r}.")
  if clip is not None:
    v = _checks.concrete_value(clip)
    if v is not None and not (np.all(v < 0) or np.all(np.isneginf(v))):
      raise ValueError(f"`clip` must be negative (the derivative is clipped from below at it; -1 is the "
                       f"default) or None for no clipping, got {v.tolist()}.")
  _checks.check_positive(shift, "shift", allow_zero=True)


def _check_finite_derivative(clip: Any, lam: Any, random_lam: bool) -> None:
  """An unclipped draw with lambda < 0 can be -inf (1 + lambda xi <= 0), which makes the update NaN."""
  v = None if clip is None else _checks.concrete_value(clip)
  unclipped = clip is None or (v is not None and np.all(np.isneginf(v)))
  lam_v = _checks.concrete_value(lam)
  if unclipped and (random_lam or (lam_v is not None and np.any(lam_v < 0))):
    raise ValueError(f"`clip`={clip} leaves the derivative unbounded, and with lambda < 0 "
                     f"({'redrawn from U(-1, 1)' if random_lam else f'lam={lam}'}) a draw can be -inf, which "
                     "makes the update NaN. Keep a finite `clip` (the reference's -1) or use lam >= 0.")


def _as_mask(mask: Array | None, n: int) -> Array:
  if mask is None:
    return jnp.ones((n,), bool)
  if np.shape(mask) != (n,):
    raise ValueError(f"`mask` must have shape ({n},) like the margins, got {np.shape(mask)}.")
  return jnp.asarray(mask).astype(bool)


def _tail_rescale(g: Array, z: Array, tail: str | None) -> Array:
  """Superlinear tail: g / z where z > 1 ("inverse") or g / (z log(z)^2) where z > e ("inverse_log_squared")."""
  if tail == "inverse":
    return jnp.where(z > 1.0, g / jnp.where(z > 1.0, z, 1.0), g)
  if tail == "inverse_log_squared":
    big = z > math.e
    zs = jnp.where(big, z, math.e)
    return jnp.where(big, g / (zs * jnp.square(jnp.log(zs))), g)
  return g


def calibrated_derivatives(key: Array, margins: Array, *, lam: Array | float = 0.0, clip: float | None = -1.0,
                           tail: str | None = "inverse", shift: float = 1e-6,
                           mask: Array | None = None) -> Array:
  r"""One random CC loss-derivative evaluated at each margin of a batch (steps 1-5 of the module docstring).

  Args:
    key: typed PRNG key; use a fresh one every step (`jax.random.fold_in(key, step)`).
    margins: (B,) margins z = y o (treated as constants: no gradient flows through them).
    lam: Box-Cox lambda (0 = lognormal base values); may be a traced scalar (e.g. from `draw_lambda`).
    clip: lower clip of the sorted derivative values (default -1), or None for none.
    tail: "inverse" (g / z for z > 1), "inverse_log_squared" (g / (z (log z)^2) for z > e) or None.
    shift: subtracted at the end so that g < 0 strictly (D2).
    mask: optional (B,) bool; False marks padding, which is excluded from the rank matching and gets g = 0.

  Returns:
    g (B,): for real examples, non-decreasing in z (D1: z_i < z_j implies g_i <= g_j) and <= -shift (D2).
  """
  _checks.check_ndim(margins, 1, "margins")
  _check_options(clip, tail, shift)
  margins = jnp.asarray(margins)
  if not jnp.issubdtype(margins.dtype, jnp.floating):
    raise ValueError(f"`margins` must be floating point, got dtype {margins.dtype}.")
  n = margins.shape[0]
  mask = _as_mask(mask, n)
  z = jax.lax.stop_gradient(margins)
  dtype = z.dtype
  xi = jax.random.normal(key, (n,), dtype)
  v = -box_cox_inverse(xi, lam)
  # Padding draws sort last (+inf) so the first n sorted values are the n real draws, in order.
  v_sorted = jnp.sort(jnp.where(mask, v, jnp.inf))
  if clip is not None:
    v_sorted = jnp.maximum(v_sorted, jnp.asarray(clip, dtype))
  # Real examples first, then by margin; lexsort is stable, so ties keep their batch order.
  order = jnp.lexsort((z, ~mask))
  g = jnp.zeros_like(z).at[order].set(v_sorted)
  g = _tail_rescale(g, z, tail)
  g = g - jnp.asarray(shift, dtype)
  return jnp.where(mask, g, jnp.zeros_like(g))


def _binary_inputs(logits: Array, labels: Array) -> tuple[Array, Array]:
  """Margins z = y o (with gradient) and y in {-1, +1}; validates shapes and labels."""
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  z = losses_lib.margins(logits, labels)
  y = 2.0 * labels.reshape(z.shape).astype(z.dtype) - 1.0
  return z, y


def _redraw_lam(key: Array, lam: Any, lam_redraw: bool) -> tuple[Array, Any]:
  if not lam_redraw:
    return key, lam
  k_lam, key = jax.random.split(key)
  return key, jax.random.uniform(k_lam, (), minval=-1.0, maxval=1.0)


def ensloss(key: Array, logits: Array, labels: Array, *, mask: Array | None = None, lam: Array | float = 0.0,
            clip: float | None = -1.0, tail: str | None = "inverse", shift: float = 1e-6,
            lam_redraw: bool = False) -> Array:
  r"""The EnsLoss surrogate L = (1/n) sum_i stop_gradient(g_i) z_i; its gradient wrt logit o_i is g_i y_i / n.

  Args:
    key: typed PRNG key, fresh every step.
    logits: (B,) or (B, 1) logits o.
    labels: (B,) labels in {0, 1} (not -1/+1).
    mask: optional (B,) bool marking real examples; n = mask.sum() (B without a mask).
    lam, clip, tail, shift: see `calibrated_derivatives`.
    lam_redraw: draw lambda ~ U(-1, 1) from `key` on every call (overrides `lam`). For a re-draw every P
      epochs pass `lam=draw_lambda(key, epoch, P)` instead.

  Returns:
    A scalar whose value is NOT a loss (monitor `jaxfair.losses.logistic` or `zero_one`) and whose gradient is
    the random calibrated derivative.
  """
  _check_finite_derivative(clip, lam, lam_redraw)
  z, _ = _binary_inputs(logits, labels)
  mask = _as_mask(mask, z.shape[0])
  key, lam = _redraw_lam(key, lam, lam_redraw)
  g = calibrated_derivatives(key, z, lam=lam, clip=clip, tail=tail, shift=shift, mask=mask)
  n = jnp.maximum(mask.sum(), 1).astype(z.dtype)
  return jnp.sum(jnp.where(mask, jax.lax.stop_gradient(g) * z, 0.0)) / n


def ensloss_loss(*, lam: float = 0.0, clip: float | None = -1.0, tail: str | None = "inverse",
                 shift: float = 1e-6, lam_redraw: bool = False, lam_period_steps: int | None = None):
  r"""EnsLoss as a `PerExampleLoss` `(outputs, labels, *, key, mask) -> (B,)` for the training core.

  Returns l_i = stop_gradient(g_i) z_i (0 on padding). Under the uniform weighting w_i = 1/n of
  `jaxfair.training` the step's objective sum_i w_i l_i is exactly `ensloss`, so the update follows the random
  derivative g_i y_i / n. The values l_i are not losses: give `make_train` a real `monitor_loss`
  (e.g. `jaxfair.losses.logistic`), which is what gets logged and evaluated. A loss-based weighting rule
  would see these surrogate values; EnsLoss is meant for the uniform rule.

  `lam_period_steps=N` re-draws lambda ~ U(-1, 1) every N steps (the reference's re-draw every P epochs is
  N = P x steps per epoch), from the run's own key: the training core passes `step` and `run_key`.
  `lam_redraw=True` re-draws it every step instead (an extension).
  """
  _check_options(clip, tail, shift)
  if lam_period_steps is not None:
    if lam_redraw:
      raise ValueError("Pass at most one of `lam_redraw` (every step) and `lam_period_steps` (every N steps).")
    _checks.check_positive(lam_period_steps, "lam_period_steps")
  _check_finite_derivative(clip, lam, lam_redraw or lam_period_steps is not None)

  def loss(outputs: Array, labels: Array, *, key: Array | None = None, mask: Array | None = None,
           step: Array | None = None, run_key: Array | None = None) -> Array:
    if key is None:
      raise ValueError("EnsLoss draws a random derivative and needs a PRNG `key`; it has no loss value to "
                       "evaluate. Pass a real `monitor_loss` (e.g. jaxfair.losses.logistic) to make_train "
                       "for monitoring, evaluation and attacks.")
    z, _ = _binary_inputs(outputs, labels)
    m = _as_mask(mask, z.shape[0])
    lam_ = lam
    if lam_period_steps is not None:
      if step is None or run_key is None:
        raise ValueError("`lam_period_steps` needs the `step` and `run_key` that the training core passes.")
      lam_ = draw_lambda(run_key, step, lam_period_steps)
    k, lam_ = _redraw_lam(key, lam_, lam_redraw)
    g = calibrated_derivatives(k, z, lam=lam_, clip=clip, tail=tail, shift=shift, mask=m)
    return jnp.where(m, jax.lax.stop_gradient(g) * z, 0.0)

  loss.__name__ = "ensloss"
  return loss


def population_derivative(z: Array, margin_cdf: Array | None = None, *, margin_sf: Array | None = None,
                          clip: float | None = -1.0, tail: str | None = "inverse", shift: float = 1e-6) -> Array:
  r"""The large-batch limit (lambda = 0) of the derivative at margin z whose rank quantile is F(z).

  The u-quantile of v = -exp(xi) is -exp(Phi^{-1}(1 - u)), so with the clip at -1 the matched value is
  -min(1, exp(Phi^{-1}(1 - F(z)))), then the tail rescale and the shift apply. [derived]
  Pass either `margin_cdf` F(z) or `margin_sf` 1 - F(z); the survival function keeps the far tail, where
  1 - F(z) < 1e-16 is lost to rounding in 1 - `margin_cdf`.
  """
  _check_options(clip, tail, shift)
  if (margin_cdf is None) == (margin_sf is None):
    raise ValueError("Pass exactly one of `margin_cdf` (F(z)) and `margin_sf` (1 - F(z)).")
  z = jnp.asarray(z)
  sf = 1.0 - jnp.asarray(margin_cdf, z.dtype) if margin_sf is None else jnp.asarray(margin_sf, z.dtype)
  base = -jnp.exp(jax.scipy.special.ndtri(jnp.clip(sf, 0.0, 1.0)))
  g = base if clip is None else jnp.maximum(base, clip)
  g = _tail_rescale(g, z, tail)
  return g - shift

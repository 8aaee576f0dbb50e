"""Loss-based instance reweighting, KL-DRO and CVaR weights, as pure functions and training-step rules.

Every function takes the vector of per-example losses of the (global) batch, shape (N,), and an optional
`mask` (1 = real example, 0 = padding) and returns non-negative weights that are 0 on padding and sum to 1
over the real examples (the EMA-normalised estimator is the one documented exception: its weights sum to
mean_B e^{l/r} / u_t, about 1 while the losses are stationary). The training step applies `stop_gradient` to them: the update is sum_i w_i grad l_i.

Loss-based strategies (Sow et al., 2025). With l_min / l_max over the real examples,

    h(l) = delta * (2 l - l_max - l_min) / max(l_max - l_min, 1e-6)        in [-delta, delta]
    f(x): linupper  min(x + delta, delta)     quadratic  1 - x^2 / delta^2
          extremes  |x|                       linear     (x + delta) / 2
    w = softmax(f(h(l)) / r)

`linear` equals KL-DRO on the normalised losses at temperature 2r. (The reference code's key `upper` is
ambiguous — `linear` in one repository, `linupper` in the other — and is rejected here.)

KL-DRO (Gibbs variational principle / Donsker–Varadhan):

    Phi_r(l) = max_{w in simplex} <w, l> - r KL(w || uniform) = r log (1/n) sum_i exp(l_i / r),
    attained uniquely at w* = softmax(l / r);  grad_l Phi_r = w*,  dPhi_r/dr = -KL(w* || uniform).

CVaR_alpha: the mean of the top alpha fraction of the losses (Rockafellar & Uryasev, 2000); its weights put
1/(alpha n) on each of the floor(alpha n) largest losses and the fractional remainder on the next one.

Numerics. Everything is computed with max-subtraction (softmax, log-sum-exp) so huge or tiny losses and
temperatures neither overflow nor produce NaN; `r = inf` gives uniform weights, `r -> 0` the hard max.
Reductions (min, max, sums) run over the whole array, so under `jit` on a batch sharded across devices the
weights are those of the GLOBAL batch. Inside `jax.shard_map` pass `axis_name` (the mapped batch axis): the
reductions then use `pmax`/`psum` over it.

Bad input. Shapes are checked always (an empty batch raises). Concrete (eager) values are checked too:
`r <= 0`, `delta <= 0`, `alpha` outside (0, 1] and NaN/Inf losses on real examples raise `ValueError`
naming the argument. Under `jit` values cannot raise; the documented behaviour there is:
  * non-finite losses on real examples are treated as padding (weight 0) and the weights are computed over the
    finite ones (so weights are never NaN; `weighted_loss` itself is NaN if a loss is NaN, as it should be,
    and the training loop's NaN guard reports it);
  * a traced `r <= 0` is treated as the limit r -> 0+ (all weight on the largest score); a traced `alpha` is
    clipped to (0, 1];
  * a batch with no real (finite) example gets all-zero weights (like `components.masked_uniform`), and
    `kl_dro_value` / `cvar_value` return 0 for it.

References:
  Sow, Woisetschläger, Bulusu, Wang, Jacobsen, Liang. Dynamic Loss-Based Sample Reweighting for Improved
    Large Language Model Pretraining. ICLR 2025, arXiv:2502.06733.
  Rockafellar, Uryasev. Optimization of conditional value-at-risk. J. Risk 2000.
  Sow, Lin, Wang, Liang. Doubly Robust Instance-Reweighted Adversarial Training. ICLR 2024 (EMA normaliser).
  Wang, Fang, Liu. Stochastic compositional gradient descent. Math. Program. 2017 (SCGD).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxfair import _checks
from jaxfair.training.components import WeightingRule, masked_uniform

Array = jax.Array
Schedule = Callable[[Array], Array]
ScalarOrSchedule = Union[float, Array, Schedule]

STRATEGIES = ("linupper", "quadratic", "extremes", "linear")
RANGE_FLOOR = 1e-6  # the reference code's floor on l_max - l_min in the min-max normalisation

__all__ = [
    "STRATEGIES", "minmax_normalize", "strategy_scores", "loss_based_weights", "kl_dro_weights",
    "kl_dro_value", "cvar_weights", "cvar_value", "weighted_loss", "weight_diagnostics",
    "EmaKLDROState", "ema_kl_dro_init", "ema_kl_dro_weights", "RuleState", "r_warmup_schedule",
    "with_uniform_warmup", "loss_based_rule", "kl_dro_rule", "ema_kl_dro_rule", "cvar_rule",
]


# ----------------------------------------------------------------------------------------------------------
# Helpers: validation, masks, global reductions.


def _float_dtype(x: Array):
  """Computation dtype: at least float32 (bf16/f16 losses are upcast)."""
  return jnp.promote_types(jnp.result_type(x), jnp.float32)


def _prepare(losses: Any, mask: Any, name: str = "losses") -> tuple[Array, Array]:
  """Validates `losses` (N,) and `mask`, returns (losses as float, valid) with valid = real and finite."""
  _checks.check_ndim(losses, 1, name)
  if np.shape(losses)[0] == 0:
    raise ValueError(f"`{name}` is empty (shape {np.shape(losses)}); weights need at least one example. "
                     "Skip empty batches or pad them and pass `mask`.")
  losses = jnp.asarray(losses)
  losses = losses.astype(_float_dtype(losses))
  if mask is None:
    real = jnp.ones(losses.shape, bool)
  else:
    if np.shape(mask) != np.shape(losses):
      raise ValueError(f"`mask` (shape {np.shape(mask)}) must have the shape of `{name}` {np.shape(losses)}.")
    real = jnp.asarray(mask) > 0
  mask_value = None if mask is None else _checks.concrete_value(mask)
  loss_value = _checks.concrete_value(losses)
  if loss_value is not None:
    real_np = np.ones(loss_value.shape, bool) if mask is None else (
        None if mask_value is None else mask_value > 0)
    if real_np is not None:
      bad = real_np & ~np.isfinite(loss_value)
      if bad.any():
        raise ValueError(f"`{name}` contains NaN or Inf at real (unmasked) indices "
                         f"{np.argwhere(bad).ravel()[:5].tolist()}; fix the loss (or mask those examples).")
  valid = real & jnp.isfinite(losses)
  return losses, valid


def _check_r(r: Any, name: str = "r") -> None:
  _checks.check_positive(r, name)


def _check_alpha(alpha: Any) -> None:
  v = _checks.concrete_value(alpha)
  if v is not None and (np.any(np.isnan(v)) or np.any(v <= 0) or np.any(v > 1)):
    raise ValueError(f"`alpha` must lie in (0, 1] (the fraction of worst examples averaged), got {v.tolist()}.")


def _psum(x: Array, axis_name) -> Array:
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def _pmax(x: Array, axis_name) -> Array:
  return x if axis_name is None else jax.lax.pmax(x, axis_name)


def _gsum(x: Array, axis_name) -> Array:
  return _psum(jnp.sum(x), axis_name)


def _gmax(x: Array, axis_name) -> Array:
  return _pmax(jnp.max(x), axis_name)


def _replicated(x: Array) -> Array:
  """x replicated over an explicit-sharding mesh axis (no-op otherwise; under Auto axes XLA gathers itself)."""
  sharding = getattr(jax.typeof(x), "sharding", None)
  spec = getattr(sharding, "spec", None)
  if spec is not None and any(s is not None for s in spec):
    return jax.sharding.reshard(x, jax.sharding.PartitionSpec(*([None] * x.ndim)))
  return x


def _safe_r(r: Any, dtype) -> Array:
  """r as an array; a traced r <= 0 (or NaN) becomes the smallest normal number (the r -> 0+ limit)."""
  r = jnp.asarray(r, dtype)
  return jnp.where(r > 0, r, jnp.finfo(dtype).tiny)


def _masked_softmax(scores: Array, valid: Array, r: Array, axis_name=None) -> Array:
  """softmax(scores / r) over the valid entries, 0 elsewhere; all-zero when nothing is valid."""
  any_valid = _gsum(valid.astype(jnp.int32), axis_name) > 0
  smax = _gmax(jnp.where(valid, scores, -jnp.inf), axis_name)
  smax = jnp.where(any_valid, smax, 0.0)
  # (s - s_max) <= 0, so exp never overflows; r = inf gives z = 0 (uniform); tiny r gives -inf off the max.
  z = jnp.where(valid, (scores - smax) / r, -jnp.inf)
  e = jnp.exp(z)
  total = _gsum(e, axis_name)  # >= 1 when any entry is valid (the max contributes exp(0) = 1)
  return jnp.where(valid, e / jnp.where(any_valid, total, 1.0), 0.0)


# ----------------------------------------------------------------------------------------------------------
# Loss-based strategies.


def minmax_normalize(losses: Array, delta: float = 1.0, mask: Array | None = None, *,
                     axis_name=None) -> Array:
  """Maps the real losses affinely onto [-delta, delta] (l_min -> -delta, l_max -> delta).

  h(l) = delta * (2 l - l_max - l_min) / max(l_max - l_min, 1e-6), with l_min, l_max over the real, finite
  examples of the (global) batch (the reference's formula), computed through the ratio (l - l_min) / span in
  [0, 1] (l_max - l_min must be finite: inf for losses of opposite sign beyond half the float range). Padding
  (and, under jit, non-finite losses) map to the lowest value. The 1e-6 floor is the reference code's: for loss
  ranges below it h shrinks towards 0 around the mid-range (equal losses give 0, uniform weights downstream),
  so h is exactly affine-invariant only above the floor.

  Args:
    losses: (N,) per-example losses.
    delta: half-width of the target interval, > 0 (1.0 in every reference run).
    mask: optional (N,) mask, 1 = real example.
    axis_name: the mapped batch axis when called inside `jax.shard_map`.

  Returns:
    (N,) normalised losses.
  """
  losses, valid = _prepare(losses, mask)
  _checks.check_positive(delta, "delta")
  dtype = losses.dtype
  any_valid = _gsum(valid.astype(jnp.int32), axis_name) > 0
  lmin = -_gmax(jnp.where(valid, -losses, -jnp.inf), axis_name)
  lmax = _gmax(jnp.where(valid, losses, -jnp.inf), axis_name)
  lmin = jnp.where(any_valid, lmin, 0.0)
  lmax = jnp.where(any_valid, lmax, 0.0)
  span = jnp.maximum(lmax - lmin, jnp.asarray(RANGE_FLOOR, dtype))
  frac = jnp.clip((jnp.where(valid, losses, lmin) - lmin) / span, 0.0, 1.0)
  width = (lmax - lmin) / span  # 1 above the floor; below it, h shrinks towards 0
  return jnp.asarray(delta, dtype) * (2.0 * frac - width)


def strategy_scores(x: Array, strategy: str, delta: float = 1.0) -> Array:
  """The strategy's score f(x) of normalised losses x in [-delta, delta].

  linupper: min(x + delta, delta) — down-weights low losses, all above mid-range get the maximal score.
  quadratic: 1 - x^2/delta^2 — emphasises medium losses.  extremes: |x| — emphasises both ends.
  linear: (x + delta)/2 — KL-DRO on the normalised losses at temperature 2r.
  """
  if strategy == "upper":
    raise ValueError("strategy 'upper' is ambiguous in the reference code (it means 'linear' in one repository "
                     "and 'linupper' in the other); pass 'linupper' or 'linear'.")
  if strategy not in STRATEGIES:
    raise ValueError(f"Unknown `strategy` {strategy!r}; choose one of {STRATEGIES} (uniform weighting is "
                     "`jaxfair.training.components.uniform()`).")
  _checks.check_positive(delta, "delta")
  x = jnp.asarray(x)
  x = x.astype(_float_dtype(x))
  delta = jnp.asarray(delta, x.dtype)
  if strategy == "linupper":
    return jnp.minimum(x + delta, delta)
  if strategy == "quadratic":
    return 1.0 - jnp.square(x / delta)
  if strategy == "extremes":
    return jnp.abs(x)
  return 0.5 * x + 0.5 * delta


def loss_based_weights(losses: Array, strategy: str = "linupper", r: float = 1.0, delta: float = 1.0,
                       mask: Array | None = None, *, axis_name=None) -> Array:
  """Sow et al. (2025) sample weights w = softmax(f(h(l)) / r) over the real examples.

  Args:
    losses: (N,) per-example losses of the global batch (for LMs: mean token cross-entropy per sequence).
    strategy: one of "linupper", "quadratic", "extremes", "linear".
    r: temperature > 0 (reference runs: 1.0 and 0.4; r = inf gives uniform weights).
    delta: normalisation half-width > 0 (1.0 in the reference runs).
    mask: optional (N,) mask, 1 = real example, 0 = padding (weight 0).
    axis_name: the mapped batch axis when called inside `jax.shard_map`.

  Returns:
    (N,) weights, >= 0, summing to 1 over the real examples. Invariant to affine rescaling a*l + b (a > 0)
    of the losses (for loss ranges above the 1e-6 floor).

  Example:
    >>> w = loss_based_weights(jnp.array([0.1, 2.0, 3.5]), "linupper", r=0.4)
  """
  scores = strategy_scores(jnp.zeros((1,)), strategy, delta)  # validates strategy/delta early
  del scores
  _check_r(r)
  losses, valid = _prepare(losses, mask)
  x = minmax_normalize(losses, delta, jnp.where(valid, 1, 0), axis_name=axis_name)
  f = strategy_scores(x, strategy, delta)
  return _masked_softmax(f, valid, _safe_r(r, losses.dtype), axis_name)


# ----------------------------------------------------------------------------------------------------------
# KL-DRO and CVaR.


def kl_dro_weights(losses: Array, r: float, mask: Array | None = None, *, axis_name=None) -> Array:
  """KL-DRO weights w* = softmax(l / r) = argmax_{w in simplex} <w, l> - r KL(w || uniform).

  Shift-invariant in l; r -> 0 puts all weight on the largest loss(es), r -> inf (or r = inf) is uniform.

  Args:
    losses: (N,) per-example losses of the global batch.
    r: temperature > 0 (the KL penalty weight).
    mask: optional (N,) mask, 1 = real example.
    axis_name: the mapped batch axis when called inside `jax.shard_map`.

  Returns:
    (N,) weights >= 0 summing to 1 over the real examples.
  """
  _check_r(r)
  losses, valid = _prepare(losses, mask)
  return _masked_softmax(losses, valid, _safe_r(r, losses.dtype), axis_name)


def kl_dro_value(losses: Array, r: float, mask: Array | None = None, *, axis_name=None) -> Array:
  """Phi_r(l) = r log (1/n) sum_i exp(l_i / r), the KL-regularised worst-case mean loss.

  Properties: mean(l) <= Phi_r(l) <= l_max, Phi_r >= l_max - r log n; non-increasing in r with
  dPhi/dr = -KL(w* || u); grad_l Phi_r = kl_dro_weights(l, r); Phi_r(l + c) = Phi_r(l) + c.

  Computed stably in two forms: around the max (l_max + r log mean e^{(l - l_max)/r}) when the spread is
  large relative to r, and around the mean (m + r log1p(mean expm1((l - m)/r))) when (l_max - m)/r <= 1, so
  huge r keeps the mean + Var/(2r) behaviour instead of rounding to l_max. r = inf returns the mean.

  Args:
    losses: (N,) per-example losses; mask: optional (N,) mask; r > 0; axis_name: for `jax.shard_map`.

  Returns:
    A scalar (0 for a batch without real examples).
  """
  _check_r(r)
  losses, valid = _prepare(losses, mask)
  dtype = losses.dtype
  r = _safe_r(r, dtype)
  r_is_inf = jnp.isinf(r)
  r = jnp.where(r_is_inf, jnp.ones_like(r), r)  # r = inf selects the mean below; a finite r keeps both forms'
  # gradients finite (an inf in the unselected branch would make the where's gradient NaN)
  n = _gsum(valid.astype(dtype), axis_name)
  any_valid = n > 0
  n_safe = jnp.where(any_valid, n, 1.0)
  l0 = jnp.where(valid, losses, 0.0)
  lmax = jnp.where(any_valid, _gmax(jnp.where(valid, losses, -jnp.inf), axis_name), 0.0)
  mean = _gsum(l0 / n_safe, axis_name)  # divided first: the sum of losses near the float maximum overflows
  # Form 1: around the max.
  z_max = jnp.where(valid, (l0 - lmax) / r, -jnp.inf)
  around_max = lmax + r * jnp.log(_gsum(jnp.exp(z_max), axis_name) / n_safe)
  # Form 2: around the mean (z clipped so the unselected branch cannot overflow).
  z_mean = jnp.minimum((l0 - mean) / r, 2.0)
  around_mean = mean + r * jnp.log1p(_gsum(jnp.where(valid, jnp.expm1(z_mean), 0.0), axis_name) / n_safe)
  use_mean = (lmax - mean) <= r
  value = jnp.where(use_mean, around_mean, around_max)
  value = jnp.where(r_is_inf, mean, value)
  return jnp.where(any_valid, value, 0.0)


_CVAR_PAIRWISE_MAX = 1024  # batch size up to which CVaR ranks come from pairwise comparisons, not a sort


def cvar_weights(losses: Array, alpha: float, mask: Array | None = None) -> Array:
  """CVaR_alpha weights: the worst alpha fraction of the real examples, averaged.

  With n real examples and k = alpha n, the example of descending rank j (0-based) gets
  clip(k - j, 0, 1) / k: floor(k) examples get 1/k, the next the fractional rest (the exact discrete
  CVaR of Rockafellar & Uryasev). Ties are split evenly among equal losses, so the weights are permutation
  equivariant. alpha = 1 is uniform; alpha < 1/n puts all weight on the largest loss. The sort runs over the
  global array (under jit on a sharded batch XLA gathers it); there is no `shard_map` variant.

  Args:
    losses: (N,) per-example losses; alpha: fraction in (0, 1]; mask: optional (N,) mask.

  Returns:
    (N,) weights >= 0 summing to 1 over the real examples.
  """
  _check_alpha(alpha)
  losses, valid = _prepare(losses, mask)
  dtype = losses.dtype
  size = losses.shape[0]
  alpha = jnp.clip(jnp.asarray(alpha, dtype), jnp.finfo(dtype).tiny, 1.0)
  n = jnp.sum(valid.astype(dtype))
  k = jnp.maximum(alpha * n, jnp.finfo(dtype).tiny)
  keyed = _replicated(jnp.where(valid, losses, -jnp.inf))  # ranks need the whole (global) vector
  # An example whose loss has `above` larger and `tied` equal real losses occupies descending ranks
  # [above, above + tied); ranks j get clip(k - j, 0, 1) / k, whose sum over ranks < r is min(r, k) / k,
  # so the tie group shares (min(above + tied, k) - min(above, k)) / k evenly.
  if size <= _CVAR_PAIRWISE_MAX:  # small batches: O(N^2) comparisons fuse into one cheap pass, no sort
    above = jnp.sum(keyed[None, :] > keyed[:, None], axis=1).astype(dtype)
    tied = jnp.sum((keyed[None, :] == keyed[:, None]) & valid[None, :], axis=1).astype(dtype)
  else:
    ascending = jnp.sort(keyed)
    lo = jnp.searchsorted(ascending, keyed, side="left")
    hi = jnp.searchsorted(ascending, keyed, side="right")
    above, tied = (size - hi).astype(dtype), (hi - lo).astype(dtype)
  share = (jnp.minimum(above + tied, k) - jnp.minimum(above, k)) / (k * jnp.maximum(tied, 1.0))
  return jnp.where(valid & (n > 0), share, 0.0)


def cvar_value(losses: Array, alpha: float, mask: Array | None = None) -> Array:
  """CVaR_alpha(l): the mean of the top alpha fraction of the real losses (0 for an all-padding batch)."""
  w = cvar_weights(losses, alpha, mask)
  losses, valid = _prepare(losses, mask)
  return jnp.sum(w * jnp.where(valid, losses, 0.0))


def weighted_loss(losses: Array, weights: Array) -> Array:
  """sum_i stop_gradient(w_i) * l_i: its gradient is sum_i w_i grad l_i (weights carry no gradient).

  For KL-DRO weights this is Danskin's gradient of Phi_r; for the loss-based f∘h weights it is not the
  gradient of any closed-form objective (Sow et al., 2025). Padding must have weight 0; a NaN loss makes the
  result NaN even at weight 0 (IEEE 0 * NaN), which is what a NaN guard should see.
  """
  _checks.check_ndim(losses, 1, "losses")
  if np.shape(weights) != np.shape(losses):
    raise ValueError(f"`weights` (shape {np.shape(weights)}) must have the shape of `losses` "
                     f"{np.shape(losses)}.")
  losses = jnp.asarray(losses)
  weights = jax.lax.stop_gradient(jnp.asarray(weights))
  return jnp.sum(weights.astype(_float_dtype(losses)) * losses)


def weight_diagnostics(weights: Array, mask: Array | None = None) -> dict[str, Array]:
  """Summary statistics of a weight vector (normalised to sum 1 first).

  Returns a dict of scalars:
    ess: Kish's effective sample size (sum w)^2 / sum w^2 (= 1 / sum w^2 for normalised weights; n = uniform).
    ess_fraction: ess / n, in (0, 1].
    n_w_max: n * max w (1 = uniform; the paper's theory assumes <= 2 with n = batch size).
    entropy: -sum w log w (log n = uniform).
    kl_to_uniform: KL(w || uniform) = log n - entropy.
  where n is the number of real examples (mask sum, or the vector length). All zero for all-zero weights.
  """
  _checks.check_ndim(weights, 1, "weights")
  value = _checks.concrete_value(weights)
  if value is not None and np.any(value < 0):  # NaN passes: diagnosing a diverged run must not crash
    raise ValueError(f"`weights` must be >= 0; negative at indices {np.flatnonzero(value < 0)[:5].tolist()}.")
  weights = jnp.asarray(weights)
  weights = weights.astype(_float_dtype(weights))
  dtype = weights.dtype
  if mask is None:
    n = jnp.asarray(weights.shape[0], dtype)
  else:
    if np.shape(mask) != np.shape(weights):
      raise ValueError(f"`mask` (shape {np.shape(mask)}) must have the shape of `weights` {np.shape(weights)}.")
    n = jnp.sum((jnp.asarray(mask) > 0).astype(dtype))
  total = jnp.sum(weights)
  ok = total > 0
  w = weights / jnp.where(ok, total, 1.0)
  sq = jnp.sum(jnp.square(w))
  ess = jnp.where(ok, 1.0 / jnp.where(ok, sq, 1.0), 0.0)
  entropy = -jnp.sum(jnp.where(w > 0, w * jnp.log(jnp.where(w > 0, w, 1.0)), 0.0))
  log_n = jnp.log(jnp.maximum(n, 1.0))
  return {
      "ess": ess,
      "ess_fraction": jnp.where(ok, ess / jnp.maximum(n, 1.0), 0.0),
      "n_w_max": jnp.where(ok, n * jnp.max(w), 0.0),
      "entropy": entropy,
      "kl_to_uniform": jnp.where(ok, log_n - entropy, 0.0),
  }


# ----------------------------------------------------------------------------------------------------------
# EMA-normalised KL-DRO estimator (SCGD-style, log space).


class EmaKLDROState(NamedTuple):
  """The normaliser log u_t = anchor / r + offset, and the number of batches seen (with a real example).

  Splitting log u_t into an anchor in loss units (a running max of the losses) plus a bounded offset keeps
  the state exact for any loss scale and temperature: e^{l/r} overflows float32 once l/r > 88, l/r itself
  overflows for tiny r, and r log u_t alone would round away the r log B part the weights depend on.
  `value(r)` gives r log u_t (the running KL-DRO value in loss units).
  """
  anchor: Array
  offset: Array
  count: Array

  def value(self, r) -> Array:
    return self.anchor + r * self.offset


def ema_kl_dro_init(dtype=jnp.float32) -> EmaKLDROState:
  """Empty state: the first batch initialises u with its own mean (no bias towards 0)."""
  return EmaKLDROState(anchor=jnp.zeros((), dtype), offset=jnp.zeros((), dtype), count=jnp.zeros((), jnp.int32))


def ema_kl_dro_weights(losses: Array, state: EmaKLDROState, r: float, beta: float,
                       mask: Array | None = None, *, axis_name=None) -> tuple[Array, EmaKLDROState]:
  """EMA-normalised KL-DRO weights w_i = e^{l_i/r} / (B u_t), computed in log space.

    u_t = (1 - beta) u_{t-1} + beta mean_B e^{l/r}    (u_1 = mean_{B_1} e^{l/r})

  Per-batch softmax weights estimate the full-data KL-DRO gradient with a bias towards uniform (Jensen:
  E_B Phi_r(l_B) <= Phi_r(l_full)); normalising by a running average of the inner value over batches, as in
  stochastic compositional gradient descent (SCGD) and DONE's CID algorithm, removes most of it. With
  log u_t = m_t / r + s_t (anchor m_t = max(m_{t-1}, max_B l), see `EmaKLDROState`):

    s_t = logaddexp(log(1 - beta) + (m_{t-1} - m_t)/r + s_{t-1},
                    log beta + (l_max,B - m_t)/r + log mean_B e^{(l - l_max,B)/r}),
    w_i = exp((l_i - m_t)/r - s_t) / B,

  every exponent bounded, so nothing overflows for huge/tiny losses or temperatures (r = inf gives uniform
  weights). The weights are >= 0 and 0 on padding but sum to mean_B e^{l/r} / u_t rather than 1: about 1 while
  the batch-loss distribution is stationary, exactly 1 at the first batch and for beta = 1 (the per-batch
  softmax), below 1 while losses fall; the sum is at most 1 / beta because u_t contains the current
  batch. A batch with no real (finite) example leaves the state unchanged and gets zero weights.

  Args:
    losses: (B,) per-example losses; state: from `ema_kl_dro_init` or the previous call; r > 0;
    beta: EMA rate in (0, 1]; mask, axis_name: as elsewhere.

  Returns:
    (weights (B,), new state).

  Example:
    >>> state = ema_kl_dro_init()
    >>> w, state = ema_kl_dro_weights(losses, state, r=1.0, beta=0.01)
  """
  _check_r(r)
  b = _checks.concrete_value(beta)
  if b is not None and (np.any(np.isnan(b)) or np.any(b <= 0) or np.any(b > 1)):
    raise ValueError(f"`beta` must lie in (0, 1] (the EMA rate of the normaliser), got {b.tolist()}.")
  losses, valid = _prepare(losses, mask)
  dtype = losses.dtype
  r = _safe_r(r, dtype)
  beta = jnp.clip(jnp.asarray(beta, dtype), jnp.finfo(dtype).tiny, 1.0)
  n = _gsum(valid.astype(dtype), axis_name)
  any_valid = n > 0
  n_safe = jnp.where(any_valid, n, 1.0)
  lmax = jnp.where(any_valid, _gmax(jnp.where(valid, losses, -jnp.inf), axis_name), 0.0)
  z = jnp.where(valid, (losses - lmax) / r, -jnp.inf)
  log_mean = jnp.log(_gsum(jnp.exp(z), axis_name) / n_safe)  # in [-log B, 0]
  first = state.count == 0
  m_prev = state.anchor.astype(dtype)
  s_prev = state.offset.astype(dtype)
  m = jnp.where(first, lmax, jnp.maximum(m_prev, lmax))
  old_term = jnp.log1p(-beta) + (m_prev - m) / r + s_prev  # -inf when beta = 1
  new_term = jnp.log(beta) + (lmax - m) / r + log_mean
  s = jnp.where(first, log_mean, jnp.logaddexp(old_term, new_term))
  m = jnp.where(any_valid, m, m_prev)
  s = jnp.where(any_valid, s, s_prev)
  w = jnp.where(valid, jnp.exp(jnp.where(valid, (losses - m) / r, 0.0) - s) / n_safe, 0.0)
  new_state = EmaKLDROState(anchor=m.astype(state.anchor.dtype), offset=s.astype(state.offset.dtype),
                            count=state.count + any_valid.astype(jnp.int32))
  return w, new_state


# ----------------------------------------------------------------------------------------------------------
# Weighting rules for the training core (jaxfair.training.components.WeightingRule).


class RuleState(NamedTuple):
  """step: how many batches the rule has weighted; inner: the wrapped estimator's state (or ())."""
  step: Array
  inner: Any = ()


def r_warmup_schedule(r: float, r_warm: float = 100.0, warmup_steps: int = 0) -> Schedule:
  """Temperature schedule `step -> r_warm if step < warmup_steps else r` (fms-fsdp: r_warm = 100, K = 2000)."""
  _check_r(r)
  _check_r(r_warm, "r_warm")

  def schedule(step):
    return jnp.where(step < warmup_steps, jnp.asarray(r_warm, jnp.float32), jnp.asarray(r, jnp.float32))

  return schedule


def _value_at(r: ScalarOrSchedule, step: Array) -> Array:
  return r(step) if callable(r) else r


def _rule(weights_fn: Callable[[Array, Array, Array, Any], tuple[Array, Any]], init_inner: Callable[[], Any],
          uniform_warmup_steps: int) -> WeightingRule:
  """Builds a rule with a step counter; uniform weights while step < uniform_warmup_steps."""
  if uniform_warmup_steps < 0:
    raise ValueError(f"`uniform_warmup_steps` must be >= 0, got {uniform_warmup_steps}.")

  def init():
    return RuleState(step=jnp.zeros((), jnp.int32), inner=init_inner())

  def apply(losses, mask, state):
    if mask is None:
      mask = jnp.ones(np.shape(losses), bool)
    w, inner = weights_fn(losses, mask, state.step, state.inner)
    if uniform_warmup_steps:
      w = jnp.where(state.step < uniform_warmup_steps, masked_uniform(mask, w.dtype), w)
    return w, RuleState(step=state.step + 1, inner=inner)

  return WeightingRule(init=init, apply=apply)


def with_uniform_warmup(rule: WeightingRule, warmup_steps: int) -> WeightingRule:
  """Wraps any rule: uniform weights for the first `warmup_steps` batches (GPT-2 reference: K = 1000).

  The wrapped rule still runs during warm-up (so a stateful estimator such as the EMA normaliser warms up too).
  """
  return _rule(lambda l, m, step, inner: rule.apply(l, m, inner), rule.init, warmup_steps)


def loss_based_rule(strategy: str = "linupper", r: ScalarOrSchedule = 1.0, delta: float = 1.0, *,
                    uniform_warmup_steps: int = 0) -> WeightingRule:
  """Sow et al. (2025) weights as a training-step rule; `r` may be a schedule `step -> r`.

  Warm-ups: `uniform_warmup_steps=K` (GPT-2 reference, K = 1000) or `r=r_warmup_schedule(r, 100., K)`
  (fms-fsdp, K = 2000). Stateless apart from the step counter ("fully online").
  """
  strategy_scores(jnp.zeros((1,)), strategy, delta)  # validate now, not at trace time
  if not callable(r):
    _check_r(r)
  return _rule(lambda l, m, step, inner: (loss_based_weights(l, strategy, _value_at(r, step), delta, m), inner),
               lambda: (), uniform_warmup_steps)


def kl_dro_rule(r: ScalarOrSchedule = 1.0, *, uniform_warmup_steps: int = 0) -> WeightingRule:
  """Per-batch KL-DRO weights softmax(l / r) as a training-step rule; `r` may be a schedule."""
  if not callable(r):
    _check_r(r)
  return _rule(lambda l, m, step, inner: (kl_dro_weights(l, _value_at(r, step), m), inner),
               lambda: (), uniform_warmup_steps)


def ema_kl_dro_rule(r: ScalarOrSchedule = 1.0, beta: float = 0.01, *,
                    uniform_warmup_steps: int = 0) -> WeightingRule:
  """EMA-normalised KL-DRO (`ema_kl_dro_weights`) as a training-step rule; the state carries log u_t.

  Note: these weights sum to about 1, not exactly 1 (see `ema_kl_dro_weights`).
  """
  if not callable(r):
    _check_r(r)
  ema_kl_dro_weights(jnp.zeros((1,)), ema_kl_dro_init(), 1.0, beta)  # validates beta eagerly

  def weights(l, m, step, inner):
    return ema_kl_dro_weights(l, inner, _value_at(r, step), beta, m)

  return _rule(weights, ema_kl_dro_init, uniform_warmup_steps)


def cvar_rule(alpha: float = 0.1, *, uniform_warmup_steps: int = 0) -> WeightingRule:
  """CVaR_alpha weights (mean of the worst alpha fraction of the batch) as a training-step rule."""
  _check_alpha(alpha)
  return _rule(lambda l, m, step, inner: (cvar_weights(l, alpha, m), inner), lambda: (), uniform_warmup_steps)

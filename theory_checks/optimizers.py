r"""Scale invariance and norm growth (AdamP/SGDP, Heo et al., ICLR 2021) and EXAdam's step size (Adly, 2024).

On a real scale-invariant network -- a dense layer W followed by batch normalisation (batch statistics, no
epsilon, so the invariance is exact), tanh and a fixed linear head, cross-entropy on a random teacher's labels
-- in float64:

* f(cW) = f(W), grad f(cW) = grad f(W) / c, and W . grad f(W) = 0 per output channel; a GD step of size eta
  from cW equals c times a GD step of size eta / c^2 from W (effective step size eta / ||w||^2).
* GD:        ||w_{t+1}||^2 = ||w_t||^2 + eta^2 ||g_t||^2                                   (exact identity)
* momentum:  ||w_{t+1}||^2 = ||w_t||^2 + eta^2 ||p_t||^2 + 2 eta^2 sum_{k<t} beta^{t-k} ||p_k||^2
* projected momentum (jaxfair's SGDP and AdamP with eps = 0): ||w_{t+1}||^2 = ||w_t||^2 + ||u_t||^2, i.e. the
  cross term vanishes, so the norm grows no faster than a GD step of the same length, and less than under
  plain momentum over the same run.
* the 2-D toy f(w) = ||w/||w|| - w*||^2 (w_0 unit norm, 0.01 rad from -w*, lr 0.01, 500 steps): momentum
  SGD grows ||w|| from 1 to ~2.93 (beta 0.9) and ~27.87 (beta 0.99); SGDP stays near 1.
* EXAdam with a constant gradient: |u_t| / lr = d1 (1 + 1/(1-b1^t)) / (sqrt(d2) + eps) exactly, ~15.95 at
  t=1, 4.35 at 10, 3.81 at 100, 2.74 at 1000, tending to 2; for |g| = 1e-5 the first step is ~10.99 lr.

Run: ``python -m theory_checks.run_all --only optimizers`` (``--quick``: shorter trajectories).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxfair import optim
from theory_checks.report import Check, identity, inequality

_B, _DIN, _DOUT, _CLASSES = 48, 8, 12, 3


def _network():
  """Returns (loss(W), W0): dense -> batch norm (no eps) -> tanh -> fixed head; scale-invariant per column."""
  k = jax.random.split(jax.random.key(0), 5)
  x = jax.random.normal(k[0], (_B, _DIN), jnp.float64)
  teacher = jax.random.normal(k[1], (_DIN, _CLASSES), jnp.float64)
  labels = jnp.argmax(x @ teacher, axis=1)
  head = jax.random.normal(k[2], (_DOUT, _CLASSES), jnp.float64)
  w0 = jax.random.normal(k[3], (_DIN, _DOUT), jnp.float64)

  def loss(w):
    h = x @ w
    mu = jnp.mean(h, axis=0, keepdims=True)
    var = jnp.mean((h - mu) ** 2, axis=0, keepdims=True)
    z = (h - mu) / jnp.sqrt(var)
    logits = jnp.tanh(z) @ head
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

  return loss, w0


def _sq(x):
  return jnp.sum(x * x)


def _scale_invariance_checks(loss, w0) -> list[Check]:
  grad = jax.grad(loss)
  f0, g0 = loss(w0), grad(w0)
  cs = (0.3, 2.0, 7.0)
  f_err = max(abs(float(loss(c * w0) - f0)) / abs(float(f0)) for c in cs)
  g_err = max(float(jnp.max(jnp.abs(grad(c * w0) - g0 / c)) / jnp.max(jnp.abs(g0))) for c in cs)
  col_scale = jnp.linspace(0.5, 3.0, _DOUT)  # per-channel scaling: BN normalises each output channel
  fc_err = abs(float(loss(w0 * col_scale) - f0)) / abs(float(f0))
  cos = jnp.abs(jnp.sum(w0 * g0, 0)) / (jnp.linalg.norm(w0, axis=0) * jnp.linalg.norm(g0, axis=0))
  eta, c = 0.7, 3.0
  step_big = c * w0 - eta * grad(c * w0)
  step_small = c * (w0 - (eta / c**2) * g0)
  eff_err = float(jnp.max(jnp.abs(step_big - step_small)) / jnp.max(jnp.abs(step_big)))
  return [
      identity("scale invariance |f(cW) - f(W)| / |f(W)|, c in {0.3, 2, 7}", f_err, 1e-12),
      identity("per-channel scale invariance |f(W diag(s)) - f(W)| / |f(W)|", fc_err, 1e-12),
      identity("grad f(cW) = grad f(W) / c (max rel. error)", g_err, 1e-12),
      identity("W . grad f(W) = 0 per output channel (max |cos|)", float(jnp.max(cos)), 1e-12),
      identity("effective step eta/||w||^2: GD(cW, eta) = c GD(W, eta/c^2)", eff_err, 1e-12),
  ]


def _norm_growth_checks(loss, w0, steps: int) -> list[Check]:
  grad = jax.grad(loss)
  eta, beta = 0.5, 0.9

  def gd(w, _):
    g = grad(w)
    w_new = w - eta * g
    err = (_sq(w_new) - (_sq(w) + eta**2 * _sq(g))) / _sq(w_new)
    return w_new, err

  w_gd, gd_err = jax.lax.scan(gd, w0, length=steps)

  def momentum(carry, _):
    w, p, cross = carry  # cross = sum_{k<t} beta^{t-k} ||p_k||^2 (before adding the current step)
    g = grad(w)
    p = beta * p + g
    w_new = w - eta * p
    predicted = _sq(w) + eta**2 * _sq(p) + 2 * eta**2 * cross
    err = (_sq(w_new) - predicted) / _sq(w_new)
    cross_next = beta * (cross + _sq(p))
    return (w_new, p, cross_next), err

  (w_mom, _, _), mom_err = jax.lax.scan(momentum, (w0, jnp.zeros_like(w0), jnp.zeros((), w0.dtype)),
                                        length=steps)

  def projected(tx):
    def body(carry, _):
      w, state = carry
      u, state = tx.update(grad(w), state, w)
      w_new = w + u
      err = (_sq(w_new) - (_sq(w) + _sq(u))) / _sq(w_new)
      return (w_new, state), err

    (w_end, _), errs = jax.lax.scan(body, (w0, tx.init(w0)), length=steps)
    return w_end, errs

  w_sgdp, sgdp_err = projected(optim.sgdp(eta, momentum=beta, eps=0.0, channel_axis=-1))
  w_adamp, adamp_err = projected(optim.adamp(1e-2, eps=0.0, channel_axis=-1))
  n0, n_gd, n_mom, n_sgdp = (float(jnp.sqrt(_sq(w))) for w in (w0, w_gd, w_mom, w_sgdp))
  detail = f"{steps} steps, eta={eta}, beta={beta}"
  return [
      identity("GD: ||w+||^2 = ||w||^2 + eta^2 ||g||^2 (max rel. error)", float(jnp.max(jnp.abs(gd_err))),
               1e-12, detail),
      identity("momentum: ||w+||^2 = ||w||^2 + eta^2||p_t||^2 + 2 eta^2 sum beta^(t-k) ||p_k||^2",
               float(jnp.max(jnp.abs(mom_err))), 1e-10, detail),
      identity("SGDP (jaxfair, eps=0): ||w+||^2 = ||w||^2 + eta^2 ||Pi(p_t)||^2, no cross term",
               float(jnp.max(jnp.abs(sgdp_err))), 1e-12, detail),
      identity("AdamP (jaxfair, eps=0): ||w+||^2 = ||w||^2 + ||u_t||^2, u = Pi(Adam step)",
               float(jnp.max(jnp.abs(adamp_err))), 1e-12, f"{steps} steps, lr=1e-2"),
      inequality("norm growth: SGDP ||w_T|| <= momentum SGD ||w_T|| (same eta, beta, start)", n_sgdp, n_mom,
                 f"||w_0||={n0:.4f}, GD {n_gd:.4f}, momentum {n_mom:.4f}, SGDP {n_sgdp:.4f}"),
      inequality("norm growth: GD ||w_T|| <= momentum SGD ||w_T||", n_gd, n_mom, detail),
  ]


def _toy(steps: int = 500, lr: float = 0.01, angle: float = 0.01):
  """||w_T|| after `steps` on f(w) = ||w/||w|| - w*||^2 for momentum 0.9 / 0.99 and SGDP (0.9, 0.99)."""
  target = jnp.array([[1.0, 0.0]], jnp.float64)
  w0 = jnp.array([[math.cos(math.pi - angle), math.sin(math.pi - angle)]], jnp.float64)  # (1, 2): a 2-D leaf

  def f(w):
    return _sq(w / jnp.sqrt(_sq(w)) - target)

  def final_norm(tx):
    def body(carry, _):
      w, state = carry
      u, state = tx.update(jax.grad(f)(w), state, w)
      return (w + u, state), None

    (w, _), _ = jax.lax.scan(body, (w0, tx.init(w0)), length=steps)
    return float(jnp.sqrt(_sq(w))), float(f(w))

  return {"momentum 0.9": final_norm(optax.sgd(lr, momentum=0.9)),
          "momentum 0.99": final_norm(optax.sgd(lr, momentum=0.99)),
          "SGDP 0.9": final_norm(optim.sgdp(lr, momentum=0.9)),
          "SGDP 0.99": final_norm(optim.sgdp(lr, momentum=0.99)),
          "GD": final_norm(optax.sgd(lr))}


def _toy_checks() -> list[Check]:
  r = _toy()
  detail = ", ".join(f"{k}: ||w||={v[0]:.4f} f={v[1]:.2e}" for k, v in r.items())
  return [
      identity("2-D toy: momentum 0.9 grows ||w|| 1 -> 2.93", r["momentum 0.9"][0] - 2.93, 0.01, detail),
      identity("2-D toy: momentum 0.99 grows ||w|| 1 -> 27.87", r["momentum 0.99"][0] - 27.87, 0.05),
      inequality("2-D toy: SGDP (0.9) keeps ||w|| near 1 (<= 1.2)", r["SGDP 0.9"][0], 1.2),
      inequality("2-D toy: SGDP (0.99) keeps ||w|| near 1 (<= 1.5)", r["SGDP 0.99"][0], 1.5),
  ]


def exadam_constant_gradient_ratio(t, b1=0.9, b2=0.999, eps=1e-8, g=1.0):
  """Closed-form |u_t| / lr of EXAdam for a constant gradient g (elementwise), incl. the eps terms."""
  t = np.asarray(t, np.float64)
  m = g * (1 - b1**t)
  v = g * g * (1 - b2**t)
  d1 = 1 + v / (v + eps) * b2**t
  d2 = 1 + m * m / (m * m + eps) * b1**t
  return np.abs((m + g) * d1 / (1 - b1**t) / (np.sqrt(v * d2 / (1 - b2**t)) + eps))


def _exadam_checks(steps: int) -> list[Check]:
  def run(g, n):
    tx = optim.exadam(1.0)
    params = jnp.zeros(1, jnp.float64)

    def body(state, _):
      u, state = tx.update(jnp.full((1,), g, jnp.float64), state, params)
      return state, -u[0] / np.sign(g)

    _, us = jax.lax.scan(body, tx.init(params), length=n)
    return np.asarray(us)

  us = run(1.0, steps)
  ts = np.arange(1, steps + 1)
  formula_err = float(np.max(np.abs(us - exadam_constant_gradient_ratio(ts)) / us))
  spec = {1: 15.95, 10: 4.35, 100: 3.81, 1000: 2.74}
  spec_err = max(abs(float(us[t - 1]) - v) for t, v in spec.items() if t <= steps)
  approx = lambda t: (1 + 0.999**t) * (1 + 1 / (1 - 0.9**t)) / math.sqrt(1 + 0.9**t)  # noqa: E731
  limit = float(exadam_constant_gradient_ratio(1e6))
  small = run(1e-5, 1)[0]
  return [
      identity("EXAdam constant gradient: |u_t|/lr = d1 (1 + 1/(1-b1^t)) / (sqrt(d2) + eps)", formula_err, 1e-12,
               f"t = 1..{steps}"),
      identity("EXAdam |u_t|/lr = 15.95, 4.35, 3.81, 2.74 at t = 1, 10, 100, 1000", spec_err, 0.01,
               ", ".join(f"t={t}: {us[t - 1]:.4f}" for t in spec if t <= steps)),
      identity("EXAdam d1 ~ 1 + b2^t approximation at t = 1..T", float(np.max(np.abs(
          np.array([approx(t) for t in ts]) - us) / us)), 1e-4),
      identity("EXAdam constant-gradient step tends to 2 (t = 1e6)", limit - 2.0, 1e-6, f"{limit:.8f}"),
      identity("EXAdam is not gradient-scale invariant: first step for |g|=1e-5 is 10.99 lr", small - 10.99,
               0.01, f"{small:.4f}"),
  ]


def run(quick: bool = False) -> list[Check]:
  with jax.enable_x64(True), jax.numpy_rank_promotion("allow"):
    loss, w0 = _network()
    checks = _scale_invariance_checks(loss, w0)
    checks += _norm_growth_checks(loss, w0, steps=50 if quick else 200)
    checks += _toy_checks()
    checks += _exadam_checks(steps=1000)
  return checks

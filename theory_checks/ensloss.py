"""EnsLoss theory, checked numerically in float64 (Dai, ICML 2025; Bartlett, Jordan & McAuliffe, 2006).

1. Every random draw satisfies D1 (derivative non-decreasing in the margin), D2 (negative, in particular at
   the margin closest to 0) and the gradient identity dL/do_i = g_i y_i / B, over many random batches,
   lambdas, tails and masks.
2. The population derivative g(z) = -min(1, exp(Phi^-1(1 - F(z)))) / max(z, 1) - shift [derived, the
   large-batch limit for lambda = 0] is non-decreasing, negative at 0, and its tail integral converges: for a
   heavy-tailed (Cauchy) margin law the rank-based base value decays slower than any power of z, so without
   the 1/z rescale the increments of int_0^Z g grow, while with it they shrink. (The constant shift 1e-6 is
   excluded from the integral: it adds a slope of 1e-6, i.e. phi is only bounded below up to that shift.)
3. Calibration: for every CC loss (logistic, hinge, exponential, squared hinge, focal, and EnsLoss
   derivatives averaged over draws) the minimiser f* of the conditional risk eta phi(f) + (1 - eta) phi(-f)
   has the sign of 2 eta - 1 on a grid of eta != 1/2 (phi built by integrating the derivative).
4. Consistency as an empirical rate: on x ~ U[-1, 1]^2 with eta(x) = sigmoid(4 w.x) (Bayes rule sign(w.x)), a
   linear model trained by SGD on the EnsLoss objective of n examples has an excess 0-1 risk (computed exactly from eta on a
   large test sample) that shrinks with n; the fitted log-log slope is reported (no theorem is quoted).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxfair import ensloss as E
from jaxfair import losses as L
from theory_checks.report import Check, identity, inequality


def _draw_checks(quick: bool) -> list[Check]:
  batches = 40 if quick else 400
  b = 96
  settings = [dict(), dict(lam=0.5), dict(lam=-0.5), dict(tail="inverse_log_squared"), dict(lam=-0.9, clip=-3.0)]
  if quick:
    settings = [dict(), dict(lam=-0.9, clip=-3.0, tail="inverse_log_squared")]
  worst_d1, worst_d2, worst_grad, worst_zero = -np.inf, -np.inf, 0.0, -np.inf
  key = jax.random.key(0)
  for si, kw in enumerate(settings):
    keys = jax.random.split(jax.random.fold_in(key, si), batches)

    def one(k, kw=kw):
      k1, k2, k3, k4 = jax.random.split(k, 4)
      logits = jax.random.normal(k1, (b,), jnp.float64) * jnp.exp(jax.random.normal(k2, (), jnp.float64))
      logits = jnp.round(logits * 4) / 4  # ties
      labels = (jax.random.uniform(k3, (b,)) < 0.5).astype(jnp.int32)
      mask = jax.random.uniform(k4, (b,)) < 0.85
      y = 2.0 * labels - 1
      z = y * logits
      g = E.calibrated_derivatives(k, z, mask=mask, **kw)
      grad = jax.grad(lambda o: E.ensloss(k, o, labels, mask=mask, **kw))(logits)
      n = jnp.maximum(mask.sum(), 1)
      err = jnp.max(jnp.abs(grad - jnp.where(mask, g * y / n, 0.0)) / (jnp.abs(g) / n + 1e-300))
      zs = jnp.where(mask, z, jnp.inf)
      order = jnp.lexsort((z, ~mask))
      gs, ms = g[order], mask[order]
      # D1: max over consecutive real pairs of g_k - g_{k+1} (<= 0).
      d1 = jnp.max(jnp.where(ms[1:], gs[:-1] - gs[1:], -jnp.inf))
      d2 = jnp.max(jnp.where(mask, g, -jnp.inf))
      # The derivative at the real margin closest to 0.
      i0 = jnp.argmin(jnp.abs(zs))
      return d1, d2, err, g[i0]

    d1, d2, err, g0 = jax.jit(jax.vmap(one))(keys)
    worst_d1 = max(worst_d1, float(d1.max()))
    worst_d2 = max(worst_d2, float(d2.max()))
    worst_grad = max(worst_grad, float(err.max()))
    worst_zero = max(worst_zero, float(g0.max()))
  n_total = batches * len(settings)
  return [
      inequality("D1: g non-decreasing in z on every draw (max g_k - g_k+1)", worst_d1, 0.0,
                 f"{n_total} batches of 96, ties and padding, {len(settings)} lambda/tail/clip settings"),
      inequality("D2: g <= -shift < 0 on every draw (max g vs -1e-6)", worst_d2, -1e-6, f"{n_total} batches"),
      inequality("D2 at the margin nearest 0 (max g there)", worst_zero, -1e-6),
      identity("gradient identity dL/do = g y / n (max relative error)", worst_grad, 1e-12, f"{n_total} batches"),
  ]


def _population_checks(quick: bool) -> list[Check]:
  out = []
  z = np.linspace(-10.0, 60.0, 20001)
  for name, cdf in (("normal(1, 2)", jax.scipy.stats.norm.cdf(z, 1.0, 2.0)),
                    ("cauchy(1, 1)", jax.scipy.stats.cauchy.cdf(z, 1.0, 1.0))):
    g = np.asarray(E.population_derivative(jnp.asarray(z), cdf))
    out.append(inequality(f"population g non-decreasing, margins ~ {name} (max decrease)",
                          float(np.max(g[:-1] - g[1:])), 0.0))
    i0 = int(np.argmin(np.abs(z)))
    out.append(inequality(f"population g(0) < 0, margins ~ {name}", float(g[i0]), 0.0))
  # Tail integral with Cauchy margins (1 - F(z) ~ 1/(pi z)), in t = log z: int g dz = int g(e^t) e^t dt.
  def increments(tail):
    edges = np.array([1e2, 1e4, 1e8, 1e16, 1e32]) if not quick else np.array([1e2, 1e4, 1e8, 1e16])
    out = []
    for a, b_ in zip(edges[:-1], edges[1:]):
      t = np.linspace(np.log(a), np.log(b_), 20001)
      zz = np.exp(t)
      sf = np.arctan(1.0 / (zz - 1.0)) / np.pi  # Cauchy(1, 1) survival, accurate for large z
      with jax.enable_x64(True):  # the survival function: 1 - F(z) < 1e-16 is lost in 1 - cdf
        g = np.asarray(E.population_derivative(jnp.asarray(zz), margin_sf=jnp.asarray(sf), tail=tail, shift=0.0))
      out.append(abs(np.trapezoid(g * zz, t)))
    return np.array(out)
  inc = increments("inverse")
  raw = increments(None)
  out.append(inequality("tail integral converges with the 1/z rescale: successive increments shrink "
                        "(max ratio)", float(np.max(inc[1:] / inc[:-1])), 1.0,
                        "Cauchy margins; increments over [1e2,1e4],[1e4,1e8],...: "
                        + ", ".join(f"{v:.3g}" for v in inc)))
  out.append(inequality("without the rescale the increments grow (min ratio > 1)", 1.0,
                        float(np.min(raw[1:] / raw[:-1])), ", ".join(f"{v:.3g}" for v in raw)))
  return out


def _risk_minimiser(dphi, eta, f):
  """argmin over the grid f of eta phi(f) + (1-eta) phi(-f), phi from its derivative by integration."""
  d = eta * dphi(f) - (1 - eta) * dphi(-f)  # C'(f)
  c = np.concatenate([[0.0], np.cumsum(0.5 * (d[1:] + d[:-1]) * np.diff(f))])
  return f[np.argmin(c)]


def _calibration_checks(quick: bool) -> list[Check]:
  f = np.linspace(-6.0, 6.0, 4001)
  etas = np.concatenate([np.linspace(0.02, 0.48, 12 if quick else 47), np.linspace(0.52, 0.98, 12 if quick else 47)])

  def derivative(fn):
    grad = jax.jit(jax.vmap(jax.grad(lambda z: fn(z[None], jnp.array([1]))[0])))
    return lambda z: np.asarray(grad(jnp.asarray(z)))

  dphis = {name: derivative(fn) for name, fn in L.BINARY_LOSSES.items()}
  # EnsLoss: each draw's (z_k, g_k) is a non-decreasing step function on the batch; average many draws on a
  # grid (piecewise-linear interpolation, constant beyond the batch's range).
  draws = 50 if quick else 500
  rng = np.random.default_rng(0)
  zb = np.sort(rng.normal(0.5, 2.0, 128))
  gs = np.asarray(jax.vmap(lambda k: E.calibrated_derivatives(k, jnp.asarray(zb)))(
      jax.random.split(jax.random.key(1), draws)))
  grid = np.linspace(-8, 8, 3201)
  g_avg = np.mean([np.interp(grid, zb, gi) for gi in gs], axis=0)
  dphis["ensloss (avg of draws)"] = lambda z: np.interp(z, grid, g_avg)
  g_one = gs[0]
  dphis["ensloss (one draw)"] = lambda z: np.interp(z, zb, g_one)
  checks = []
  for name, dphi in dphis.items():
    worst = np.inf
    for eta in etas:
      fstar = _risk_minimiser(dphi, eta, f)
      worst = min(worst, float(np.sign(2 * eta - 1) * fstar))
    checks.append(inequality(f"calibration {name}: sign(f*) = sign(2 eta - 1) (min sign-aligned f*)", 0.0,
                             worst, f"{len(etas)} values of eta"))
  return checks


def _consistency_checks(quick: bool) -> list[Check]:
  ns = np.array([64, 256, 1024, 4096] if quick else [64, 128, 256, 512, 1024, 2048, 4096, 8192])
  seeds = 8 if quick else 16
  steps = 1500 if quick else 4000
  d, bs, n_max = 2, 64, int(ns.max())
  w_true = np.array([1.0, -0.5]) / np.linalg.norm([1.0, -0.5])
  key = jax.random.key(7)
  xt = np.asarray(jax.random.uniform(jax.random.fold_in(key, 999), (200000, d), jnp.float64, -1, 1))
  eta_t = 1 / (1 + np.exp(-4 * xt @ w_true))
  bayes = np.sign(xt @ w_true)

  def fit(k, n):
    """SGD on the EnsLoss objective of the first n of n_max samples (indices drawn from [0, n)), so every n
    and seed share ONE compiled program."""
    kx, ky, kt = jax.random.split(k, 3)
    x = jax.random.uniform(kx, (n_max, d), jnp.float64, -1, 1)
    eta = jax.nn.sigmoid(4 * x @ jnp.asarray(w_true))
    t = (jax.random.uniform(ky, (n_max,), jnp.float64) < eta).astype(jnp.int32)

    def step(carry, i):
      w, b = carry
      ki = jax.random.fold_in(kt, i)
      idx = jax.random.randint(jax.random.fold_in(ki, 1), (bs,), 0, n)
      lr = 0.5 / jnp.sqrt(1.0 + i / 50.0)
      gw, gb = jax.grad(lambda p: E.ensloss(ki, x[idx] @ p[0] + p[1], t[idx]))((w, b))
      return (w - lr * gw, b - lr * gb), None

    (w, b), _ = jax.lax.scan(step, (jnp.zeros(d, jnp.float64), jnp.zeros((), jnp.float64)), jnp.arange(steps))
    return w, b

  keys = jax.random.split(key, seeds)
  run_n = jax.vmap(jax.vmap(fit, in_axes=(0, None)), in_axes=(None, 0))  # (len(ns), seeds)
  ws, bs_ = jax.jit(run_n)(keys, jnp.asarray(ns))
  ws, bs_ = np.asarray(ws), np.asarray(bs_)
  pred = np.sign(np.einsum("td,nsd->nst", xt, ws) + bs_[..., None])
  results = np.mean(np.abs(2 * eta_t - 1) * (pred != bayes), axis=(1, 2))
  slope = float(np.polyfit(np.log(ns), np.log(results), 1)[0])
  detail = ", ".join(f"n={n}: {r:.2e}" for n, r in zip(ns, results))
  return [
      inequality("consistency: excess 0-1 risk shrinks with n (fitted log-log slope < 0)", slope, 0.0,
                 f"slope {slope:.2f}; {seeds} seeds, {steps} SGD steps; {detail}"),
      inequality("consistency: excess risk at the largest n < at the smallest n / 4", float(results[-1]),
                 float(results[0]) / 4),
  ]


def run(quick: bool = False) -> list[Check]:
  with jax.enable_x64(True):
    return (_draw_checks(quick) + _population_checks(quick) + _calibration_checks(quick)
            + _consistency_checks(quick))


if __name__ == "__main__":
  from theory_checks.report import format_checks  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  print(format_checks("ensloss", run(quick="--quick" in sys.argv)))

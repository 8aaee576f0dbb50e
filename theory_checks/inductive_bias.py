"""Inductive-bias estimation (Boopathy et al., IJCAI 2024): sampling error, DKW coverage, ncx2 moment match.

On a small RBF-GP regression problem the test loss of a posterior sample has an exactly computable
generalized chi-squared law (`gp_loss_distribution`), so every estimator can be compared with the truth:

1. Exact tail = Monte Carlo: P(e <= x) from the contour-integral inversion vs the empirical frequency of
   sampler draws, and vs Imhof's formula.
2. Error of the empirical estimator -log p_hat vs N = 1e2 .. 1e5 hypotheses (repetitions vmapped): the RMSE
   should follow the delta-method prediction sqrt((1 - p) / (p N)) (slope -1/2 in log-log). The paper's ncx2
   estimator is also fitted at each N: its error stops falling at the ncx2 model's own bias, which is printed.
3. DKW band coverage: sup_x |F_N - F| <= sqrt(ln(2/alpha) / (2N)) holds in >= 1 - alpha of R repetitions
   (KS statistic computed exactly from the probability-integral transform of each sample).
4. The fitted ncx2's mean and variance match the sample's within sampling error.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy import interpolate

from jaxfair import inductive_bias as ib
from theory_checks.report import Check, identity, inequality


def _problem(seed: int = 0, n: int = 20, m: int = 30, d: int = 4, k: int = 2):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(d, k))
  x = rng.normal(size=(n + m, d))
  y = np.eye(k)[np.argmax(x @ w + 0.5 * rng.normal(size=(n + m, k)), 1)]
  return x[:n], y[:n], x[n:], y[n:]


@functools.partial(jax.jit, static_argnames=("reps", "n"))
def _ks_stats(u_sorted_all, reps: int, n: int):
  """KS statistic per repetition from sorted PIT values (reps, n)."""
  del reps
  i = jnp.arange(1, n + 1, dtype=u_sorted_all.dtype)[None, :]
  return jnp.max(jnp.maximum(i / n - u_sorted_all, u_sorted_all - (i - 1) / n), axis=1)


def run(quick: bool = False) -> list[Check]:
  checks: list[Check] = []
  xtr, ytr, xte, yte = _problem()
  ls = 2.0
  q = ib.gp_loss_distribution(xtr, ytr, xte, yte, lengthscale=ls)
  sample = lambda key, num: np.asarray(ib.gp_posterior_losses(key, xtr, ytr, xte, yte, num_samples=num,
                                                              lengthscale=ls, chunk_size=min(num, 20_000)))
  key = jax.random.key(0)

  # 1. exact tail vs Monte Carlo and Imhof.
  n_mc = 100_000 if quick else 1_000_000
  draws = sample(jax.random.fold_in(key, 1), n_mc)
  xs = np.quantile(draws, [0.001, 0.01, 0.1, 0.5, 0.9])
  exact = np.exp(q.logcdf(xs))
  emp = np.array([(draws <= x).mean() for x in xs])
  z = np.max(np.abs(emp - exact) / np.sqrt(exact * (1 - exact) / n_mc))
  checks.append(inequality("exact gx2 CDF vs Monte Carlo (max |z|)", z, 4.5, f"N={n_mc}, 5 quantiles"))
  imhof_err = max(abs(ib.imhof_cdf(q, x) - e) for x, e in zip(xs, exact))
  checks.append(identity("exact gx2 CDF vs Imhof (max abs diff)", imhof_err, 1e-7))

  # 2. estimator error vs N.
  p0 = 0.1
  eps = _quantile(q, p0)
  true_nats = -float(q.logcdf(eps))
  ns = [100, 1_000, 10_000] if quick else [100, 1_000, 10_000, 100_000]
  reps = 40 if quick else 100
  rmse, predicted, ncx2_err = [], [], []
  lines = [f"  N        RMSE(-log p_hat)  predicted   |ncx2 - exact| (nats)   [exact I = {true_nats:.4f} nats "
           f"at eps={eps:.5g}, p={p0}]"]
  for j, n in enumerate(ns):
    r = reps if n < 100_000 else max(reps // 5, 10)
    losses = sample(jax.random.fold_in(key, 100 + j), n * r).reshape(r, n)
    counts = np.maximum((losses <= eps).sum(1), 0.5)
    err = -np.log(counts / n) - true_nats
    rmse.append(float(np.sqrt(np.mean(err**2))))
    predicted.append(math.sqrt((1 - p0) / (p0 * n)))
    fitted = ib.inductive_bias(losses[0], eps)
    ncx2_err.append(abs(float(fitted.nats) - true_nats))
    lines.append(f"  {n:<8d} {rmse[-1]:<17.5f} {predicted[-1]:<11.5f} {ncx2_err[-1]:.5f}")
  slope = np.polyfit(np.log(ns), np.log(rmse), 1)[0]
  lines.append(f"  log-log slope of the empirical RMSE: {slope:.3f} (theory -0.5)")
  print("\n".join(lines))
  checks.append(identity("empirical-tail RMSE slope vs N (theory -1/2)", slope + 0.5, 0.15,
                         f"slope={slope:.3f}; RMSE={['%.4f' % v for v in rmse]} at N={ns}"))
  ratio = np.array(rmse) / np.array(predicted)
  checks.append(identity("empirical RMSE / sqrt((1-p)/(pN)) - 1 (worst N)", np.max(np.abs(ratio - 1)), 0.35,
                         f"ratios={np.round(ratio, 3).tolist()}"))
  checks.append(inequality("ncx2 estimate error at largest N (nats; model bias, not sampling)", ncx2_err[-1],
                           0.5, f"errors={np.round(ncx2_err, 4).tolist()} at N={ns}"))

  # 3. DKW band coverage over R vmapped repetitions.
  alpha, n_dkw = 0.05, 500
  r_dkw = 400 if quick else 4000
  losses = sample(jax.random.fold_in(key, 7), n_dkw * r_dkw).reshape(r_dkw, n_dkw)
  grid = np.quantile(losses, np.linspace(0, 1, 257)[1:-1])
  grid = np.concatenate([[losses.min() * 0.999], grid, [losses.max() * 1.001]])
  cdf = interpolate.PchipInterpolator(grid, np.exp(q.logcdf(grid)), extrapolate=True)
  u = np.clip(cdf(np.sort(losses, axis=1)), 0.0, 1.0)
  ks = np.asarray(_ks_stats(jnp.asarray(u), r_dkw, n_dkw))
  band = math.sqrt(math.log(2 / alpha) / (2 * n_dkw))
  coverage = float(np.mean(ks <= band))
  se = math.sqrt(alpha * (1 - alpha) / r_dkw)
  checks.append(inequality("DKW band miss rate <= alpha (+3 s.e.)", 1 - coverage, alpha + 3 * se,
                           f"coverage={coverage:.4f} over R={r_dkw}, N={n_dkw}, band={band:.4f}"))

  # 4. ncx2 fit moment match.
  fit_draws = draws[:20_000]
  fit = ib.fit_scaled_ncx2(fit_draws)
  model = ib.scaled_ncx2(*fit)
  mean_s, var_s = fit_draws.mean(), fit_draws.var()
  se_mean = math.sqrt(var_s / fit_draws.size)
  se_var = math.sqrt(np.mean((fit_draws - mean_s) ** 4) - var_s**2) / math.sqrt(fit_draws.size)
  checks.append(identity("ncx2 fit mean - sample mean (in s.e.)", (model.mean - mean_s) / se_mean, 3.0,
                         f"nu={fit.nu:.4g}, delta={fit.delta:.4g}, s={fit.scale:.4g}"))
  checks.append(identity("ncx2 fit variance - sample variance (in s.e.)", (model.variance - var_s) / se_var, 3.0))
  return checks


def _quantile(q: ib.GeneralizedChiSquared, p: float) -> float:
  """x with P(Q <= x) = p, by bisection on the exact log-CDF."""
  lo, hi = q.offset + 1e-12, q.mean
  while float(q.cdf(lo)) > p:
    lo = q.offset + (lo - q.offset) / 2
  while float(q.cdf(hi)) < p:
    hi *= 2
  for _ in range(60):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if float(q.cdf(mid)) < p else (lo, mid)
  return 0.5 * (lo + hi)

"""Maximum-likelihood fit of a scaled non-central chi-squared, s * chi'^2_nu(delta), location 0.

Boopathy et al. (2024) model sampled test losses with this three-parameter family (the reference code calls
scipy.stats.ncx2.fit(losses, floc=0), a generic Nelder-Mead MLE). jaxfair maximises the same likelihood with
L-BFGS-B over (log nu, log delta, log s) on losses rescaled by their mean, started from the method-of-moments
solution, then polishes with Nelder-Mead if L-BFGS-B reports failure. Moments of s chi'^2_nu(delta): mean s(nu + delta), variance
2 s^2 (nu + 2 delta), third central moment 8 s^3 (nu + 3 delta), which give the closed-form start
s = (k2 - sqrt(k2^2 - k1 k3 / 2)) / (2 k1), nu + delta = k1 / s, nu + 2 delta = k2 / (2 s^2) [derived].

`fit_covariance` returns the asymptotic covariance of the log-parameters (inverse Fisher information from the
outer product of per-sample scores), which `estimator.inductive_bias` propagates to an interval by the delta method.
"""
from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
from scipy import optimize, special, stats

MIN_SAMPLES_FOR_FIT = 20
_MIN_DELTA = 1e-8


class Ncx2Fit(NamedTuple):
  nu: float
  delta: float
  scale: float


def check_losses(losses, name: str = "losses", min_samples: int = 1) -> np.ndarray:
  """Float64 1-D copy of `losses`; clear errors for NaN/Inf, negative values and too few samples."""
  x = np.asarray(losses, dtype=np.float64)
  if x.ndim != 1:
    raise ValueError(f"`{name}` must be a 1-D array of per-hypothesis losses, got shape {x.shape}.")
  if not np.all(np.isfinite(x)):
    bad = np.argwhere(~np.isfinite(x)).ravel()[:5].tolist()
    raise ValueError(f"`{name}` contains NaN or Inf at indices {bad}; drop diverged hypotheses "
                     "(e.g. losses[np.isfinite(losses)]) or lower the learning rate.")
  if np.any(x < 0):
    raise ValueError(f"`{name}` must be >= 0 (squared-error losses), found min {x.min()}.")
  if x.size < min_samples:
    raise ValueError(f"`{name}` has {x.size} samples; at least {min_samples} are needed here. "
                     "Sample more hypotheses.")
  return x


def moment_start(x: np.ndarray) -> Ncx2Fit:
  """Method-of-moments (nu, delta, s) from the first three sample cumulants (central chi2 if infeasible)."""
  k1, k2 = x.mean(), x.var()
  k3 = np.mean((x - k1) ** 3)
  disc = k2 * k2 - 0.5 * k1 * k3
  s = (k2 - math.sqrt(disc)) / (2 * k1) if disc > 0 else -1.0
  if s > 0:
    delta = k2 / (2 * s * s) - k1 / s
    nu = 2 * k1 / s - k2 / (2 * s * s)
    if nu > 0 and delta >= 0:
      return Ncx2Fit(float(nu), float(max(delta, _MIN_DELTA)), float(s))
  s = k2 / (2 * k1)
  return Ncx2Fit(float(k1 / s), 1.0, float(s))


def ncx2_logpdf(x: np.ndarray, nu: float, delta: float, scale: float) -> np.ndarray:
  """log density of s * chi'^2_nu(delta): scipy's where finite, else the Poisson mixture in log space.

  scipy computes the density and then its log, which underflows to -inf for large nu (e.g. nu ~ 2000, common
  for test losses over many test points); the mixture sum_j Pois(j; delta/2) chi2_{nu+2j}(x/s) / s is then
  evaluated with logsumexp over a window of j covering the Poisson mass.
  """
  x = np.asarray(x, np.float64)
  with np.errstate(all="ignore"), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    out = stats.ncx2.logpdf(x, nu, delta, scale=scale)
    bad = ~np.isfinite(out) & (x > 0)
    if np.any(bad):
      lam = 0.5 * delta
      half = 12.0 * math.sqrt(lam) + 20.0
      j = np.arange(max(0, int(lam - half)), int(lam + half) + 1, dtype=np.float64)
      log_pois = j * math.log(lam) - lam - special.gammaln(j + 1) if lam > 0 else np.where(j == 0, 0.0, -np.inf)
      xb = x[bad][:, None] / scale
      terms = log_pois[None, :] + stats.chi2.logpdf(xb, nu + 2.0 * j[None, :])
      out = out.copy()
      out[bad] = special.logsumexp(terms, axis=1) - math.log(scale)
  return out


def _nll(theta: np.ndarray, x: np.ndarray) -> float:
  nu, delta, s = np.exp(theta)
  val = -float(np.mean(ncx2_logpdf(x, nu, delta, s)))
  return val if math.isfinite(val) else 1e300


def fit_scaled_ncx2(losses) -> Ncx2Fit:
  """MLE (nu, delta, scale) of s * chi'^2_nu(delta) with location 0 for positive losses.

  Args:
    losses: (N,) sampled losses, N >= 20, all > 0 and finite.

  Returns:
    `Ncx2Fit(nu, delta, scale)` (a NamedTuple; unpacks as `nu, delta, scale`).

  Example:
    >>> nu, delta, scale = fit_scaled_ncx2(losses)
  """
  x = check_losses(losses, min_samples=MIN_SAMPLES_FOR_FIT)
  if np.any(x <= 0):
    raise ValueError("`losses` must be > 0 for the ncx2 likelihood (a zero loss has zero density when nu > 2).")
  if x.std() <= 1e-12 * x.mean():
    raise ValueError("`losses` are (nearly) constant; a distribution fit is meaningless.")
  mu = x.mean()
  xs = x / mu
  start = moment_start(xs)
  theta0 = np.log([start.nu, max(start.delta, 1e-3), start.scale])
  bounds = [(math.log(1e-3), math.log(1e8)), (math.log(_MIN_DELTA), math.log(1e8)), (math.log(1e-10), math.log(1e3))]
  res = optimize.minimize(_nll, theta0, args=(xs,), method="L-BFGS-B", bounds=bounds,
                          options={"ftol": 1e-13, "gtol": 1e-9, "maxiter": 500})
  theta = res.x
  # With many degrees of freedom nu and delta are nearly unidentified (only the mean and variance are pinned
  # down), so L-BFGS-B often stops on that ridge near its start and the reported delta says little by itself.
  if not res.success:  # polish along the flat nu/delta ridge
    res2 = optimize.minimize(_nll, res.x, args=(xs,), method="Nelder-Mead",
                             options={"xatol": 1e-7, "fatol": 1e-12, "maxiter": 2000})
    theta = res2.x if res2.fun <= res.fun else res.x
  nu, delta, s = np.exp(theta)
  return Ncx2Fit(float(nu), float(delta), float(s * mu))


def _logpdf(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
  return ncx2_logpdf(x, *np.exp(theta))


def fit_covariance(losses, fit: Ncx2Fit) -> np.ndarray:
  """Asymptotic covariance (3, 3) of (log nu, log delta, log s): inverse Fisher information / N.

  The information is the outer product of per-sample scores (central differences of the per-sample
  log-density), which is positive semi-definite by construction and, unlike a finite-difference Hessian,
  not swamped by rounding where the likelihood is flat; unidentified directions (information below 1e-9 of the
  largest: below the finite-difference noise) are dropped by the pseudo-inverse, so the interval covers the
  statistically identified directions only; along the near-null nu/delta/scale ridge typical of large nu the
  deep-tail extrapolation can move more than the interval says (compare with the exact tail where available).
  """
  x = check_losses(losses, min_samples=MIN_SAMPLES_FOR_FIT)
  theta = np.log([fit.nu, max(fit.delta, _MIN_DELTA), fit.scale])
  h = 1e-4
  scores = np.stack([(_logpdf(theta + h * e, x) - _logpdf(theta - h * e, x)) / (2 * h) for e in np.eye(3)], 1)
  scores = scores[np.all(np.isfinite(scores), 1)]
  info = scores.T @ scores / max(len(scores), 1)
  return np.linalg.pinv(info, rcond=1e-9, hermitian=True) / x.size

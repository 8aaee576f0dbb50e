"""Maximum-likelihood fit of a scaled non-central chi-squared, s * chi'^2_nu(delta), location 0.

Boopathy et al. (2024) model sampled test losses with this three-parameter family (the reference code calls
scipy.stats.ncx2.fit(losses, floc=0), a generic Nelder-Mead MLE). jaxfair maximises the same likelihood with
L-BFGS-B over (log nu, log delta, log s) on losses rescaled by their mean, started from the method-of-moments
solution, then polishes with Nelder-Mead if L-BFGS-B reports failure. Moments of s chi'^2_nu(delta): mean s(nu + delta), variance
2 s^2 (nu + 2 delta), third central moment 8 s^3 (nu + 3 delta), which give the closed-form start
s = (k2 - sqrt(k2^2 - k1 k3 / 2)) / (2 k1), nu + delta = k1 / s, nu + 2 delta = k2 / (2 s^2) [derived].

`fit_covariance` returns the asymptotic covariance of the log-parameters (inverse observed Fisher information
by finite differences), which `estimator.inductive_bias` propagates to an interval by the delta method.
"""
from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
from scipy import optimize, stats

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


def _nll(theta: np.ndarray, x: np.ndarray) -> float:
  nu, delta, s = np.exp(theta)
  with np.errstate(all="ignore"), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    lp = stats.ncx2.logpdf(x, nu, delta, scale=s)
  val = -float(np.mean(lp))
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
  if not res.success:  # polish (rare: flat nu/delta ridge)
    res2 = optimize.minimize(_nll, res.x, args=(xs,), method="Nelder-Mead",
                             options={"xatol": 1e-7, "fatol": 1e-12, "maxiter": 2000})
    theta = res2.x if res2.fun <= res.fun else res.x
  nu, delta, s = np.exp(theta)
  return Ncx2Fit(float(nu), float(delta), float(s * mu))


def fit_covariance(losses, fit: Ncx2Fit) -> np.ndarray:
  """Asymptotic covariance (3, 3) of (log nu, log delta, log s): inverse observed information / N."""
  x = check_losses(losses, min_samples=MIN_SAMPLES_FOR_FIT)
  theta = np.log([fit.nu, max(fit.delta, _MIN_DELTA), fit.scale])
  h = 1e-3
  hess = np.zeros((3, 3))
  f0 = _nll(theta, x)
  for i in range(3):
    for j in range(i, 3):
      ei, ej = np.eye(3)[i] * h, np.eye(3)[j] * h
      if i == j:
        val = (_nll(theta + ei, x) - 2 * f0 + _nll(theta - ei, x)) / h**2
      else:
        val = (_nll(theta + ei + ej, x) - _nll(theta + ei - ej, x) - _nll(theta - ei + ej, x)
               + _nll(theta - ei - ej, x)) / (4 * h * h)
      hess[i, j] = hess[j, i] = val
  # The likelihood can be nearly flat along the nu/delta ridge: pseudo-inverse with a floor on curvature.
  evals, evecs = np.linalg.eigh(hess)
  evals = np.maximum(evals, 1e-8 * max(evals.max(), 1e-300))
  return (evecs / evals) @ evecs.T / x.size

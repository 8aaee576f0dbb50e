"""Inductive bias I(eps) = -log P_h(e(h) <= eps), in nats and bits, with an uncertainty.

Boopathy et al. (2024), "Towards Exact Computation of Inductive Bias": the inductive bias a task requires of a
hypothesis distribution p_h (over models that fit the training data) at target test error eps is
I(eps) = -log P_{h ~ p_h}(e(h) <= eps); bits = nats / ln 2.

Methods:
  * "ncx2" (the paper's): fit s * chi'^2_nu(delta) by maximum likelihood and report -log F(eps / s; nu, delta),
    with F computed in log space (`gx2.ncx2_logcdf`; no underflow, no z^2/2-only fallback). The interval is
    the delta-method propagation of the MLE's asymptotic covariance (statistical error only: it does not cover
    the error of the ncx2 model itself, which `exact_inductive_bias` measures for the kernel space).
  * "empirical": p = #{e_i <= eps} / N with a Clopper-Pearson interval (exact binomial); infinite when no
    sample reaches eps (the interval then gives the lower bound -log(1 - (alpha/2)^(1/N))).
  * `exact_inductive_bias(gx2, eps)`: the exact generalized chi-squared tail (kernel space).

The uniform (DKW) band sup_x |F_N(x) - F(x)| <= sqrt(ln(2/alpha) / (2N)) w.p. >= 1 - alpha
(Dvoretzky-Kiefer-Wolfowitz; Massart 1990) is `dkw_band`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy import stats

from jaxfair.inductive_bias import fit as fit_lib
from jaxfair.inductive_bias import gx2 as gx2_lib

LN2 = math.log(2.0)


@dataclasses.dataclass(frozen=True)
class InductiveBias:
  """I(eps) with its interval. Arrays have the shape of `target_error` (floats for a scalar)."""
  nats: Any
  nats_low: Any
  nats_high: Any
  method: str
  target_error: Any
  num_samples: int
  confidence: float
  params: dict = dataclasses.field(default_factory=dict)

  @property
  def bits(self):
    return np.divide(self.nats, LN2)

  @property
  def bits_low(self):
    return np.divide(self.nats_low, LN2)

  @property
  def bits_high(self):
    return np.divide(self.nats_high, LN2)

  @property
  def stderr_nats(self):
    """Half-width of the interval divided by the normal quantile (a standard-error-like number)."""
    z = stats.norm.ppf(0.5 + self.confidence / 2)
    return np.divide(np.subtract(self.nats_high, self.nats_low), 2 * z)

  def as_dict(self) -> dict:
    f = lambda v: np.asarray(v).tolist()
    return {"method": self.method, "target_error": f(self.target_error), "nats": f(self.nats),
            "nats_low": f(self.nats_low), "nats_high": f(self.nats_high), "bits": f(self.bits),
            "bits_low": f(self.bits_low), "bits_high": f(self.bits_high), "num_samples": self.num_samples,
            "confidence": self.confidence, "params": {k: np.asarray(v).tolist() for k, v in self.params.items()}}


def _check_target(target_error) -> np.ndarray:
  eps = np.asarray(target_error, dtype=np.float64)
  if eps.ndim > 1:
    raise ValueError(f"`target_error` must be a scalar or 1-D, got shape {eps.shape}.")
  if not np.all(np.isfinite(eps)) or np.any(eps <= 0):
    raise ValueError(f"`target_error` must be finite and > 0 (a test MSE), got {eps.tolist()}.")
  return eps


def _check_unit_interval(value, name: str) -> None:
  if not 0 < value < 1:
    raise ValueError(f"`{name}` must be in (0, 1), got {value}.")


def _shape(eps: np.ndarray, v):
  v = np.asarray(v, np.float64)
  return float(v) if eps.ndim == 0 else v


def dkw_band(losses, x, alpha: float = 0.05):
  """(F_N(x), lower, upper): the empirical CDF and its DKW band (uniform over x, level 1 - alpha)."""
  _check_unit_interval(alpha, "alpha")
  z = np.sort(fit_lib.check_losses(losses, min_samples=1))
  f = np.searchsorted(z, np.asarray(x, np.float64), side="right") / z.size
  half = math.sqrt(math.log(2.0 / alpha) / (2.0 * z.size))
  return f, np.clip(f - half, 0.0, 1.0), np.clip(f + half, 0.0, 1.0)


def empirical_tail(losses, target_error, confidence: float = 0.95):
  """(p_hat, p_low, p_high): P(e <= eps) estimate and Clopper-Pearson interval."""
  x = fit_lib.check_losses(losses, min_samples=1)
  eps = _check_target(target_error)
  _check_unit_interval(confidence, "confidence")
  n = x.size
  k = np.sum(x[:, None] <= np.atleast_1d(eps)[None, :], axis=0).astype(np.float64)
  a = 1.0 - confidence
  lo = np.where(k > 0, stats.beta.ppf(a / 2, np.maximum(k, 1), n - k + 1), 0.0)
  hi = np.where(k < n, stats.beta.ppf(1 - a / 2, k + 1, np.maximum(n - k, 1)), 1.0)
  p = k / n
  return tuple(_shape(eps, v if eps.ndim else v[0]) for v in (p, lo, hi))


def inductive_bias(losses, target_error, method: str = "ncx2", *, confidence: float = 0.95,
                   fit: fit_lib.Ncx2Fit | None = None) -> InductiveBias:
  """I(eps) = -log P(e <= eps) from sampled hypothesis losses, in nats and bits, with an interval.

  Args:
    losses: (N,) test losses of sampled hypotheses (N >= 20 for "ncx2").
    target_error: eps > 0, scalar or 1-D.
    method: "ncx2" (paper's fit) or "empirical".
    confidence: interval level.
    fit: a precomputed `fit_scaled_ncx2(losses)` to reuse.

  Returns:
    `InductiveBias` with `.nats`, `.bits`, `.nats_low/.nats_high`, `.bits_low/.bits_high`, `.stderr_nats`.

  Example:
    >>> ib = inductive_bias(losses, 0.05)
    >>> print(f"{ib.bits:.1f} bits [{ib.bits_low:.1f}, {ib.bits_high:.1f}]")
  """
  eps = _check_target(target_error)
  _check_unit_interval(confidence, "confidence")
  if method == "empirical":
    x = fit_lib.check_losses(losses, min_samples=1)
    p, lo, hi = empirical_tail(x, eps, confidence)
    with np.errstate(divide="ignore"):
      return InductiveBias(-np.log(p) + 0.0, -np.log(hi) + 0.0, -np.log(lo) + 0.0, "empirical",
                           _shape(eps, eps), x.size, confidence, {"p_hat": p})
  if method != "ncx2":
    raise ValueError(f"`method` must be 'ncx2' or 'empirical' (or use exact_inductive_bias), got {method!r}.")
  x = fit_lib.check_losses(losses, min_samples=fit_lib.MIN_SAMPLES_FOR_FIT)
  fitted = fit if fit is not None else fit_lib.fit_scaled_ncx2(x)
  cov = fit_lib.fit_covariance(x, fitted)
  theta = np.log([fitted.nu, max(fitted.delta, 1e-8), fitted.scale])

  def nats_at(th, e):
    nu, delta, s = np.exp(th)
    return -float(gx2_lib.ncx2_logcdf(e, nu, delta, s))

  z = stats.norm.ppf(0.5 + confidence / 2)
  out, low, high = [], [], []
  for e in np.atleast_1d(eps):
    val = nats_at(theta, e)
    h = 1e-4
    grad = np.array([(nats_at(theta + h * np.eye(3)[i], e) - nats_at(theta - h * np.eye(3)[i], e)) / (2 * h)
                     for i in range(3)])
    sd = math.sqrt(max(grad @ cov @ grad, 0.0))
    out.append(val)
    low.append(max(val - z * sd, 0.0))
    high.append(val + z * sd)
  params = {"nu": fitted.nu, "delta": fitted.delta, "scale": fitted.scale}
  return InductiveBias(_shape(eps, out if eps.ndim else out[0]), _shape(eps, low if eps.ndim else low[0]),
                       _shape(eps, high if eps.ndim else high[0]), "ncx2", _shape(eps, eps), x.size,
                       confidence, params)


def exact_inductive_bias(distribution: gx2_lib.GeneralizedChiSquared, target_error) -> InductiveBias:
  """I(eps) from an exact loss distribution (e.g. `gp_loss_distribution`): no sampling error."""
  eps = _check_target(target_error)
  nats = -distribution.logcdf(eps)
  v = _shape(eps, nats)
  return InductiveBias(v, v, v, "exact", _shape(eps, eps), 0, 1.0,
                       {"mean": distribution.mean, "variance": distribution.variance})

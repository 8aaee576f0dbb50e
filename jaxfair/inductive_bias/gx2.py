"""Exact tails of generalized chi-squared variables, in log space.

A generalized chi-squared variable with positive weights is

    Q = sum_i w_i chi'^2_{k_i}(delta_i) + c,      w_i > 0, k_i > 0, delta_i >= 0,

(independent non-central chi-squared terms). Its cumulant generating function (CGF) is

    K(t) = c t + sum_i [ -k_i/2 log(1 - 2 w_i t) + delta_i w_i t / (1 - 2 w_i t) ],   t < 1 / (2 max w).

The test MSE of a Gaussian-process posterior sample is such a Q (see `kernels.gp_loss_distribution`), and the
scaled non-central chi-squared s * chi'^2_nu(delta) of Boopathy et al. (2024) is the one-term case.

CDF by numerical inversion on a shifted Bromwich line (exact up to quadrature error) [derived]. For a real
s != 0 in the domain of K,

    P(Q <= x) = -1/(2 pi i) int_{s - i inf}^{s + i inf} exp(K(t) - t x) / t dt          (s < 0),
    P(Q >  x) = +1/(2 pi i) int_{s - i inf}^{s + i inf} exp(K(t) - t x) / t dt          (s > 0),

i.e. with t = s + i y and the conjugate symmetry of the integrand,

    P = exp(K(s) - s x) * (1/pi) int_0^inf Re[ exp(K(s + i y) - K(s) - i y x) / (+-(s + i y)) ] dy.

We take s at the saddle point of K(t) - t x - log|t| (K'(s) - x - 1/s = 0), which puts the Chernoff factor
exp(K(s) - s x) outside the integral, so the remaining integral is O(1) with no cancellation however deep the
tail (log P of -1e4 is as accurate as log P of -1). Because the integrand's real part is even in y, the
trapezoidal rule on a uniform grid converges geometrically; its step is chosen from the distance to the nearest
singularity (the pole at t = 0 and the branch points at t = 1/(2 w_i)) so that the aliasing error is below
e^-40 relative. The lower tail is used for x below the mean and the upper tail (then log1p) above it.

Cross-check: Imhof's (1961) formula `imhof_cdf` (absolute accuracy only, so not for deep tails).

References:
  Imhof, "Computing the distribution of quadratic forms in normal variables", Biometrika 1961.
  Abate & Whitt, "Numerical inversion of Laplace transforms of probability distributions", ORSA J. Comput. 1995.
  Boopathy, Yue, Hwang, Iyer, Fiete, "Towards Exact Computation of Inductive Bias", IJCAI 2024.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import integrate, optimize, special, stats

from jaxfair import _checks


@dataclasses.dataclass(frozen=True)
class GeneralizedChiSquared:
  """Q = sum_i weights_i * chi'^2_{dofs_i}(noncentralities_i) + offset, all weights > 0 (float64 NumPy)."""
  weights: np.ndarray
  dofs: np.ndarray
  noncentralities: np.ndarray
  offset: float = 0.0

  def __post_init__(self):
    w = np.atleast_1d(np.asarray(self.weights, np.float64))
    k = np.broadcast_to(np.asarray(self.dofs, np.float64), w.shape).copy()
    d = np.broadcast_to(np.asarray(self.noncentralities, np.float64), w.shape).copy()
    if w.ndim != 1 or w.size == 0:
      raise ValueError(f"`weights` must be a non-empty vector, got shape {w.shape}.")
    if not (np.all(np.isfinite(w)) and np.all(w > 0)):
      raise ValueError("`weights` must be finite and > 0 (drop zero-variance directions into `offset`).")
    if not (np.all(np.isfinite(k)) and np.all(k > 0)):
      raise ValueError("`dofs` must be finite and > 0.")
    if not (np.all(np.isfinite(d)) and np.all(d >= 0)):
      raise ValueError("`noncentralities` must be finite and >= 0.")
    object.__setattr__(self, "weights", w)
    object.__setattr__(self, "dofs", k)
    object.__setattr__(self, "noncentralities", d)
    object.__setattr__(self, "offset", float(self.offset))

  @property
  def mean(self) -> float:
    return float(self.offset + np.sum(self.weights * (self.dofs + self.noncentralities)))

  @property
  def variance(self) -> float:
    return float(np.sum(2.0 * self.weights**2 * (self.dofs + 2.0 * self.noncentralities)))

  def cgf(self, t):
    """K(t) for real or complex t (principal logarithm; continuous for Re t < 1/(2 max w))."""
    t = np.asarray(t)[..., None]
    u = 1.0 - 2.0 * self.weights * t
    return self.offset * t[..., 0] + np.sum(-0.5 * self.dofs * np.log(u)
                                            + self.noncentralities * self.weights * t / u, axis=-1)

  def cgf_derivatives(self, t: float) -> tuple[float, float]:
    """(K'(t), K''(t)) at real t."""
    w, k, d = self.weights, self.dofs, self.noncentralities
    u = 1.0 - 2.0 * w * t
    k1 = self.offset + np.sum(k * w / u + d * w / u**2)
    k2 = np.sum(2.0 * k * w**2 / u**2 + 4.0 * d * w**2 / u**3)
    return float(k1), float(k2)

  def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
    """Monte Carlo draws (NumPy), for checks."""
    out = np.full(size, self.offset)
    for w, k, d in zip(self.weights, self.dofs, self.noncentralities):
      out += w * (rng.noncentral_chisquare(k, d, size) if d > 0 else rng.chisquare(k, size))
    return out

  def logcdf(self, x) -> np.ndarray:
    """log P(Q <= x), exact up to quadrature error (relative ~1e-10 when the total degrees of freedom are >= 1;
    below that the integrand decays slowly and the node cap leaves ~1e-6), for scalar or array x."""
    return np.vectorize(lambda v: _log_tail(self, float(v))[0], otypes=[np.float64])(x)

  def logsf(self, x) -> np.ndarray:
    """log P(Q > x)."""
    return np.vectorize(lambda v: _log_tail(self, float(v))[1], otypes=[np.float64])(x)

  def cdf(self, x) -> np.ndarray:
    return np.exp(self.logcdf(x))


def _check_ncx2_params(nu, delta, scale) -> None:
  for name, v, allow_zero in (("nu", nu, False), ("delta", delta, True), ("scale", scale, False)):
    _checks.check_positive(v, name, allow_zero=allow_zero)
    if not np.all(np.isfinite(v)):
      raise ValueError(f"`{name}` must be finite, got {v}.")


def scaled_ncx2(nu: float, delta: float, scale: float) -> GeneralizedChiSquared:
  """The one-term case s * chi'^2_nu(delta)."""
  _check_ncx2_params(nu, delta, scale)
  return GeneralizedChiSquared(np.array([scale]), np.array([nu]), np.array([delta]))


def _log_gammainc_lower(a: np.ndarray, z: float) -> np.ndarray:
  """log P(a, z) (regularised lower incomplete gamma) without underflow.

  Uses scipy's gammainc where it is >= 1e-280 (relatively accurate there) and otherwise the series
  log P = a log z - z - lgamma(a + 1) + log sum_n z^n / ((a + 1) ... (a + n)), which converges fast in the
  region where P underflows (z << a).
  """
  a = np.asarray(a, np.float64)
  with np.errstate(divide="ignore", under="ignore"):
    direct = np.log(special.gammainc(a, z))
  small = ~(direct > math.log(1e-280))
  if np.any(small):
    aa = a[small]
    term = np.ones_like(aa)
    total = np.ones_like(aa)
    for n in range(1, 100_000):
      term = term * z / (aa + n)
      total += term
      if np.all(term < 1e-17 * total):
        break
    direct = direct.copy()
    direct[small] = aa * math.log(z) - z - special.gammaln(aa + 1) + np.log(total)
  return direct


def ncx2_logcdf(x, nu: float, delta: float, scale: float = 1.0) -> np.ndarray:
  """log P(scale * chi'^2_nu(delta) <= x) without underflow.

  Where scipy's log-CDF is above -600 it is used directly (boost's series, relatively accurate); deeper, the
  Poisson mixture F = sum_j Pois(j; delta/2) P(nu/2 + j, x/2) is summed in log space with `_log_gammainc_lower`
  (never the normal approximation's z^2/2 alone). `scaled_ncx2(nu, delta, scale).logcdf` computes the same
  quantity by contour integration, an independent check.
  """
  _check_ncx2_params(nu, delta, scale)
  xs = np.asarray(x, np.float64) / scale
  out = np.empty(xs.shape)
  with np.errstate(all="ignore"):
    direct = stats.ncx2.logcdf(xs, nu, delta) if delta > 0 else stats.chi2.logcdf(xs, nu)
  for idx in np.ndindex(xs.shape):
    v, d = float(xs[idx]), float(np.asarray(direct)[idx])
    if v <= 0:
      out[idx] = -math.inf
    elif math.isfinite(d) and d > -600.0:
      out[idx] = d
    else:
      lam = 0.5 * delta
      j = np.arange(0, int(lam + 12.0 * math.sqrt(lam) + 40.0))
      log_pois = j * math.log(lam) - lam - special.gammaln(j + 1) if lam > 0 else np.where(j == 0, 0.0, -np.inf)
      out[idx] = special.logsumexp(log_pois + _log_gammainc_lower(0.5 * nu + j, 0.5 * v))
  return out if out.ndim else float(out)


_ALIAS_NATS = 40.0  # aliasing error of the trapezoid rule <= e^-40 relative
_MAX_NODES = 1 << 21


def _saddle(q: GeneralizedChiSquared, x: float, lower: bool) -> float:
  """Root s of K'(s) - x - 1/s on (-inf, 0) (lower) or (0, 1/(2 max w)) (upper)."""
  h = lambda s: q.cgf_derivatives(s)[0] - x - 1.0 / s
  if lower:
    # h increases from offset - x < 0 (s -> -inf) to +inf (s -> 0-); bracket in log(-s).
    hi = -1e-300
    lo = -1.0 / max(x - q.offset, 1e-300)
    while h(lo) >= 0:
      lo *= 4.0
      if lo < -1e300:
        raise FloatingPointError("no lower-tail saddle point found")
    hi = lo
    while h(hi) < 0:
      hi /= 4.0
    return optimize.brentq(h, lo, hi, xtol=1e-300, rtol=1e-14, maxiter=500)
  # h increases from -inf (s -> 0+) to +inf (s -> t_max-).
  t_max = 0.5 / np.max(q.weights)
  s_lo = t_max * 1e-6
  while h(s_lo) >= 0:
    s_lo *= 1e-3
    if s_lo < 1e-300:
      raise FloatingPointError("no upper-tail saddle point found")
  return optimize.brentq(h, s_lo, _upper_root(h, t_max), xtol=1e-300, rtol=1e-14, maxiter=500)


def _upper_root(h, t_max: float) -> float:
  """A point s_hi < t_max with h(s_hi) > 0."""
  gap = 0.5
  while True:
    s_hi = t_max * (1.0 - gap)
    if h(s_hi) > 0:
      return s_hi
    gap *= 1e-2
    if gap < 1e-15:
      raise FloatingPointError("no upper-tail saddle point found")


def _contour_log_tail(q: GeneralizedChiSquared, x: float, lower: bool) -> float:
  """log P(Q <= x) (lower) or log P(Q > x) (upper) by the shifted-Bromwich trapezoid rule."""
  s = _saddle(q, x, lower)
  k0 = float(q.cgf(s))
  chernoff = k0 - s * x  # log of the factor outside the integral (a Chernoff-type bound when the integral ~1)
  _, k2 = q.cgf_derivatives(s)
  width = 1.0 / math.sqrt(k2 + 1.0 / s**2)
  # Nearest singularity of the integrand in the y-plane: the pole at t=0 and the branch points.
  dist = abs(s) if lower else min(s, 0.5 / np.max(q.weights) - s)
  step = min(2.0 * math.pi * dist / (max(-chernoff, 0.0) + _ALIAS_NATS), width / 4.0)
  sign = -1.0 if lower else 1.0

  def integrand(y):
    t = s + 1j * y
    return np.real(np.exp(q.cgf(t) - k0 - 1j * y * x) / (sign * t))

  total = 0.5 * integrand(np.zeros(1))[0]
  start, block = 1, 4096
  w, k, d = q.weights, q.dofs, q.noncentralities
  u0 = 1.0 - 2.0 * w * s
  while True:
    ys = step * np.arange(start, start + block, dtype=np.float64)
    vals = integrand(ys)
    total += np.sum(vals)
    # Monotone bound on |integrand| beyond the block: |M(s+iy)/M(s)| / |s + iy|.
    y_end = ys[-1]
    r = (2.0 * w * y_end / u0) ** 2
    log_bound = np.sum(-0.25 * k * np.log1p(r) + 0.5 * d * (u0 / (u0**2 + (2.0 * w * y_end)**2) - 1.0 / u0))
    bound = math.exp(log_bound) / math.hypot(s, y_end)
    start += block
    if bound * y_end < 1e-17 * abs(total) or start > _MAX_NODES:
      break
    block *= 2
  integral = total * step / math.pi
  if not integral > 0:
    raise FloatingPointError(f"tail integral not positive ({integral}) at x={x}")
  return chernoff + math.log(integral)


def _log_tail(q: GeneralizedChiSquared, x: float) -> tuple[float, float]:
  """(log P(Q <= x), log P(Q > x))."""
  if not math.isfinite(x):
    if x > 0:
      return 0.0, -math.inf
    return -math.inf, 0.0
  if x <= q.offset:
    return -math.inf, 0.0
  if x < q.mean:
    lc = _contour_log_tail(q, x, lower=True)
    return lc, math.log1p(-math.exp(lc))
  ls = _contour_log_tail(q, x, lower=False)
  return math.log1p(-math.exp(ls)), ls


def imhof_cdf(q: GeneralizedChiSquared, x: float) -> float:
  """P(Q <= x) by Imhof's (1961) formula (absolute accuracy ~1e-10: a cross-check, not for deep tails).

  P(Q > x) = 1/2 + (1/pi) int_0^inf sin(theta(u)) / (u rho(u)) du with
  theta(u) = 1/2 sum_i [k_i arctan(w_i u) + delta_i w_i u / (1 + w_i^2 u^2)] - (x - c) u / 2 and
  rho(u) = prod_i (1 + w_i^2 u^2)^(k_i/4) exp(1/2 sum_i delta_i w_i^2 u^2 / (1 + w_i^2 u^2)).
  """
  w, k, d = q.weights, q.dofs, q.noncentralities
  xc = x - q.offset

  def f(u):
    wu = w * u
    theta = 0.5 * np.sum(k * np.arctan(wu) + d * wu / (1 + wu**2)) - 0.5 * xc * u
    log_rho = np.sum(0.25 * k * np.log1p(wu**2) + 0.5 * d * wu**2 / (1 + wu**2))
    return math.sin(theta) * math.exp(-log_rho) / u

  val, _ = integrate.quad(f, 0.0, np.inf, limit=1000, epsabs=1e-12, epsrel=1e-10)
  return 0.5 - val / math.pi

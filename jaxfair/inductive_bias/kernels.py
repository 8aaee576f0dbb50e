"""Kernel (Gaussian-process) hypothesis space: posterior samples and the exact test-loss distribution.

Hypotheses linear in their parameters with a Gaussian prior (the GP / infinite-width limit) that fit the
training data exactly have test predictions distributed as the noise-free GP posterior, independently per
output j = 1..k (Rasmussen & Williams 2006, eq. 2.19):

    f_j(X*) ~ N(mu_j, Sigma),   mu = K*X K_XX^-1 Y,   Sigma = K** - K*X K_XX^-1 KX*,

with the RBF kernel k(x, x') = exp(-||x - x'||^2 / (2 l^2)). The loss of one hypothesis is the test MSE
e = (1/(m k)) sum_{i, j} (f_j(x*_i) - y_ij)^2. jaxfair solves with a Cholesky factor of K_XX + jitter I and
draws from N(mu_j, Sigma + jitter I) through a Cholesky factor of that matrix (the reference code instead runs
Adam for the linear solves and takes scipy's sqrtm).

With Sigma + jitter I = U Lambda U^T and b_j = U^T (mu_j - y_j), the same loss is exactly the generalized
chi-squared e = sum_i (lambda_i/(m k)) chi'^2_k(sum_j b_ij^2 / lambda_i) [derived; Boopathy et al. 2024 fit
it with a scaled non-central chi-squared instead]; `gp_loss_distribution` returns it for the exact tail.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxfair import _checks
from jaxfair.inductive_bias import gx2 as gx2_lib

Array = jax.Array


def rbf_kernel(a: Array, b: Array, lengthscale: float | Array = 1.0) -> Array:
  """k(a_i, b_j) = exp(-||a_i - b_j||^2 / (2 lengthscale^2)); a (n, d), b (m, d) -> (n, m)."""
  sq = (jnp.sum(a * a, -1)[:, None] + jnp.sum(b * b, -1)[None, :] - 2.0 * a @ b.T)
  return jnp.exp(-jnp.maximum(sq, 0.0) / (2.0 * jnp.square(lengthscale)))


def median_lengthscale(x: np.ndarray, max_points: int = 1000) -> float:
  """The median pairwise distance of (up to `max_points` of) the rows of x: a common RBF lengthscale."""
  x = np.asarray(x, np.float64)[:max_points]
  d2 = np.sum(x * x, 1)[:, None] + np.sum(x * x, 1)[None, :] - 2 * x @ x.T
  iu = np.triu_indices(len(x), 1)
  return float(np.sqrt(np.median(np.maximum(d2[iu], 0.0))))


def _validate(x_train, y_train, x_test, y_test, *, need_y_test: bool = True):
  if y_test is None and need_y_test:
    raise ValueError("`y_test` is required: pass the (m, k) test targets.")
  _checks.check_ndim(x_train, 2, "x_train")
  _checks.check_ndim(x_test, 2, "x_test")
  _checks.check_ndim(y_train, 2, "y_train")
  _checks.check_same_leading(x_train, y_train, "x_train", "y_train")
  if y_test is not None:
    _checks.check_ndim(y_test, 2, "y_test")
    _checks.check_same_leading(x_test, y_test, "x_test", "y_test")
    if np.shape(y_test)[1] != np.shape(y_train)[1]:
      raise ValueError(f"`y_test` has {np.shape(y_test)[1]} outputs but `y_train` has {np.shape(y_train)[1]}; "
                       "use the same (one-hot) target encoding.")
  if np.shape(x_train)[1] != np.shape(x_test)[1]:
    raise ValueError(f"`x_train` and `x_test` have different feature sizes ({np.shape(x_train)[1]} vs "
                     f"{np.shape(x_test)[1]}).")
  for name, v in (("x_train", x_train), ("y_train", y_train), ("x_test", x_test), ("y_test", y_test)):
    if v is not None:
      _checks.check_finite(v, name)


def _check_kernel_params(lengthscale, jitter):
  _checks.check_positive(lengthscale, "lengthscale")
  _checks.check_positive(jitter, "jitter")


@functools.partial(jax.jit, static_argnames=())
def gp_posterior(x_train: Array, y_train: Array, x_test: Array, lengthscale: float | Array = 1.0,
                 jitter: float | Array = 1e-6) -> tuple[Array, Array]:
  """Noise-free GP posterior (mean (m, k), covariance (m, m)) with a Cholesky solve of K_XX + jitter I."""
  kxx = rbf_kernel(x_train, x_train, lengthscale)
  kxs = rbf_kernel(x_train, x_test, lengthscale)
  kss = rbf_kernel(x_test, x_test, lengthscale)
  chol = jnp.linalg.cholesky(kxx + jitter * jnp.eye(kxx.shape[0], dtype=kxx.dtype))
  alpha = jax.scipy.linalg.cho_solve((chol, True), y_train)
  v = jax.scipy.linalg.solve_triangular(chol, kxs, lower=True)
  mean = kxs.T @ alpha
  cov = kss - v.T @ v
  return mean, 0.5 * (cov + cov.T)


def default_chunk(bytes_per_item: int, max_chunk_bytes: int, total: int) -> int:
  """Largest chunk of items whose working set fits `max_chunk_bytes` (at least 1, at most `total`)."""
  return int(max(1, min(total, max_chunk_bytes // max(bytes_per_item, 1))))


@functools.partial(jax.jit, static_argnames=("num_samples", "chunk_size"))
def _sample_losses_cholesky(key, resid, chol, num_samples: int, chunk_size: int):
  """Loss of f = mu + L z per sample; one (m, m) x (m, chunk * k) GEMM per chunk."""
  m, k = resid.shape
  num_chunks = -(-num_samples // chunk_size)

  def chunk(key):
    z = jax.random.normal(key, (m, chunk_size * k), resid.dtype)
    f = (chol @ z).reshape(m, chunk_size, k) + resid[:, None, :]
    return jnp.mean(jnp.square(f), axis=(0, 2))

  losses = jax.lax.map(chunk, jax.random.split(key, num_chunks))
  return losses.reshape(-1)[:num_samples]


@functools.partial(jax.jit, static_argnames=("num_samples", "chunk_size"))
def _sample_losses_eigh(key, rotated_resid, sqrt_lam, num_samples: int, chunk_size: int):
  """Same distribution in the eigenbasis: e = (1/(m k)) sum_ij (sqrt(lambda_i) z_ij + b_ij)^2; O(m k)/sample."""
  m, k = rotated_resid.shape
  num_chunks = -(-num_samples // chunk_size)

  def chunk(key):
    z = jax.random.normal(key, (chunk_size, m, k), rotated_resid.dtype)
    return jnp.mean(jnp.square(sqrt_lam[None, :, None] * z + rotated_resid[None]), axis=(1, 2))

  losses = jax.lax.map(chunk, jax.random.split(key, num_chunks))
  return losses.reshape(-1)[:num_samples]


def gp_posterior_losses(key: Array, x_train: Array, y_train: Array, x_test: Array, y_test: Array, *,
                        num_samples: int, lengthscale: float = 1.0, jitter: float = 1e-6,
                        method: str = "cholesky", chunk_size: int | None = None,
                        max_chunk_bytes: int = 1 << 27) -> Array:
  """Test MSEs of `num_samples` hypotheses drawn from the noise-free RBF-GP posterior.

  All samples come from one compiled program: `lax.map` over chunks of samples, each chunk one vectorised
  draw, so the working set (chunk x m x k test predictions) stays below `max_chunk_bytes` whatever the
  test-set size.

  Args:
    key: a typed PRNG key (`jax.random.key`).
    x_train, y_train: (n, d) inputs and (n, k) targets (one-hot for classification).
    x_test, y_test: (m, d) and (m, k).
    num_samples: number of posterior hypotheses.
    lengthscale: RBF lengthscale l in exp(-||x - x'||^2 / (2 l^2)).
    jitter: added to the diagonals of K_XX and of the posterior covariance before their factorisations
      (raised 10x up to 4 times if the Cholesky factor is not finite). The posterior and its factor are
      computed in float64 (one O(n^3 + m^3) step); sampling runs in the dtype of `x_train`.
    method: "cholesky" draws f = mu + L z with L L^T = Sigma + jitter I (O(m^2 k) per sample, one GEMM per
      chunk); "eigh" draws the same distribution in the eigenbasis of Sigma + jitter I (one O(m^3)
      eigendecomposition, then O(m k) per sample: the choice for large test sets).
    chunk_size: samples per vectorised chunk (default: from `max_chunk_bytes`).

  Returns:
    (num_samples,) test MSEs, mean over test points and outputs.

  Example:
    >>> losses = gp_posterior_losses(jax.random.key(0), xtr, ytr, xte, yte, num_samples=10_000)
  """
  _validate(x_train, y_train, x_test, y_test)
  if int(num_samples) < 1:
    raise ValueError(f"`num_samples` must be >= 1, got {num_samples}.")
  if method not in ("cholesky", "eigh"):
    raise ValueError(f"`method` must be 'cholesky' or 'eigh', got {method!r}.")
  _check_kernel_params(lengthscale, jitter)
  dtype = _sample_dtype(x_train)
  if chunk_size is None:
    m, k = np.shape(y_test)
    chunk_size = default_chunk(3 * m * k * jnp.dtype(dtype).itemsize, max_chunk_bytes, int(num_samples))
  mean, cov = _posterior_f64(x_train, y_train, x_test, lengthscale, jitter)
  resid = mean - np.asarray(y_test, np.float64)
  cast = lambda a: jnp.asarray(a, dtype)
  if method == "eigh":
    lam, u = np.linalg.eigh(cov + float(jitter) * np.eye(len(cov)))
    rotated, sqrt_lam = u.T @ resid, np.sqrt(np.maximum(lam, 0.0))
    return _sample_losses_eigh(key, cast(rotated), cast(sqrt_lam), int(num_samples), int(chunk_size))
  chol = _cholesky_with_jitter(cov, jitter)
  return _sample_losses_cholesky(key, cast(resid), cast(chol), int(num_samples), int(chunk_size))


def _sample_dtype(x_train) -> jnp.dtype:
  """Samples are drawn in the dtype of `x_train` (float32 for integer inputs)."""
  dtype = jnp.asarray(x_train).dtype
  return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.dtype(jnp.float32)


def _posterior_f64(x_train, y_train, x_test, lengthscale, jitter) -> tuple[np.ndarray, np.ndarray]:
  """The posterior mean and covariance in float64 (K_XX + jitter I has condition number up to ~1/jitter, which
  float32 cannot factorise); the per-sample work then runs in the input dtype. Host-side: the data and kernel
  parameters must be concrete (inside jit or vmap, only the key may be traced)."""
  try:
    with jax.ensure_compile_time_eval(), jax.enable_x64(True):
      f64 = lambda a: jnp.asarray(np.asarray(a, np.float64))
      mean, cov = gp_posterior(f64(x_train), f64(y_train), f64(x_test), float(lengthscale), float(jitter))
      mean, cov = np.asarray(mean), np.asarray(cov)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError) as e:
    raise ValueError("The GP posterior is factorised once on the host in float64: pass concrete x, y, "
                     "`lengthscale` and `jitter` (under jit or vmap only the key may be traced).") from e
  if not np.all(np.isfinite(mean)):
    raise FloatingPointError(f"Cholesky of K_XX + jitter I failed (jitter={jitter}): pass a larger `jitter`.")
  return mean, cov


def _cholesky_with_jitter(cov: np.ndarray, jitter: float) -> np.ndarray:
  """Lower Cholesky factor of cov + j I in float64, with j = jitter raised 10x up to 4 times until it exists."""
  j = float(jitter)
  for _ in range(5):
    try:
      return np.linalg.cholesky(cov + j * np.eye(len(cov)))
    except np.linalg.LinAlgError:
      j *= 10.0
  raise FloatingPointError(f"posterior covariance not positive definite even with jitter={j / 10}; "
                           "increase `jitter` or use method='eigh'.")



def gp_posterior_samples(key: Array, x_train: Array, y_train: Array, x_test: Array, *, num_samples: int,
                         lengthscale: float = 1.0, jitter: float = 1e-6) -> Array:
  """(num_samples, m, k) posterior function values f = mu + L z (the predictions behind `gp_posterior_losses`:
  the posterior and its factor in float64 with the same jitter rule, the samples in the dtype of `x_train`)."""
  _validate(x_train, y_train, x_test, None, need_y_test=False)
  _check_kernel_params(lengthscale, jitter)
  dtype = _sample_dtype(x_train)
  mean, cov = _posterior_f64(x_train, y_train, x_test, lengthscale, jitter)
  mean, chol = jnp.asarray(mean, dtype), jnp.asarray(_cholesky_with_jitter(cov, jitter), dtype)
  z = jax.random.normal(key, (num_samples,) + mean.shape, dtype)
  return mean[None] + jnp.einsum("ij,sjk->sik", chol, z)


def gp_loss_distribution(x_train, y_train, x_test, y_test, *, lengthscale: float = 1.0,
                         jitter: float = 1e-6) -> gx2_lib.GeneralizedChiSquared:
  """The exact distribution of `gp_posterior_losses` (same kernel and jitter), computed in float64.

  Returns the generalized chi-squared sum_i (lambda_i/(m k)) chi'^2_k(||b_i||^2 / lambda_i) where lambda_i are
  the eigenvalues of Sigma + jitter I and b_i the rotated residuals of the posterior mean.
  """
  _validate(x_train, y_train, x_test, y_test)
  _check_kernel_params(lengthscale, jitter)
  with jax.enable_x64(True):
    f64 = lambda a: jnp.asarray(np.asarray(a, np.float64))
    mean, cov = gp_posterior(f64(x_train), f64(y_train), f64(x_test), float(lengthscale), float(jitter))
    mean, cov = np.asarray(mean), np.asarray(cov)
  m, k = mean.shape
  lam, u = np.linalg.eigh(cov + float(jitter) * np.eye(m))
  lam = np.maximum(lam, float(jitter) * 1e-3)
  b = u.T @ (mean - np.asarray(y_test, np.float64))
  return gx2_lib.GeneralizedChiSquared(lam / (m * k), np.full(m, float(k)), np.sum(b * b, 1) / lam)

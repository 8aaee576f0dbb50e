"""Random-feature hypothesis space (beyond the paper): random Fourier features with an interpolating readout.

A hypothesis draws D random Fourier features phi(x) = sqrt(2/D) cos(x Omega + b), Omega_ij ~ N(0, 1/l^2),
b ~ U(0, 2 pi) (Rahimi & Recht 2007; phi(x).phi(x') -> exp(-||x - x'||^2/(2 l^2)) as D -> inf), and a readout
W ~ N(0, I) (D, k) conditioned on fitting the training data, by Matheron's rule

    W_post = W + Phi^T (Phi Phi^T + jitter I)^-1 (Y - Phi W),

so f = phi(x) W_post interpolates (up to jitter). Its test MSE is one sample. As D -> inf the distribution tends
to that of the RBF-GP posterior (`gp_posterior_losses`); at finite D it is a different, finite-dimensional
hypothesis space whose feature randomness adds spread.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxfair.inductive_bias.kernels import _check_kernel_params, _validate, default_chunk

Array = jax.Array


def _one_hypothesis(key, x_train, y_train, x_test, y_test, lengthscale, jitter, num_features):
  d, k = x_train.shape[1], y_train.shape[1]
  k_omega, k_b, k_w = jax.random.split(key, 3)
  omega = jax.random.normal(k_omega, (d, num_features), x_train.dtype) / lengthscale
  b = jax.random.uniform(k_b, (num_features,), x_train.dtype, 0.0, 2.0 * jnp.pi)
  feats = lambda x: jnp.sqrt(2.0 / num_features) * jnp.cos(x @ omega + b[None, :])
  phi, phi_test = feats(x_train), feats(x_test)
  w = jax.random.normal(k_w, (num_features, k), x_train.dtype)
  gram = phi @ phi.T + jitter * jnp.eye(phi.shape[0], dtype=phi.dtype)
  chol = jnp.linalg.cholesky(gram)
  corr = jax.scipy.linalg.cho_solve((chol, True), y_train - phi @ w)
  w_post = w + phi.T @ corr
  return jnp.mean(jnp.square(phi_test @ w_post - y_test))


@functools.partial(jax.jit, static_argnames=("num_hypotheses", "num_features", "chunk_size"))
def _many(key, x_train, y_train, x_test, y_test, lengthscale, jitter, *, num_hypotheses, num_features,
          chunk_size):
  fn = functools.partial(_one_hypothesis, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                         lengthscale=lengthscale, jitter=jitter, num_features=num_features)
  return jax.lax.map(fn, jax.random.split(key, num_hypotheses), batch_size=chunk_size)


def random_feature_losses(key: Array, x_train: Array, y_train: Array, x_test: Array, y_test: Array, *,
                          num_hypotheses: int, num_features: int = 1024, lengthscale: float = 1.0,
                          jitter: float = 1e-6, chunk_size: int | None = None,
                          max_chunk_bytes: int = 1 << 28) -> Array:
  """Test MSEs (num_hypotheses,) of interpolating random-Fourier-feature models (see module docstring)."""
  _validate(x_train, y_train, x_test, y_test)
  for name, v in (("num_hypotheses", num_hypotheses), ("num_features", num_features)):
    if int(v) < 1:
      raise ValueError(f"`{name}` must be >= 1, got {v}.")
  _check_kernel_params(lengthscale, jitter)
  x_train = jnp.asarray(x_train)
  dtype = x_train.dtype if jnp.issubdtype(x_train.dtype, jnp.floating) else jnp.float32
  n, m = x_train.shape[0], x_test.shape[0]
  if chunk_size is None:
    per = jnp.dtype(dtype).itemsize * (2 * (n + m) * num_features + 2 * n * n + x_train.shape[1] * num_features)
    chunk_size = default_chunk(per, max_chunk_bytes, int(num_hypotheses))
  cast = lambda a: jnp.asarray(a, dtype)
  return _many(key, cast(x_train), cast(y_train), cast(x_test), cast(y_test), lengthscale, jitter,
               num_hypotheses=int(num_hypotheses), num_features=int(num_features), chunk_size=int(chunk_size))

"""NN and random-feature hypothesis samplers: vmapped training equals per-key training; nets fit the data."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfair import inductive_bias as ib
from jaxfair.training import make_sweep_mesh


def _task(n=32, m=40, d=4, k=2, seed=0):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(d, k))
  x = rng.normal(size=(n + m, d)).astype(np.float32)
  y = np.eye(k, dtype=np.float32)[np.argmax(x @ w, 1)]
  return (x[:n], y[:n]), (x[n:], y[n:])


def test_nn_hypotheses_fit_training_data_and_match_single_training():
  train, test = _task()
  key = jax.random.key(0)
  kw = dict(width=16, depth=1, epochs=80, learning_rate=2e-2, batch_size=16)
  out = ib.nn_hypothesis_losses(key, train, test, num_hypotheses=6, chunk_size=3, **kw)
  assert out.test.shape == (6,) and out.train.shape == (6,)
  assert float(out.train.max()) < 0.03  # every net (nearly) interpolates its training set
  assert float(out.test.min()) > float(out.train.max())
  assert float(jnp.std(out.test)) > 0  # different inits and data orders -> different hypotheses
  i = 4
  single = jax.jit(lambda k: ib.train_mlp_hypothesis(k, *train, *test, **kw))(jax.random.split(key, 6)[i])
  np.testing.assert_allclose(single[0], out.test[i], rtol=2e-4, atol=1e-6)


def test_nn_hypotheses_sharded_over_devices_equal_unsharded():
  # 7 hypotheses in chunks of 3 on a 4-device "runs" axis: chunks grow to 4, the last one is padded.
  train, test = _task()
  kw = dict(width=8, depth=1, epochs=30, learning_rate=1e-2, num_hypotheses=7, chunk_size=3)
  plain = ib.nn_hypothesis_losses(jax.random.key(3), train, test, **kw)
  mesh = make_sweep_mesh()
  sharded = ib.nn_hypothesis_losses(jax.random.key(3), train, test, mesh=mesh, **kw)
  assert sharded.test.shape == (7,) and len(mesh.devices.flat) == 4
  np.testing.assert_allclose(sharded.test, plain.test, rtol=1e-5)
  np.testing.assert_allclose(sharded.train, plain.train, rtol=1e-5)


def test_random_features_approach_gp_as_features_grow(x64):
  train, test = _task(n=20, m=30, d=3)
  ls = 2.0
  q = ib.gp_loss_distribution(*train, *test, lengthscale=ls)
  gap = {}
  for num_features in (256, 4096):
    rf = ib.random_feature_losses(jax.random.key(1), *train, *test, num_hypotheses=48,
                                  num_features=num_features, lengthscale=ls)
    assert rf.shape == (48,)
    gap[num_features] = abs(float(rf.mean()) / q.mean - 1)
  # Finite-D features add spread (mean loss above the GP's); the gap closes as D grows.
  assert gap[4096] < 0.1 and gap[4096] < gap[256], gap


@pytest.mark.parametrize("feature_major", [False, True])
def test_mlp_layers_custom_vjp_equals_autodiff_of_matmuls(x64, feature_major):
  # The layers' hand-written backward passes (shaped for fast CPU GEMMs) must give autodiff's gradients,
  # also vmapped over nets that share their input (how `nn_hypothesis_losses` trains them).
  from jaxfair.inductive_bias import networks as nw
  x = jax.random.normal(jax.random.key(0), (7, 3), jnp.float64)
  y = jax.random.normal(jax.random.key(1), (7, 2), jnp.float64)
  keys = jax.random.split(jax.random.key(2), 4)
  params = jax.vmap(lambda k: nw.mlp_init(k, nw.mlp_sizes(3, 2, 5, 1), jnp.float64))(keys)

  def plain(p):
    h = x
    for w, b in p[:-1]:
      h = jax.nn.relu(h @ w + b[None])
    return jnp.mean(jnp.square(h @ p[-1][0] + p[-1][1][None] - y))

  def layers(p):
    if feature_major:  # examples as columns, weights as (out, in)
      p = [(w.T, b) for w, b in p]
      return jnp.mean(jnp.square(nw.mlp_apply(p, x.T, feature_major=True) - y.T))
    return jnp.mean(jnp.square(nw.mlp_apply(p, x) - y))

  want = jax.vmap(jax.value_and_grad(plain))(params)
  got = jax.jit(jax.vmap(jax.value_and_grad(layers)))(params)
  chex.assert_trees_all_close(got, want, rtol=1e-12, atol=1e-14)

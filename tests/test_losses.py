"""Per-example losses: values and gradients against the formulas, shapes, stability, validation."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfair import losses

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=20) * 3
LABELS = (RNG.random(20) < 0.5).astype(np.int32)
Z = (2 * LABELS - 1) * LOGITS

FORMULAS = {
    "logistic": lambda z: np.log1p(np.exp(-z)),
    "hinge": lambda z: np.maximum(0, 1 - z),
    "exponential": lambda z: np.exp(-z),
    "squared_hinge": lambda z: np.maximum(0, 1 - z) ** 2,
    "focal": lambda z: -(1 - 1 / (1 + np.exp(-z))) ** 2 * np.log(1 / (1 + np.exp(-z))),
}


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_binary_losses_match_formulas(x64, name):
  fn = losses.BINARY_LOSSES[name]
  got = fn(jnp.asarray(LOGITS), jnp.asarray(LABELS))
  assert got.shape == (20,)
  np.testing.assert_allclose(np.asarray(got), FORMULAS[name](Z), rtol=1e-12, atol=1e-14)
  # (B, 1) logits and (B, 1) labels are accepted and give (B,).
  got2 = fn(jnp.asarray(LOGITS)[:, None], jnp.asarray(LABELS)[:, None])
  np.testing.assert_allclose(np.asarray(got2), np.asarray(got), rtol=1e-14)


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_gradients_are_phi_prime_times_y(x64, name):
  fn = losses.BINARY_LOSSES[name]
  y = 2.0 * LABELS - 1
  grad = jax.grad(lambda o: fn(o, jnp.asarray(LABELS)).sum())(jnp.asarray(LOGITS))
  h = 1e-6
  phi = FORMULAS[name]
  dphi = (phi(Z + h) - phi(Z - h)) / (2 * h)
  ok = np.abs(1 - Z) > 1e-4  # hinge kinks
  np.testing.assert_allclose(np.asarray(grad)[ok], (dphi * y)[ok], rtol=1e-5, atol=1e-8)


def test_margin_losses_are_calibrated_at_zero(x64):
  """phi'(0) < 0 for every baseline (Bartlett et al. 2006: a convex phi is calibrated iff so)."""
  for name, fn in losses.BINARY_LOSSES.items():
    d = jax.grad(lambda o: fn(o[None], jnp.array([1]))[0])(jnp.asarray(0.0))
    assert float(d) < 0, name


def test_focal_gamma_zero_is_logistic(x64):
  np.testing.assert_allclose(np.asarray(losses.focal(jnp.asarray(LOGITS), jnp.asarray(LABELS), gamma=0.0)),
                             np.asarray(losses.logistic(jnp.asarray(LOGITS), jnp.asarray(LABELS))), rtol=1e-12)
  with pytest.raises(ValueError, match="`gamma` must be >= 0"):
    losses.focal(jnp.asarray(LOGITS), jnp.asarray(LABELS), gamma=-1.0)


def test_logistic_is_stable_for_large_margins():
  o = jnp.array([-1000.0, 1000.0, 80.0, -80.0])
  t = jnp.array([1, 1, 0, 0])
  v = np.asarray(losses.logistic(o, t))
  np.testing.assert_allclose(v, [1000.0, 0.0, 80.0, 0.0], atol=1e-6)
  g = np.asarray(jax.grad(lambda o: losses.logistic(o, t).sum())(o))
  assert np.all(np.isfinite(g))


def test_zero_one_counts_ties_as_errors():
  o = jnp.array([1.0, -1.0, 0.0, 2.0])
  t = jnp.array([1, 1, 1, 0])
  np.testing.assert_array_equal(np.asarray(losses.zero_one(o, t)), [0, 1, 1, 1])
  assert losses.zero_one(o, t).dtype == o.dtype


def test_binary_losses_reject_bad_input():
  o = jnp.zeros(3)
  with pytest.raises(ValueError, match=r"\(y \+ 1\) // 2"):
    losses.logistic(o, jnp.array([-1, 1, 1]))
  with pytest.raises(ValueError, match="same number"):
    losses.hinge(o, jnp.array([0, 1]))
  with pytest.raises(ValueError, match="logits"):
    losses.hinge(jnp.zeros((3, 2)), jnp.array([0, 1, 1]))
  with pytest.raises(ValueError, match="labels"):  # (B, 2) labels would silently broadcast
    losses.hinge(o, jnp.zeros((3, 2), jnp.int32))
  with pytest.raises(ValueError, match="floating"):
    losses.hinge(jnp.zeros(3, jnp.int32), jnp.array([0, 1, 1]))


def test_binary_losses_under_jit_and_vmap():
  f = jax.jit(jax.vmap(losses.logistic))
  out = f(jnp.zeros((4, 6)), jnp.ones((4, 6), jnp.int32))
  np.testing.assert_allclose(np.asarray(out), np.log(2.0), rtol=1e-6)


def test_softmax_cross_entropy_and_squared_error(x64):
  logits = RNG.normal(size=(5, 3))
  labels = np.array([0, 2, 1, 1, 0])
  ref = -np.log(np.exp(logits) / np.exp(logits).sum(1, keepdims=True))[np.arange(5), labels]
  np.testing.assert_allclose(np.asarray(losses.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(labels))),
                             ref, rtol=1e-12)
  with pytest.raises(ValueError, match=r"\[0, 3\)"):
    losses.softmax_cross_entropy(jnp.asarray(logits), jnp.array([0, 1, 3, 0, 0]))
  for loss in (losses.softmax_cross_entropy, losses.one_hot_mean_squared_error):  # float labels, even under jit
    with pytest.raises(ValueError, match="`labels` must be integer class indices"):
      jax.jit(loss)(jnp.asarray(logits), jnp.asarray(labels, jnp.float32))
  p, q = RNG.normal(size=(5, 3)), RNG.normal(size=(5, 3))
  np.testing.assert_allclose(np.asarray(losses.mean_squared_error(jnp.asarray(p), jnp.asarray(q))),
                             ((p - q) ** 2).mean(1), rtol=1e-12)
  with pytest.raises(ValueError, match="same shape"):
    losses.mean_squared_error(jnp.zeros((5, 3)), jnp.zeros((5,)))
  np.testing.assert_allclose(
      np.asarray(losses.one_hot_mean_squared_error(jnp.asarray(p), jnp.asarray(labels))),
      ((p - np.eye(3)[labels]) ** 2).mean(1), rtol=1e-12)

"""Tests for jaxfair.reweighting: values against NumPy references, masks, sharding, jit, retracing, bad input."""
from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxfair import reweighting as rw
from jaxfair.training import components

STRATEGIES = rw.STRATEGIES

# ---------------------------------------------------------------------------------------------------------
# NumPy references (float64, written from the formulas, independent of the implementation).


def np_softmax(s):
  s = np.asarray(s, np.float64)
  e = np.exp(s - s.max())
  return e / e.sum()


def np_minmax(l, delta):
  lo, hi = l.min(), l.max()
  return (2 * delta * l - delta * (hi + lo)) / max(hi - lo, 1e-6)


def np_scores(x, strategy, delta):
  return {"linupper": np.minimum(x + delta, delta), "quadratic": 1 - x**2 / delta**2,
          "extremes": np.abs(x), "linear": 0.5 * x + 0.5 * delta}[strategy]


def np_loss_based(l, strategy, r, delta, mask=None):
  l = np.asarray(l, np.float64)
  mask = np.ones(l.shape, bool) if mask is None else np.asarray(mask, bool)
  out = np.zeros_like(l)
  out[mask] = np_softmax(np_scores(np_minmax(l[mask], delta), strategy, delta) / r)
  return out


def np_kl_dro(l, r, mask=None):
  l = np.asarray(l, np.float64)
  mask = np.ones(l.shape, bool) if mask is None else np.asarray(mask, bool)
  out = np.zeros_like(l)
  out[mask] = np_softmax(l[mask] / r)
  return out


def np_kl_value(l, r):
  l = np.asarray(l, np.float64)
  m = l.max()
  return m + r * np.log(np.mean(np.exp((l - m) / r)))


def np_cvar_weights(l, alpha, mask=None):
  """Exact discrete CVaR by linear programming's greedy solution, ties averaged."""
  l = np.asarray(l, np.float64)
  mask = np.ones(l.shape, bool) if mask is None else np.asarray(mask, bool)
  idx = np.flatnonzero(mask)
  n = idx.size
  k = alpha * n
  order = idx[np.argsort(-l[idx], kind="stable")]
  w = np.zeros_like(l)
  remaining = k
  for i in order:
    take = min(1.0, max(remaining, 0.0))
    w[i] = take / k
    remaining -= take
  for v in np.unique(l[idx]):  # split ties evenly
    tied = idx[l[idx] == v]
    w[tied] = w[tied].mean()
  return w


def np_cvar_value(l, alpha):
  """CVaR via the Rockafellar–Uryasev formula min_t t + mean((l - t)_+) / alpha (t ranges over the losses)."""
  l = np.asarray(l, np.float64)
  return min(t + np.mean(np.maximum(l - t, 0)) / alpha for t in l)


def random_losses(seed, n=37, scale=3.0):
  rng = np.random.default_rng(seed)
  return rng.gamma(2.0, scale / 2, size=n)


# ---------------------------------------------------------------------------------------------------------
# Values against the references.


@pytest.mark.parametrize("delta", [1.0, 0.5])
def test_minmax_normalize_matches_reference(x64, delta):
  l = random_losses(0)
  got = rw.minmax_normalize(jnp.asarray(l), delta)
  np.testing.assert_allclose(got, np_minmax(l, delta), rtol=1e-12, atol=1e-12)
  assert got.min() == -delta and got.max() == delta
  # all-equal losses map to 0 (uniform weights downstream); below the 1e-6 floor h shrinks towards 0 around
  # the mid-range, as the reference's formula does
  np.testing.assert_array_equal(rw.minmax_normalize(jnp.full((5,), 2.0), delta), 0.0)
  tiny = np.arange(1.0, 6.0) * 1e-7
  np.testing.assert_allclose(rw.minmax_normalize(jnp.asarray(tiny), delta), np_minmax(tiny, delta), atol=1e-12)


def test_strategy_scores_values():
  x = jnp.array([-1.0, -0.5, 0.0, 0.5, 1.0])
  for s in STRATEGIES:
    np.testing.assert_allclose(rw.strategy_scores(x, s), np_scores(np.asarray(x), s, 1.0), atol=1e-7)
  np.testing.assert_allclose(rw.strategy_scores(x * 2, "quadratic", 2.0), np_scores(np.asarray(x) * 2, "quadratic", 2.0),
                             atol=1e-7)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("r", [0.4, 1.0, 1.44])
def test_loss_based_weights_match_reference(x64, strategy, r):
  l = random_losses(1)
  mask = np.random.default_rng(2).random(l.size) > 0.2
  for m in (None, mask):
    got = rw.loss_based_weights(jnp.asarray(l), strategy, r, 1.0, None if m is None else jnp.asarray(m))
    np.testing.assert_allclose(got, np_loss_based(l, strategy, r, 1.0, m), rtol=1e-10, atol=1e-14)
    assert got.shape == l.shape
    np.testing.assert_allclose(got.sum(), 1.0, rtol=1e-12)
    if m is not None:
      assert np.all(np.asarray(got)[~m] == 0)


def test_linear_strategy_is_kl_dro_on_normalised_losses_at_2r(x64):
  l = jnp.asarray(random_losses(3))
  for r in (0.3, 1.0):
    np.testing.assert_allclose(rw.loss_based_weights(l, "linear", r),
                               rw.kl_dro_weights(rw.minmax_normalize(l), 2 * r), rtol=1e-12)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_loss_based_affine_and_permutation_invariance(x64, strategy):
  l = jnp.asarray(random_losses(4))
  w = rw.loss_based_weights(l, strategy, 0.7)
  np.testing.assert_allclose(rw.loss_based_weights(3.7 * l - 11.0, strategy, 0.7), w, rtol=1e-10)
  perm = np.random.default_rng(5).permutation(l.size)
  np.testing.assert_allclose(rw.loss_based_weights(l[perm], strategy, 0.7), np.asarray(w)[perm], rtol=1e-12)


def test_kl_dro_weights_and_value_match_reference(x64):
  l = random_losses(6)
  mask = np.random.default_rng(7).random(l.size) > 0.3
  for r in (0.05, 0.5, 2.0, 50.0):
    np.testing.assert_allclose(rw.kl_dro_weights(jnp.asarray(l), r), np_kl_dro(l, r), rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(rw.kl_dro_weights(jnp.asarray(l), r, jnp.asarray(mask)), np_kl_dro(l, r, mask),
                               rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(rw.kl_dro_value(jnp.asarray(l), r), np_kl_value(l, r), rtol=1e-12)
    np.testing.assert_allclose(rw.kl_dro_value(jnp.asarray(l), r, jnp.asarray(mask)), np_kl_value(l[mask], r),
                               rtol=1e-12)


def test_kl_dro_value_gradient_is_weights_and_dr_is_minus_kl(x64):
  l = jnp.asarray(random_losses(8))
  for r in (0.3, 3.0, 30.0):
    w = rw.kl_dro_weights(l, r)
    np.testing.assert_allclose(jax.grad(rw.kl_dro_value)(l, r), w, rtol=1e-9, atol=1e-15)
    kl = float(jnp.sum(w * jnp.log(w * l.size)))
    np.testing.assert_allclose(jax.grad(rw.kl_dro_value, argnums=1)(l, r), -kl, rtol=1e-7)


def test_kl_dro_value_large_r_limit_is_mean_plus_half_variance_over_r(x64):
  l = jnp.asarray(random_losses(9))
  mean, var = float(l.mean()), float(l.var())
  for r in (1e3, 1e6, 1e12):
    approx = mean + var / (2 * r)
    assert abs(float(rw.kl_dro_value(l, r)) - approx) <= 1e-12 * abs(mean) + 5 * var**1.5 / r**2
  # float32 at r = 1e30 keeps the mean instead of rounding to l_max
  l32 = l.astype(jnp.float32)
  np.testing.assert_allclose(rw.kl_dro_value(l32, 1e30), float(l.mean()), rtol=1e-6)
  np.testing.assert_allclose(rw.kl_dro_value(l32, jnp.inf), float(l.mean()), rtol=1e-6)
  # r = inf: the gradients are the limits (uniform weights, dPhi/dr = -KL(u || u) = 0), not NaN
  np.testing.assert_allclose(jax.grad(rw.kl_dro_value)(l32, jnp.inf), np.full(l.shape, 1 / l.size), rtol=1e-6)
  assert float(jax.grad(rw.kl_dro_value, argnums=1)(l32, jnp.inf)) == 0.0
  # losses near the float maximum: the mean is taken without overflowing
  np.testing.assert_allclose(rw.kl_dro_value(jnp.array([3e38, 3e38], jnp.float32), 1.0), 3e38, rtol=1e-6)


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.3, 0.1, 0.01])
def test_cvar_weights_match_reference(x64, alpha):
  l = random_losses(10)
  mask = np.random.default_rng(11).random(l.size) > 0.25
  for m in (None, mask):
    got = rw.cvar_weights(jnp.asarray(l), alpha, None if m is None else jnp.asarray(m))
    np.testing.assert_allclose(got, np_cvar_weights(l, alpha, m), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(got.sum(), 1.0, rtol=1e-12)
  np.testing.assert_allclose(rw.cvar_value(jnp.asarray(l), alpha), np_cvar_value(l, alpha), rtol=1e-10)


def test_cvar_ties_are_split_evenly_and_permutation_equivariant(x64):
  l = jnp.array([1.0, 3.0, 3.0, 3.0, 0.0, 2.0])
  w = rw.cvar_weights(l, 0.5)  # k = 3: exactly the three 3.0s
  np.testing.assert_allclose(w, [0, 1 / 3, 1 / 3, 1 / 3, 0, 0], atol=1e-15)
  w = rw.cvar_weights(l, 1 / 3)  # k = 2 among three tied maxima: 2/3 each
  np.testing.assert_allclose(w, [0, 1 / 3, 1 / 3, 1 / 3, 0, 0], atol=1e-15)
  np.testing.assert_allclose(rw.cvar_value(l, 1 / 3), 3.0)
  perm = np.array([5, 2, 0, 4, 1, 3])
  np.testing.assert_allclose(rw.cvar_weights(l[perm], 0.4), np.asarray(rw.cvar_weights(l, 0.4))[perm], atol=1e-15)
  np.testing.assert_allclose(rw.cvar_weights(l, 1.0), np.full(6, 1 / 6), atol=1e-15)


def test_weighted_loss_value_and_stop_gradient():
  l = jnp.array([1.0, 2.0, 4.0])
  w = rw.kl_dro_weights(l, 1.0)
  np.testing.assert_allclose(rw.weighted_loss(l, w), float(jnp.sum(w * l)), rtol=1e-6)
  # gradient w.r.t. the losses is exactly the (constant) weights, even when w depends on l
  g = jax.grad(lambda x: rw.weighted_loss(x, rw.kl_dro_weights(x, 1.0)))(l)
  np.testing.assert_allclose(g, w, rtol=1e-6)
  with pytest.raises(ValueError, match="weights"):
    rw.weighted_loss(l, w[:2])


def test_weight_diagnostics_match_reference(x64):
  l = random_losses(12)
  w = np_kl_dro(l, 0.8)
  d = rw.weight_diagnostics(jnp.asarray(w))
  n = l.size
  np.testing.assert_allclose(d["ess"], 1 / np.sum(w**2), rtol=1e-12)
  np.testing.assert_allclose(d["ess_fraction"], 1 / np.sum(w**2) / n, rtol=1e-12)
  np.testing.assert_allclose(d["n_w_max"], n * w.max(), rtol=1e-12)
  ent = -np.sum(w * np.log(w))
  np.testing.assert_allclose(d["entropy"], ent, rtol=1e-12)
  np.testing.assert_allclose(d["kl_to_uniform"], np.log(n) - ent, rtol=1e-10)
  u = rw.weight_diagnostics(jnp.full((8,), 1 / 8))
  np.testing.assert_allclose([u["ess"], u["n_w_max"], u["kl_to_uniform"]], [8, 1, 0], atol=1e-12)
  mask = jnp.array([1, 1, 0, 0])
  m = rw.weight_diagnostics(jnp.array([0.5, 0.5, 0.0, 0.0]), mask)
  np.testing.assert_allclose([m["ess"], m["n_w_max"], m["ess_fraction"]], [2, 1, 1], atol=1e-12)
  z = rw.weight_diagnostics(jnp.zeros(4))
  assert all(float(v) == 0 for v in z.values())
  with pytest.raises(ValueError, match=r"`weights` must be >= 0; negative at indices \[1\]"):
    rw.weight_diagnostics(jnp.array([0.5, -0.2, 0.7, 0.0]))
  assert set(rw.weight_diagnostics(jnp.array([0.5, np.nan, 0.5]))) == set(u)  # a diverged run's NaNs: no error


# ---------------------------------------------------------------------------------------------------------
# EMA-normalised estimator.


def np_ema_run(batches, r, beta):
  u = None
  out = []
  for l in batches:
    mean = np.mean(np.exp(np.asarray(l, np.float64) / r))
    u = mean if u is None else (1 - beta) * u + beta * mean
    out.append(np.exp(np.asarray(l) / r) / (len(l) * u))
  return out, u


def test_ema_kl_dro_matches_reference_recursion(x64):
  rng = np.random.default_rng(13)
  batches = [rng.gamma(2.0, 1.0, size=16) * (1 - 0.05 * t) for t in range(12)]
  for r, beta in ((1.0, 0.1), (0.5, 0.5), (2.0, 1.0)):
    state = rw.ema_kl_dro_init(jnp.float64)
    ref, u_last = np_ema_run(batches, r, beta)
    for t, l in enumerate(batches):
      w, state = rw.ema_kl_dro_weights(jnp.asarray(l), state, r, beta)
      np.testing.assert_allclose(w, ref[t], rtol=1e-10)
      assert np.all(np.asarray(w) <= 1 / beta * (1 + 1e-12)) and np.sum(w) <= 1 / beta * (1 + 1e-12)
    np.testing.assert_allclose(state.value(r), r * np.log(u_last), rtol=1e-10)
    assert int(state.count) == len(batches)


def test_ema_first_batch_and_beta_one_equal_softmax(x64):
  l = jnp.asarray(random_losses(14))
  w, state = rw.ema_kl_dro_weights(l, rw.ema_kl_dro_init(jnp.float64), 0.7, 0.01)
  np.testing.assert_allclose(w, rw.kl_dro_weights(l, 0.7), rtol=1e-12)
  w, _ = rw.ema_kl_dro_weights(l + 5.0, state, 0.7, 1.0)
  np.testing.assert_allclose(w, rw.kl_dro_weights(l, 0.7), rtol=1e-10)


def test_ema_extreme_scales_stay_finite():
  state = rw.ema_kl_dro_init()
  for t in range(6):
    l = jnp.array([1e30, 0.0, -1e30, 5.0]) * (1 + t)
    for r in (1e-30, 1.0, 1e30):
      w, s = rw.ema_kl_dro_weights(l, state, r, 0.3)
      assert np.all(np.isfinite(w)) and np.isfinite(s.anchor) and np.isfinite(s.offset)
    state = s
  # tiny r, first batch: all weight on the maximum (the r log B part is not rounded away)
  w, _ = rw.ema_kl_dro_weights(jnp.array([3.5, 1.0, 2.0, 0.5]), rw.ema_kl_dro_init(), 1e-30, 0.5)
  np.testing.assert_allclose(w, [1, 0, 0, 0])


def test_ema_mask_and_all_masked_batch_keeps_state(x64):
  l = jnp.asarray(random_losses(15, n=10))
  mask = jnp.arange(10) < 7
  w, s = rw.ema_kl_dro_weights(l, rw.ema_kl_dro_init(jnp.float64), 1.0, 0.2, mask)
  np.testing.assert_allclose(w, np_kl_dro(np.asarray(l), 1.0, np.asarray(mask)), rtol=1e-12)
  w2, s2 = rw.ema_kl_dro_weights(l, s, 1.0, 0.2, jnp.zeros(10))
  assert np.all(np.asarray(w2) == 0)
  chex.assert_trees_all_equal(s, s2)


# ---------------------------------------------------------------------------------------------------------
# Numerical stability and bad input.


def test_extreme_losses_and_temperatures_give_finite_weights():
  @jax.jit
  def all_weights(l, r):
    ws = [rw.kl_dro_weights(l, r), rw.cvar_weights(l, 0.3)] + [rw.loss_based_weights(l, s, r) for s in STRATEGIES]
    return jnp.stack(ws), rw.kl_dro_value(l, r)

  cases = [jnp.array([1e30, -1e30, 0.0, 3e38]), jnp.array([1e-30, 2e-30, 0.0, -1e-30]), jnp.array([1e4, 1e4, 0.0, 1.0])]
  for l in cases:
    for r in (1e-30, 1e-3, 1.0, 1e30, jnp.inf):
      ws, value = all_weights(l, r)
      assert np.all(np.isfinite(ws)) and np.all(np.asarray(ws) >= 0), (l, r, ws)
      np.testing.assert_allclose(ws.sum(axis=1), 1.0, rtol=1e-5)
      assert np.isfinite(value)
  # tiny r is the hard max (ties split), infinite r is uniform
  np.testing.assert_allclose(rw.kl_dro_weights(jnp.array([1.0, 3.0, 3.0, 0.0]), 1e-30), [0, 0.5, 0.5, 0])
  np.testing.assert_allclose(rw.kl_dro_weights(jnp.array([1.0, 3.0, 3.0, 0.0]), jnp.inf), np.full(4, 0.25))
  np.testing.assert_allclose(rw.kl_dro_value(jnp.array([1.0, 3.0, 0.0]), 1e-30), 3.0)


def test_low_precision_inputs_are_upcast():
  l = jnp.asarray(random_losses(16)).astype(jnp.bfloat16)
  w = rw.kl_dro_weights(l, 1.0)
  assert w.dtype == jnp.float32
  np.testing.assert_allclose(w, np_kl_dro(np.asarray(l.astype(jnp.float32)), 1.0), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("r", [0.0, -1.0, float("nan")])
def test_bad_r_raises(r):
  l = jnp.array([1.0, 2.0])
  for fn in (lambda: rw.kl_dro_weights(l, r), lambda: rw.kl_dro_value(l, r),
             lambda: rw.loss_based_weights(l, "linupper", r), lambda: rw.kl_dro_rule(r),
             lambda: rw.loss_based_rule("quadratic", r), lambda: rw.ema_kl_dro_rule(r),
             lambda: rw.ema_kl_dro_weights(l, rw.ema_kl_dro_init(), r, 0.1)):
    with pytest.raises(ValueError, match="`r` must be > 0"):
      fn()


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5, float("nan")])
def test_bad_alpha_raises(alpha):
  with pytest.raises(ValueError, match="`alpha` must lie in"):
    rw.cvar_weights(jnp.array([1.0, 2.0]), alpha)
  with pytest.raises(ValueError, match="`alpha` must lie in"):
    rw.cvar_rule(alpha)


def test_bad_beta_delta_strategy_shapes_raise():
  l = jnp.array([1.0, 2.0])
  for beta in (0.0, 1.5):
    with pytest.raises(ValueError, match="`beta`"):
      rw.ema_kl_dro_weights(l, rw.ema_kl_dro_init(), 1.0, beta)
  with pytest.raises(ValueError, match="`delta`"):
    rw.loss_based_weights(l, "linupper", 1.0, delta=0.0)
  with pytest.raises(ValueError, match="ambiguous"):
    rw.loss_based_weights(l, "upper")
  with pytest.raises(ValueError, match="Unknown `strategy`"):
    rw.loss_based_rule("uniform")
  with pytest.raises(ValueError, match="empty"):
    rw.kl_dro_weights(jnp.zeros((0,)), 1.0)
  with pytest.raises(ValueError, match="dimensions"):
    rw.kl_dro_weights(jnp.zeros((2, 3)), 1.0)
  with pytest.raises(ValueError, match="`mask`"):
    rw.kl_dro_weights(l, 1.0, jnp.ones(3))


def test_non_finite_losses_raise_eagerly_and_get_zero_weight_under_jit():
  l = jnp.array([1.0, jnp.nan, 2.0, jnp.inf])
  fns = {"kl": lambda x, m: rw.kl_dro_weights(x, 1.0, m),
         "lb": lambda x, m: rw.loss_based_weights(x, "linupper", 1.0, 1.0, m),
         "cvar": lambda x, m: rw.cvar_weights(x, 0.5, m)}
  for name, fn in fns.items():
    with pytest.raises(ValueError, match="NaN or Inf"):
      fn(l, None)
    # masked non-finite entries are fine eagerly
    w = fn(l, jnp.array([1, 0, 1, 0]))
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
    w = jax.jit(fn)(l, None)
    assert np.all(np.isfinite(w)), name
    np.testing.assert_allclose(np.asarray(w)[[1, 3]], 0.0)
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
  assert np.isfinite(jax.jit(lambda x: rw.kl_dro_value(x, 1.0))(l))
  # the weighted loss still surfaces the NaN (for the training loop's NaN guard)
  assert np.isnan(jax.jit(lambda x: rw.weighted_loss(x, rw.kl_dro_weights(x, 1.0)))(l))


def test_all_masked_batch_gives_zero_weights_and_zero_values():
  l = jnp.array([1.0, 2.0, 3.0])
  m = jnp.zeros(3)
  for w in [rw.kl_dro_weights(l, 1.0, m), rw.cvar_weights(l, 0.5, m)] + [
      rw.loss_based_weights(l, s, 1.0, 1.0, m) for s in STRATEGIES]:
    np.testing.assert_array_equal(w, 0.0)
  assert float(rw.kl_dro_value(l, 1.0, m)) == 0.0 and float(rw.cvar_value(l, 0.5, m)) == 0.0


def test_traced_r_nonpositive_is_hard_max_and_traced_alpha_is_clipped():
  l = jnp.array([1.0, 3.0, 2.0])
  np.testing.assert_allclose(jax.jit(rw.kl_dro_weights)(l, 0.0), [0, 1, 0])
  np.testing.assert_allclose(jax.jit(rw.cvar_weights)(l, 2.0), np.full(3, 1 / 3), rtol=1e-6)
  np.testing.assert_allclose(jax.jit(rw.cvar_weights)(l, 0.0), [0, 1, 0])


# ---------------------------------------------------------------------------------------------------------
# jit == eager, no retrace, sharded == unsharded.


def _all_weight_fns():
  return {
      "linupper": lambda l, m: rw.loss_based_weights(l, "linupper", 0.4, 1.0, m),
      "quadratic": lambda l, m: rw.loss_based_weights(l, "quadratic", 1.0, 1.0, m),
      "extremes": lambda l, m: rw.loss_based_weights(l, "extremes", 0.4, 1.0, m),
      "linear": lambda l, m: rw.loss_based_weights(l, "linear", 1.0, 1.0, m),
      "kl_dro": lambda l, m: rw.kl_dro_weights(l, 0.5, m),
      "kl_value": lambda l, m: rw.kl_dro_value(l, 0.5, m),
      "cvar": lambda l, m: rw.cvar_weights(l, 0.2, m),
      "minmax": lambda l, m: rw.minmax_normalize(l, 1.0, m),
      "ema": lambda l, m: rw.ema_kl_dro_weights(l, rw.ema_kl_dro_init(), 0.5, 0.1, m)[0],
      "diag_ess": lambda l, m: rw.weight_diagnostics(rw.kl_dro_weights(l, 0.5, m), m)["ess"],
  }


def _all_outputs(l, m):
  return {name: fn(l, m) for name, fn in _all_weight_fns().items()}


def test_jit_equals_eager_and_no_retrace():
  l = jnp.asarray(random_losses(17, n=32), jnp.float32)
  mask = jnp.arange(32) < 29
  eager = _all_outputs(l, mask)
  jitted = jax.jit(chex.assert_max_traces(_all_outputs, n=1))
  got = jitted(l, mask)
  for name in eager:
    np.testing.assert_allclose(got[name], eager[name], rtol=2e-6, atol=1e-7, err_msg=name)
  jitted(l * 2.0 + 1.0, ~mask)  # new values, same shapes: no retrace (assert_max_traces raises otherwise)
  chex.clear_trace_counter()


def test_traced_hyperparameters_do_not_retrace():
  @jax.jit
  @chex.assert_max_traces(n=1)
  def f(l, r, alpha):
    return rw.kl_dro_weights(l, r), rw.loss_based_weights(l, "linupper", r), rw.cvar_weights(l, alpha)

  l = jnp.asarray(random_losses(18, n=16), jnp.float32)
  for r, a in ((0.5, 0.1), (1.0, 0.5), (3.0, 1.0)):
    out = f(l, r, a)
    np.testing.assert_allclose(out[0], rw.kl_dro_weights(l, r), rtol=2e-6)
    np.testing.assert_allclose(out[2], rw.cvar_weights(l, a), rtol=2e-6)
  chex.clear_trace_counter()


def test_vmap_over_temperatures():
  l = jnp.asarray(random_losses(19, n=16), jnp.float32)
  rs = jnp.array([0.2, 1.0, 5.0])
  got = jax.vmap(lambda r: rw.kl_dro_weights(l, r))(rs)
  for i, r in enumerate(rs):
    np.testing.assert_allclose(got[i], rw.kl_dro_weights(l, float(r)), rtol=2e-6)


def _mesh():
  if jax.device_count() < 4:
    pytest.skip("needs 4 (fake) devices; conftest sets jax_num_cpu_devices=4")
  return jax.make_mesh((4,), ("batch",))


def test_sharded_equals_unsharded_under_jit():
  mesh = _mesh()
  l = jnp.asarray(random_losses(20, n=64), jnp.float32)
  # the outlier sits on the last shard so a per-shard normalisation would give visibly different weights
  l = l.at[-1].set(40.0)
  mask = jnp.arange(64) < 61
  sharding = NamedSharding(mesh, P("batch"))
  ls, ms = jax.device_put(l, sharding), jax.device_put(mask, sharding)
  want = jax.jit(_all_outputs)(l, mask)
  with jax.set_mesh(mesh):
    got = jax.jit(_all_outputs)(ls, ms)
  for name in want:
    np.testing.assert_allclose(got[name], want[name], rtol=2e-6, atol=1e-7, err_msg=name)


def test_shard_map_with_axis_name_equals_unsharded():
  mesh = _mesh()
  l = jnp.asarray(random_losses(21, n=64), jnp.float32).at[-1].set(40.0)
  mask = jnp.arange(64) < 61
  per_device = {
      "loss_based": lambda l, m, a: rw.loss_based_weights(l, "linupper", 0.4, 1.0, m, axis_name=a),
      "kl_dro": lambda l, m, a: rw.kl_dro_weights(l, 0.5, m, axis_name=a),
      "minmax": lambda l, m, a: rw.minmax_normalize(l, 1.0, m, axis_name=a),
      "ema": lambda l, m, a: rw.ema_kl_dro_weights(l, rw.ema_kl_dro_init(), 0.5, 0.1, m, axis_name=a)[0],
  }
  ls, ms = jax.device_put(l, NamedSharding(mesh, P("batch"))), jax.device_put(mask, NamedSharding(mesh, P("batch")))
  for name, fn in per_device.items():
    want = fn(l, mask, None)
    mapped = jax.shard_map(functools.partial(fn, a="batch"), mesh=mesh, in_specs=(P("batch"), P("batch")),
                           out_specs=P("batch"))
    got = jax.jit(mapped)(ls, ms)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7, err_msg=name)
  value = jax.jit(jax.shard_map(lambda l, m: rw.kl_dro_value(l, 0.5, m, axis_name="batch"), mesh=mesh,
                                in_specs=(P("batch"), P("batch")), out_specs=P()))(ls, ms)
  np.testing.assert_allclose(value, rw.kl_dro_value(l, 0.5, mask), rtol=2e-6)
  # without the axis name the per-shard softmax differs: the bug the axis name prevents
  local = jax.jit(jax.shard_map(functools.partial(per_device["kl_dro"], a=None), mesh=mesh,
                                in_specs=(P("batch"), P("batch")), out_specs=P("batch")))(ls, ms)
  assert np.abs(np.asarray(local) - np.asarray(per_device["kl_dro"](l, mask, None))).max() > 1e-2


# ---------------------------------------------------------------------------------------------------------
# Weighting rules (training-core protocol).


def _run_rule(rule, batches, masks):
  def body(state, xs):
    l, m = xs
    w, state = rule.apply(l, m, state)
    return state, w

  return jax.jit(lambda b, m: jax.lax.scan(body, rule.init(), (b, m)))(batches, masks)


def test_rules_match_functions_inside_scan():
  rng = np.random.default_rng(22)
  batches = jnp.asarray(rng.gamma(2.0, 1.0, size=(6, 16)), jnp.float32)
  masks = jnp.asarray(rng.random((6, 16)) > 0.2)
  cases = {
      "linupper": (rw.loss_based_rule("linupper", 0.4), lambda l, m: rw.loss_based_weights(l, "linupper", 0.4, 1.0, m)),
      "kl_dro": (rw.kl_dro_rule(0.5), lambda l, m: rw.kl_dro_weights(l, 0.5, m)),
      "cvar": (rw.cvar_rule(0.25), lambda l, m: rw.cvar_weights(l, 0.25, m)),
  }
  for name, (rule, fn) in cases.items():
    state, ws = _run_rule(rule, batches, masks)
    assert isinstance(rule, components.WeightingRule)
    assert int(state.step) == 6
    for t in range(6):
      np.testing.assert_allclose(ws[t], fn(batches[t], masks[t]), rtol=2e-6, atol=1e-8, err_msg=name)
  # EMA rule carries the estimator state across steps
  state, ws = _run_rule(rw.ema_kl_dro_rule(0.5, 0.2), batches, masks)
  s = rw.ema_kl_dro_init()
  for t in range(6):
    w, s = rw.ema_kl_dro_weights(batches[t], s, 0.5, 0.2, masks[t])
    np.testing.assert_allclose(ws[t], w, rtol=1e-5)
  chex.assert_trees_all_close(state.inner, s, rtol=1e-5)


def test_uniform_warmup_and_r_warmup_schedule():
  rng = np.random.default_rng(23)
  batches = jnp.asarray(rng.gamma(2.0, 1.0, size=(5, 8)), jnp.float32)
  masks = jnp.ones((5, 8), bool).at[:, -1].set(False)
  _, ws = _run_rule(rw.loss_based_rule("quadratic", 1.0, uniform_warmup_steps=2), batches, masks)
  for t in range(5):
    want = components.masked_uniform(masks[t]) if t < 2 else rw.loss_based_weights(batches[t], "quadratic", 1.0,
                                                                                    1.0, masks[t])
    np.testing.assert_allclose(ws[t], want, rtol=2e-6)
  sched = rw.r_warmup_schedule(0.4, 100.0, 3)
  _, ws = _run_rule(rw.loss_based_rule("extremes", sched), batches, masks)
  for t in range(5):
    want = rw.loss_based_weights(batches[t], "extremes", 100.0 if t < 3 else 0.4, 1.0, masks[t])
    np.testing.assert_allclose(ws[t], want, rtol=2e-6)
  # generic wrapper around a stateful rule: the EMA keeps updating during warm-up
  rule = rw.with_uniform_warmup(rw.ema_kl_dro_rule(1.0, 0.5), 2)
  state, ws = _run_rule(rule, batches, masks)
  np.testing.assert_allclose(ws[1], components.masked_uniform(masks[1]), rtol=1e-6)
  assert int(state.inner.inner.count) == 5
  with pytest.raises(ValueError, match="uniform_warmup_steps"):
    rw.kl_dro_rule(1.0, uniform_warmup_steps=-1)


def test_rules_vmap_over_seeds():
  rule = rw.kl_dro_rule(0.5)
  l = jnp.asarray(np.random.default_rng(24).gamma(2.0, 1.0, size=(3, 16)), jnp.float32)
  states = jax.vmap(lambda _: rule.init())(jnp.arange(3))
  ws, states = jax.vmap(lambda l, s: rule.apply(l, jnp.ones(16, bool), s))(l, states)
  for i in range(3):
    np.testing.assert_allclose(ws[i], rw.kl_dro_weights(l[i], 0.5), rtol=2e-6)
  np.testing.assert_array_equal(states.step, 1)

"""EnsLoss: the per-batch algorithm against a NumPy reference on fixed draws, the gradient identity, D1/D2 on
every draw, determinism, masking, validation, and the training-core adapter."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxfair import ensloss as E
from jaxfair import losses


def numpy_reference(xi, z, *, lam, clip, tail, shift, mask=None):
  """The spec's per-batch algorithm written independently in NumPy, on given normal draws `xi`."""
  xi = np.asarray(xi, np.float64)
  z = np.asarray(z, np.float64)
  mask = np.ones(z.shape, bool) if mask is None else np.asarray(mask, bool)
  real = np.flatnonzero(mask)
  xi_r, z_r = xi[real], z[real]
  with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
    if lam == 0:
      base = np.exp(xi_r)
    else:
      inner = np.maximum(1.0 + lam * xi_r, 0.0)
      base = np.where(inner > 0, inner ** (1.0 / lam), np.inf if lam < 0 else 0.0)
  v = np.sort(-base)
  if clip is not None:
    v = np.maximum(v, clip)
  g_r = np.empty_like(z_r)
  g_r[np.argsort(z_r, kind="stable")] = v
  if tail == "inverse":
    g_r = np.where(z_r > 1, g_r / np.where(z_r > 1, z_r, 1.0), g_r)
  elif tail == "inverse_log_squared":
    big = z_r > math.e
    zs = np.where(big, z_r, math.e)
    g_r = np.where(big, g_r / (zs * np.log(zs) ** 2), g_r)
  g = np.zeros_like(z)
  g[real] = g_r - shift
  return g


def _batch(seed, b, *, ties=True):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=b) * 2.0
  if ties:  # repeated margins exercise the stable tie rule
    logits[: b // 4] = logits[b // 4: 2 * (b // 4)]
  labels = (rng.random(b) < 0.5).astype(np.int32)
  return logits, labels


@pytest.mark.parametrize("lam", [0.0, 0.5, -0.5, 1.0])
@pytest.mark.parametrize("tail", ["inverse", "inverse_log_squared", None])
@pytest.mark.parametrize("masked", [False, True])
def test_matches_numpy_reference_step_by_step(x64, lam, tail, masked):
  b = 37
  clip = -1.0
  for seed in range(3):
    key = jax.random.key(seed)
    logits, labels = _batch(seed, b)
    z = (2 * labels - 1) * logits
    # Ties across labels too: margins equal up to sign flips of equal logits.
    mask = (np.arange(b) % 5 != 3) if masked else None
    xi = np.asarray(jax.random.normal(key, (b,), jnp.float64))  # the fixed draws the function consumes
    want = numpy_reference(xi, z, lam=lam, clip=clip, tail=tail, shift=1e-6, mask=mask)
    got = E.calibrated_derivatives(key, jnp.asarray(z), lam=lam, clip=clip, tail=tail,
                                   mask=None if mask is None else jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-15)


def test_box_cox_inverse_edge_cases(x64):
  xi = jnp.array([-3.0, -1.0, 0.0, 1.0, 3.0])
  np.testing.assert_allclose(E.box_cox_inverse(xi, 0.0), np.exp(np.asarray(xi)), rtol=1e-14)
  # lambda < 0 and 1 + lambda xi <= 0 -> +inf; lambda > 0 and 1 + lambda xi <= 0 -> 0.
  assert np.isinf(E.box_cox_inverse(jnp.array([3.0]), -0.5)[0])
  assert E.box_cox_inverse(jnp.array([-3.0]), 0.5)[0] == 0.0
  np.testing.assert_allclose(E.box_cox_inverse(jnp.array([1.0]), 0.5), [1.5 ** 2], rtol=1e-14)
  # Continuous in lambda at 0.
  np.testing.assert_allclose(E.box_cox_inverse(xi, 1e-7), np.exp(np.asarray(xi)), rtol=1e-5)
  # Traced lambda under jit.
  np.testing.assert_allclose(jax.jit(E.box_cox_inverse)(xi, 0.0), np.exp(np.asarray(xi)), rtol=1e-14)


def test_clipped_infinities_from_negative_lambda(x64):
  key = jax.random.key(3)
  z = jnp.linspace(-2, 3, 64)
  g = E.calibrated_derivatives(key, z, lam=-0.9)
  assert np.all(np.isfinite(np.asarray(g)))
  assert float(g.min()) >= -1.0 - 1e-6 - 1e-15
  g_noclip = E.calibrated_derivatives(key, z, lam=-0.9, clip=None)
  assert np.isneginf(np.asarray(g_noclip)).any()  # the clip is what keeps the +inf base values finite
  # so the training entry points refuse an unclipped derivative whenever lambda can be negative
  logits, labels = jnp.zeros(8), jnp.arange(8) % 2
  for kw in (dict(lam=-0.9, clip=None), dict(lam_redraw=True, clip=float("-inf"))):
    with pytest.raises(ValueError, match="`clip`.*-inf"):
      E.ensloss(key, logits, labels, **kw)
    with pytest.raises(ValueError, match="`clip`.*-inf"):
      E.ensloss_loss(**kw)
  assert np.isfinite(float(E.ensloss(key, logits, labels, lam=0.5, clip=None)))  # lambda >= 0: no infinity


def test_lambda_redrawn_every_period_from_the_run_key():
  logits, labels = (jnp.asarray(a) for a in _batch(5, 32))
  loss = E.ensloss_loss(lam_period_steps=3)
  key, run_key, mask = jax.random.key(0), jax.random.key(1), jnp.ones(32, bool)
  out = [np.asarray(loss(logits, labels, key=key, mask=mask, step=jnp.int32(s), run_key=run_key)) for s in range(4)]
  np.testing.assert_array_equal(out[0], out[2])  # same key, same lambda within the period
  assert not np.array_equal(out[0], out[3])  # a new lambda at step 3
  assert not np.array_equal(out[0], loss(logits, labels, key=key, mask=mask, step=jnp.int32(0),
                                         run_key=jax.random.key(2)))  # another run draws its own lambdas
  lam = E.draw_lambda(run_key, 3, 3)
  np.testing.assert_array_equal(out[3], E.ensloss_loss(lam=lam)(logits, labels, key=key, mask=mask))
  with pytest.raises(ValueError, match="step.*run_key"):
    loss(logits, labels, key=key, mask=mask)
  with pytest.raises(ValueError, match="at most one"):
    E.ensloss_loss(lam_redraw=True, lam_period_steps=3)


@pytest.mark.parametrize("masked", [False, True])
def test_gradient_identity(x64, masked):
  b = 50
  logits, labels = _batch(7, b)
  mask = jnp.asarray(np.arange(b) < 41) if masked else None
  n = 41 if masked else b
  y = 2.0 * labels - 1.0
  for s in range(4):
    key = jax.random.key(100 + s)
    for kw in (dict(), dict(lam=0.7, tail="inverse_log_squared"), dict(lam=-0.3, clip=-2.0, shift=1e-3)):
      grad = jax.grad(lambda o: E.ensloss(key, o, labels, mask=mask, **kw))(jnp.asarray(logits))
      g = E.calibrated_derivatives(key, jnp.asarray(y * logits), mask=mask, **kw)
      np.testing.assert_allclose(np.asarray(grad), np.asarray(g) * y / n, rtol=1e-13, atol=1e-16)
      if masked:
        assert np.all(np.asarray(grad)[41:] == 0.0)
  # (B, 1) logits give the same gradient in the same shape.
  key = jax.random.key(0)
  g1 = jax.grad(lambda o: E.ensloss(key, o, labels))(jnp.asarray(logits))
  g2 = jax.grad(lambda o: E.ensloss(key, o, labels))(jnp.asarray(logits)[:, None])
  np.testing.assert_array_equal(np.asarray(g2)[:, 0], np.asarray(g1))


def test_surrogate_value_and_gradient_through_a_model(x64):
  key = jax.random.key(1)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(32, 5)))
  t = jnp.asarray((rng.random(32) < 0.5).astype(np.int32))
  w = jnp.asarray(rng.normal(size=5))
  val, gw = jax.value_and_grad(lambda w: E.ensloss(key, x @ w, t))(w)
  y = 2.0 * np.asarray(t) - 1
  z = y * np.asarray(x @ w)
  g = np.asarray(E.calibrated_derivatives(key, jnp.asarray(z)))
  np.testing.assert_allclose(float(val), np.mean(g * z), rtol=1e-13)
  np.testing.assert_allclose(np.asarray(gw), np.asarray(x).T @ (g * y) / 32, rtol=1e-12)


@pytest.mark.parametrize("kw", [dict(), dict(lam=0.5), dict(lam=-0.5), dict(tail="inverse_log_squared"),
                                dict(tail=None, clip=None), dict(lam_redraw=True)])
def test_d1_d2_on_every_draw(kw):
  b, draws = 96, 200
  rng = np.random.default_rng(1)
  z = jnp.asarray(np.round(rng.normal(size=b) * 3, 1))  # rounding makes ties
  mask = jnp.asarray(rng.random(b) < 0.9)
  lam_redraw = kw.pop("lam_redraw", False)

  def one(key):
    k, lam = E._redraw_lam(key, kw.get("lam", 0.0), lam_redraw)  # pylint: disable=protected-access
    return E.calibrated_derivatives(k, z, mask=mask, **{**kw, "lam": lam})

  g = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(5), draws)))
  zr, gr = np.asarray(z)[np.asarray(mask)], g[:, np.asarray(mask)]
  order = np.argsort(zr, kind="stable")
  # D1: non-decreasing along increasing margins (ties included).
  assert np.all(np.diff(gr[:, order], axis=1) >= 0), "D1 violated"
  # D2: strictly negative everywhere, in particular at the smallest nonnegative margin.
  assert np.all(gr <= -1e-6 + 1e-12), "D2 violated"
  assert np.all(g[:, ~np.asarray(mask)] == 0.0)


def test_same_key_same_draw_and_fresh_keys_differ():
  logits, labels = _batch(2, 64)
  f = jax.jit(lambda k: jax.grad(lambda o: E.ensloss(k, o, labels))(jnp.asarray(logits)))
  a, b = f(jax.random.key(9)), f(jax.random.key(9))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  c = f(jax.random.fold_in(jax.random.key(9), 1))
  assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_tie_rule_is_stable_position_order(x64):
  z = jnp.zeros(6)  # all tied: the i-th example gets the i-th smallest draw
  key = jax.random.key(4)
  g = np.asarray(E.calibrated_derivatives(key, z, shift=0.0))
  assert np.all(np.diff(g) >= 0)
  xi = np.asarray(jax.random.normal(key, (6,), jnp.float64))
  np.testing.assert_allclose(g, np.maximum(np.sort(-np.exp(xi)), -1.0), rtol=1e-14)


def test_mask_equals_the_unpadded_batch(x64):
  """The n real examples are matched with n draws: same as running the unpadded batch with those draws."""
  b, n = 40, 29
  logits, labels = _batch(11, b)
  z = (2 * labels - 1) * logits
  mask = np.zeros(b, bool)
  mask[:n] = True
  key = jax.random.key(12)
  g = np.asarray(E.calibrated_derivatives(key, jnp.asarray(z), mask=jnp.asarray(mask)))
  xi = np.asarray(jax.random.normal(key, (b,), jnp.float64))[:n]
  np.testing.assert_allclose(g[:n], numpy_reference(xi, z[:n], lam=0.0, clip=-1.0, tail="inverse", shift=1e-6),
                             rtol=1e-14)
  # Padding examples with extreme margins do not move the real examples' derivatives.
  z2 = z.copy()
  z2[n:] = -1e6
  g2 = np.asarray(E.calibrated_derivatives(key, jnp.asarray(z2), mask=jnp.asarray(mask)))
  np.testing.assert_array_equal(g2, g)


def test_lower_half_gets_slope_minus_one():
  """Spec [derived]: with lambda = 0 about half the draws exceed 1 in magnitude and are clipped to -1; they
  go to the lowest margins."""
  b = 128
  z = jnp.asarray(np.random.default_rng(0).normal(size=b))
  g = np.asarray(jax.vmap(lambda k: E.calibrated_derivatives(k, z))(jax.random.split(jax.random.key(0), 400)))
  at_clip = np.isclose(g, -1.0 - 1e-6, rtol=0, atol=1e-7)
  frac = at_clip.mean()
  assert 0.47 < frac < 0.53, frac
  order = np.argsort(np.asarray(z))
  # The clipped ones are a prefix of the margin order in every draw.
  s = at_clip[:, order]
  assert np.all(s[:, :-1] >= s[:, 1:])


def test_draw_lambda_period():
  key = jax.random.key(0)
  lams = [float(E.draw_lambda(key, e, 3)) for e in range(7)]
  assert lams[0] == lams[1] == lams[2] and lams[3] == lams[4] == lams[5] and lams[0] != lams[3]
  assert all(-1 <= v <= 1 for v in lams)
  with pytest.raises(ValueError, match="period"):
    E.draw_lambda(key, 0, 0)
  # Used as a traced lambda, each epoch block has its own draw.
  z = jnp.linspace(-1, 2, 16)
  g = jax.jit(lambda e: E.calibrated_derivatives(key, z, lam=E.draw_lambda(key, e, 2)))(jnp.asarray(4))
  assert np.all(np.asarray(g) < 0)


def test_bad_inputs_are_rejected():
  key = jax.random.key(0)
  o = jnp.zeros(4)
  with pytest.raises(ValueError, match="labels.*0, 1"):
    E.ensloss(key, o, jnp.array([-1, 1, 1, -1]))
  with pytest.raises(ValueError, match="labels"):
    E.ensloss(key, o, jnp.array([0, 1, 2, 1]))
  with pytest.raises(ValueError, match="logits"):
    E.ensloss(key, jnp.zeros((4, 2)), jnp.array([0, 1, 1, 0]))
  with pytest.raises(ValueError, match="same number"):
    E.ensloss(key, o, jnp.array([0, 1, 1]))
  with pytest.raises(ValueError, match="labels"):
    E.ensloss(key, o, jnp.zeros((4, 2), jnp.int32))
  with pytest.raises(ValueError, match="margins"):
    E.calibrated_derivatives(key, jnp.zeros((4, 1)))
  for kw, match in (({"tail": "inverse_log"}, "tail"), ({"clip": 1.0}, "`clip` must be negative")):
    with pytest.raises(ValueError, match=match):
      E.population_derivative(o, jnp.full(4, 0.5), **kw)
  with pytest.raises(ValueError, match="floating"):
    E.calibrated_derivatives(key, jnp.zeros(4, jnp.int32))
  with pytest.raises(ValueError, match="tail"):
    E.calibrated_derivatives(key, o, tail="log")
  with pytest.raises(ValueError, match="clip"):
    E.calibrated_derivatives(key, o, clip=0.5)
  with pytest.raises(ValueError, match="shift"):
    E.calibrated_derivatives(key, o, shift=-1.0)
  with pytest.raises(ValueError, match="mask"):
    E.calibrated_derivatives(key, o, mask=jnp.ones(3, bool))
  with pytest.raises(ValueError, match="tail"):
    E.ensloss_loss(tail="bad")
  with pytest.raises(ValueError, match="monitor_loss"):
    E.ensloss_loss()(o, jnp.array([0, 1, 1, 0]), key=None, mask=None)


def test_population_derivative_properties(x64):
  z = jnp.linspace(-5, 50, 2001)
  cdf = jax.scipy.stats.norm.cdf(z, 1.0, 2.0)
  g = np.asarray(E.population_derivative(z, cdf))
  assert np.all(np.diff(g) >= -1e-15) and np.all(g < 0)


def test_adapter_plugs_into_the_training_core():
  from jaxfair import models, training
  from jaxfair.data import load_breast_cancer
  from jaxfair.training import components

  data = load_breast_cancer(seed=0)
  model = models.mlp(data.input_shape, 1, width=16, depth=1)
  loss = E.ensloss_loss()
  # Under the uniform rule the objective's gradient wrt the outputs is exactly g y / n.
  rng = np.random.default_rng(0)
  out = jnp.asarray(rng.normal(size=(24, 1)), jnp.float32)
  t = jnp.asarray(data.y_train[:24])
  mask = jnp.asarray(np.arange(24) < 20)
  key = jax.random.key(3)
  w = components.masked_uniform(mask)
  grad = jax.grad(lambda o: jnp.sum(w * jnp.where(mask, loss(o, t, key=key, mask=mask), 0.0)))(out)
  ref = jax.grad(lambda o: E.ensloss(key, o, t, mask=mask))(out)
  np.testing.assert_allclose(np.asarray(grad), np.asarray(ref), rtol=1e-6, atol=1e-9)

  program = training.make_train(model=model, loss=loss, monitor_loss=losses.logistic, data=data,
                                batch_size=64, optimizer=optax.adam(3e-3))
  state, metrics, final = jax.jit(lambda k: training.train(program, k, {}, 120))(jax.random.key(0))
  # The monitored loss is the real logistic loss (positive, decreasing), not the surrogate value.
  loss_curve = np.asarray(metrics["loss"])
  assert np.all(loss_curve > 0) and loss_curve[-10:].mean() < loss_curve[:10].mean()
  assert not np.allclose(np.asarray(metrics["objective"]), loss_curve)  # the surrogate value is not logged as "loss"
  assert float(final["test_accuracy"]) > 0.9
  assert np.isfinite(float(final["test_loss"]))

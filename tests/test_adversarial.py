"""Tests for jaxfair.adversarial (PGD, DONE objective, implicit hypergradient, robust evaluation) and
jaxfair.resnet."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfair import adversarial as adv
from jaxfair import reweighting


def _linear_ce(params, x, y):
  logits = x.reshape(x.shape[0], -1) @ params["w"] + params["b"][None, :]
  return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], -1)[:, 0]


def _mlp_ce(params, x, y):
  h = jnp.tanh(x.reshape(x.shape[0], -1) @ params["w1"] + params["b1"][None, :])
  logits = h @ params["w2"]
  return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], -1)[:, 0]


def _problem(n=32, d=16, k=4, seed=0, dtype=jnp.float32):
  kx, ky, kw = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.uniform(kx, (n, d), dtype)
  x = x.at[:, 0].set(0.0).at[:, 1].set(1.0)  # coordinates on the box boundary
  y = jax.random.randint(ky, (n,), 0, k)
  params = {"w": jax.random.normal(kw, (d, k), dtype), "b": jnp.zeros((k,), dtype)}
  return params, x, y


# ------------------------------------------------------------------------------------------------------------
# PGD.


@pytest.mark.parametrize("norm,radii", [("linf", (8 / 255, 0.3, 3.0)), ("l2", (0.5, 10.0))])
@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_feasible_exactly(norm, radii, random_start):
  params, x, y = _problem(n=64)
  eps = jnp.asarray(radii, jnp.float32)
  attack = jax.jit(jax.vmap(lambda e: adv.pgd_attack(_linear_ce, params, x, y, jax.random.key(1), eps=e,
                                                     step_size=e / 2, num_steps=7, norm=norm,
                                                     random_start=random_start)))
  x_adv = np.asarray(attack(eps))  # (radii, n, d)
  assert x_adv.shape == (len(radii),) + x.shape and x_adv.dtype == x.dtype
  d = x_adv - np.asarray(x)[None]
  size = np.abs(d).max(axis=2) if norm == "linf" else np.sqrt((d * d).sum(axis=2))
  assert np.all(size <= np.asarray(eps)[:, None]), (size - np.asarray(eps)[:, None]).max()
  assert np.all(x_adv >= 0.0) and np.all(x_adv <= 1.0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_bf16_feasible_against_eps_itself(norm):
  """bf16 rounds 8/255 up (to 0.031494); the attack must stay within the real eps, measured exactly."""
  params, x, y = _problem(n=256, d=32)
  x = x.at[:, 2].set(8 / 255).astype(jnp.bfloat16)  # a coordinate whose lower interval end rounds below 0
  eps = 8 / 255 if norm == "linf" else 0.5
  x_adv = adv.pgd_attack(_linear_ce, params, x, y, jax.random.key(0), eps=eps, step_size=eps / 4, num_steps=5,
                         norm=norm)
  d = np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)
  size = np.abs(d).max(axis=1) if norm == "linf" else np.sqrt((d * d).sum(axis=1))
  assert x_adv.dtype == jnp.bfloat16 and size.max() <= np.float32(eps)
  assert size.max() > 0.9 * eps  # the budget is used, not shrunk away


@pytest.mark.parametrize("eps", [0.5, 0.1])
def test_bf16_l2_projection_keeps_the_budget(eps):
  """Rounding to bf16 adds noise comparable to a small eps over 3072 coordinates; the exact projection must stay
  feasible without shrinking the perturbation far below eps (a weaker attack overstates robustness)."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(0.05, 0.95, (32, 3072)), jnp.bfloat16)
  far = x + jnp.asarray(rng.normal(size=(32, 3072)), jnp.bfloat16)
  d = np.asarray(adv.project(far, x, eps=eps, norm="l2"), np.float64) - np.asarray(x, np.float64)
  size = np.sqrt((d * d).sum(axis=1))
  assert size.max() <= np.float32(eps) and np.median(size) > 0.9 * eps, (size.max(), np.median(size))


@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e30])
def test_pgd_l2_step_has_step_size_length_for_tiny_and_huge_gradients(scale):
  """||g||^2 underflows (or overflows) in float32 for gradients near 1e-20 (1e20): the step must not."""
  x = jnp.full((2, 8), 0.5)
  direction = jnp.arange(16.0).reshape(2, 8) - 7.5
  linear = lambda p, xa, y: scale * jnp.sum(direction * xa, axis=1)  # noqa: E731
  x_adv = adv.pgd_attack(linear, {}, x, jnp.zeros(2), jax.random.key(0), eps=1.0, step_size=0.1, num_steps=1,
                         norm="l2", random_start=False)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(x_adv - x), axis=1), 0.1, rtol=1e-5)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_pgd_increases_the_loss(norm, eps):
  params, x, y = _problem(n=128)
  clean = _linear_ce(params, x, y)
  x_adv = adv.pgd_attack(_linear_ce, params, x, y, jax.random.key(0), eps=eps, step_size=eps / 4, num_steps=10,
                         norm=norm)
  # Per example: at least as large as from a random point of the ball (where PGD started).
  x_rand = adv.pgd_attack(_linear_ce, params, x, y, jax.random.key(0), eps=eps, step_size=eps / 4,
                          num_steps=0, norm=norm)
  attacked = _linear_ce(params, x_adv, y)
  assert float(attacked.mean()) > float(clean.mean()) + 0.1
  assert np.all(np.asarray(attacked) >= np.asarray(_linear_ce(params, x_rand, y)) - 1e-5)
  # For a linear model the L_inf optimum (without the box) moves each coordinate by eps against the margin
  # direction; PGD must reach most of that increase.
  assert float(attacked.mean()) > float(clean.mean()) + 0.5 * float((attacked - clean).max())


def test_pgd_vmap_over_eps_matches_loop_and_is_stop_gradiented():
  params, x, y = _problem(n=16)
  key = jax.random.key(3)
  eps_values = jnp.asarray([0.05, 0.1, 0.2])
  attack = lambda e: adv.pgd_attack(_linear_ce, params, x, y, key, eps=e, step_size=e / 4, num_steps=5)
  batched = jax.jit(jax.vmap(attack))(eps_values)
  single = jax.jit(attack)
  for i, e in enumerate([0.05, 0.1, 0.2]):
    np.testing.assert_allclose(batched[i], single(jnp.float32(e)), rtol=1e-6, atol=1e-6)

  # Danskin: the gradient through `adversarial_losses` is the gradient at the (fixed) attacked points.
  def f(p):
    return adv.adversarial_losses(_linear_ce, p, x, y, key, eps=0.1, step_size=0.025, num_steps=5).sum()

  x_adv = adv.pgd_attack(_linear_ce, params, x, y, key, eps=0.1, step_size=0.025, num_steps=5)
  g = jax.jit(jax.grad(f))(params)
  g_ref = jax.grad(lambda p: _linear_ce(p, x_adv, y).sum())(params)
  np.testing.assert_allclose(g["w"], g_ref["w"], rtol=1e-5, atol=1e-6)


def test_pgd_bad_input_names_the_argument():
  params, x, y = _problem(n=4)
  kw = dict(eps=0.1, step_size=0.01, num_steps=2)
  with pytest.raises(ValueError, match="norm"):
    adv.pgd_attack(_linear_ce, params, x, y, jax.random.key(0), norm="l1", **kw)
  with pytest.raises(ValueError, match="eps"):
    adv.pgd_attack(_linear_ce, params, x, y, jax.random.key(0), **{**kw, "eps": -1.0})
  with pytest.raises(ValueError, match="num_steps"):
    adv.pgd_attack(_linear_ce, params, x, y, jax.random.key(0), **{**kw, "num_steps": 2.5})
  with pytest.raises(ValueError, match="bounds"):
    adv.pgd_attack(_linear_ce, params, x, y, jax.random.key(0), bounds=(1.0, 0.0), **kw)
  with pytest.raises(ValueError, match="same number of examples"):
    adv.pgd_attack(_linear_ce, params, x, y[:2], jax.random.key(0), **kw)
  with pytest.raises(ValueError, match="gradient"):
    adv.done(1.0, gradient="exact")
  with pytest.raises(ValueError, match="linf"):
    adv.done(1.0, gradient="implicit", norm="l2")


_ATTACK = dict(eps=8 / 255, step_size=2 / 255, num_steps=1)
_logits = lambda p, xx: xx.reshape(xx.shape[0], -1) @ p["w"] + p["b"][None, :]
_evaluate = functools.partial(adv.robust_evaluate, _logits, num_classes=4, num_steps=1)
_BAD_INPUTS = {  # name: (call(params, x, y, key), message pattern)
    "pgd_x_outside_bounds": (lambda p, x, y, k: adv.pgd_attack(_linear_ce, p, 255 * x, y, k, **_ATTACK),
                             r"`x` must lie in `bounds` \(0.0, 1.0\); found \[0, 255\].*bounds=\(0, 255\)"),
    "evaluate_x_outside_bounds": (lambda p, x, y, k: _evaluate(p, 255 * x, y, k), r"`x` must lie in `bounds`"),
    "project_negative_eps": (lambda p, x, y, k: adv.project(x + 0.5, x, eps=-1.0), r"`eps` must be >= 0"),
    "project_reversed_bounds": (lambda p, x, y, k: adv.project(x, x, eps=0.1, bounds=(1.0, 0.0)), r"`bounds`"),
    "project_shape": (lambda p, x, y, k: adv.project(x[:1], x[0], eps=0.1),
                      r"`x_adv` \(shape \(1, 16\)\) must have the shape of `x`"),
    "implicit_config": (lambda p, x, y, k: adv.implicit_attack(_linear_ce, p, x, y, k, **_ATTACK,
                                                               config=adv.BarrierConfig(mu=-1.0)), r"`config.mu`"),
    "solve_delta0_shape": (lambda p, x, y, k: adv.solve_barrier_attack(_linear_ce, p, x, y, x[:, :1], eps=0.1),
                           r"`delta0` \(shape \(8, 1\)\) must have the shape of `x`"),
    "objective_delta_shape": (lambda p, x, y, k: adv.barrier_objective(_linear_ce, p, x, y, x[:, :1], eps=0.1),
                              r"`delta` \(shape"),
    "tail_fraction_30": (lambda p, x, y, k: adv.tail_accuracy(jnp.ones(4), jnp.ones(4), 30),
                         r"`fraction` must be in \(0, 1\]"),
    "tail_fraction_negative": (lambda p, x, y, k: adv.tail_accuracy(jnp.ones(4), jnp.ones(4), fraction=-0.3),
                               r"`fraction`"),
    "evaluate_tail_fraction": (lambda p, x, y, k: _evaluate(p, x, y, k, tail_fraction=30), r"`tail_fraction`"),
    "evaluate_batch_size": (lambda p, x, y, k: _evaluate(p, x, y, k, batch_size=0),
                            r"`batch_size` must be a positive int"),
    "evaluate_empty": (lambda p, x, y, k: _evaluate(p, x[:0], y[:0], k), r"`x` is empty"),
    "evaluate_y_2d": (lambda p, x, y, k: _evaluate(p, x, y[:, None], k), r"`y` must have 1 dimensions"),
}


@pytest.mark.parametrize("call,match", list(_BAD_INPUTS.values()), ids=list(_BAD_INPUTS))
def test_bad_input_names_the_argument_and_the_fix(call, match):
  params, x, y = _problem(n=8)
  with pytest.raises(ValueError, match=match):
    call(params, x, y, jax.random.key(0))


def test_value_checks_allow_rounding_and_skip_tracers():
  params, x, y = _problem(n=8)
  key = jax.random.key(0)
  # Rounding just past the box is tolerated; 0..255 inputs are fine with matching bounds.
  adv.pgd_attack(_linear_ce, params, x.at[0, 1].set(1.0 + 1e-7), y, key, **_ATTACK)
  x255 = adv.pgd_attack(_linear_ce, params, 255 * x, y, key, **{**_ATTACK, "eps": 8.0}, bounds=(0, 255))
  assert float(jnp.max(jnp.abs(x255 - 255 * x))) <= 8.0
  # Under jit the values are tracers: no value check, no error (shape checks still apply).
  jax.jit(lambda xx: adv.pgd_attack(_linear_ce, params, xx, y, key, **_ATTACK))(255 * x)
  np.testing.assert_allclose(adv.project(x + 0.5, x, eps=0.1), jnp.minimum(x + 0.1, 1.0), atol=1e-6)


# ------------------------------------------------------------------------------------------------------------
# DONE objective: weights and value against NumPy.


def _np_ce(w, b, x, y):
  logits = x @ w + b
  logits = logits - logits.max(axis=1, keepdims=True)
  logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  return -logp[np.arange(len(y)), y]


def test_done_objective_matches_numpy_per_batch_and_ema():
  params, x, y = _problem(n=24)
  r, beta = 0.7, 0.3
  mask = np.ones(24, np.float32)
  mask[-3:] = 0  # padding
  for beta_arg in (None, beta):
    config = adv.done(r, beta=beta_arg, eps=0.1, step_size=0.025, num_steps=3)
    state = config.weighting.init()
    objective = jax.jit(lambda key, state, config=config: adv.done_objective(
        _linear_ce, params, x, y, key, state, config=config, mask=jnp.asarray(mask)))
    perturb = jax.jit(lambda key, config=config: config.perturbation(_linear_ce, params, x, y, key))
    u = None
    for step in range(3):
      key = jax.random.key(step)
      (value, (w, losses, state)) = objective(key, state)
      x_adv = np.asarray(perturb(key))
      l_np = _np_ce(np.asarray(params["w"], np.float64), np.asarray(params["b"], np.float64),
                    x_adv.astype(np.float64), np.asarray(y))
      np.testing.assert_allclose(losses, l_np, rtol=2e-5, atol=2e-5)
      e = np.exp(l_np / r) * mask
      if beta_arg is None:
        w_np = e / e.sum()
      else:  # u_t = (1 - beta) u_{t-1} + beta mean_B e^{l/r}, u_1 = mean; w = e^{l/r} / (B u_t)
        batch_mean = e.sum() / mask.sum()
        u = batch_mean if u is None else (1 - beta) * u + beta * batch_mean
        w_np = e / (mask.sum() * u)
      np.testing.assert_allclose(w, w_np, rtol=2e-5, atol=1e-7)
      np.testing.assert_allclose(value, np.sum(w_np * l_np), rtol=2e-5)
      assert np.all(np.asarray(w)[-3:] == 0)


def test_done_gradient_is_gradient_of_kl_dro_value_at_fixed_attack():
  params, x, y = _problem(n=16)
  r = 0.5
  config = adv.done(r, eps=0.1, step_size=0.025, num_steps=3)
  key = jax.random.key(0)
  g, _ = jax.jit(lambda p: jax.grad(adv.done_objective, argnums=1, has_aux=True)(
      _linear_ce, p, x, y, key, config.weighting.init(), config=config))(params)
  x_adv = jax.jit(lambda p: config.perturbation(_linear_ce, p, x, y, key))(params)
  g_ref = jax.grad(lambda p: reweighting.kl_dro_value(_linear_ce(p, x_adv, y), r))(params)
  np.testing.assert_allclose(g["w"], g_ref["w"], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("gradient", ["danskin", "implicit"])
def test_done_plugs_into_the_training_step(gradient):
  from jaxfair import models, training, losses  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from jaxfair.data import load_digits  # pylint: disable=g-import-not-at-top
  data = load_digits(image=True)
  data = data._replace(x_train=data.x_train[:256], y_train=data.y_train[:256], x_test=data.x_test[:64],
                       y_test=data.y_test[:64])
  config = adv.done(1.0, beta=0.1, eps=0.1, step_size=0.05, num_steps=2, gradient=gradient,
                    barrier=adv.BarrierConfig(mu=1e-3, lam=5.0, newton_steps=2, cg_steps=3, backward_cg_steps=3))
  program = training.make_train(model=models.mlp((8, 8, 1), 10, width=16), loss=losses.softmax_cross_entropy,
                                data=data, batch_size=32, optimizer=optax.adam(1e-2),
                                weighting=config.weighting, perturb=config.perturbation)
  state = program.init(jax.random.key(0), {})
  state, metrics = jax.jit(program.run_chunk, static_argnums=3)(state, {}, program.data, 3)
  assert np.all(np.isfinite(metrics["loss"]))
  assert float(metrics["weight_max_n"][-1]) > 1.0  # non-uniform weights


# ------------------------------------------------------------------------------------------------------------
# Implicit hypergradient vs finite differences (float64).


def test_implicit_hypergradient_matches_finite_differences(x64):
  n, d, hidden, k = 4, 8, 6, 3
  kx, ky, k1, k2 = jax.random.split(jax.random.key(5), 4)
  x = jax.random.uniform(kx, (n, d), jnp.float64).at[:, 0].set(0.0)
  y = jax.random.randint(ky, (n,), 0, k)
  params = {"w1": jax.random.normal(k1, (d, hidden), jnp.float64) / np.sqrt(d),
            "b1": jnp.zeros((hidden,), jnp.float64),
            "w2": jax.random.normal(k2, (hidden, k), jnp.float64) / np.sqrt(hidden)}
  cfg = adv.BarrierConfig(mu=1e-3, lam=8.0, newton_steps=30, cg_steps=2 * d, backward_cg_steps=2 * d)
  eps, r = 0.2, 0.5
  key = jax.random.key(0)

  def phi_implicit(p):  # DONE objective through the implicit perturbation, per-batch KL-DRO weights
    config = adv.done(r, gradient="implicit", eps=eps, step_size=0.05, num_steps=3, barrier=cfg)
    return adv.done_objective(_mlp_ce, p, x, y, key, config.weighting.init(), config=config)[0]

  @jax.jit
  def phi_resolved(p):  # Phi(theta) = r log mean exp(l_i(theta, delta*_i(theta)) / r), lower level re-solved
    x_pgd = adv.pgd_attack(_mlp_ce, params, x, y, key, eps=eps, step_size=0.05, num_steps=3)
    dstar = adv.solve_barrier_attack(_mlp_ce, p, x, y, x_pgd - x, eps=eps, config=cfg)
    return reweighting.kl_dro_value(_mlp_ce(p, x + dstar, y), r)

  g = jax.jit(jax.grad(phi_implicit))(params)
  flat = lambda t: jnp.concatenate([jnp.ravel(v) for v in jax.tree.leaves(t)])
  for i in range(2):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(10 + i), len(leaves))
    v = jax.tree.unflatten(tree, [jax.random.normal(kk, l.shape, l.dtype) for kk, l in zip(keys, leaves)])
    h = 1e-5
    fd = (phi_resolved(jax.tree.map(lambda a, b: a + h * b, params, v))
          - phi_resolved(jax.tree.map(lambda a, b: a - h * b, params, v))) / (2 * h)
    np.testing.assert_allclose(jnp.vdot(flat(g), flat(v)), fd, rtol=1e-5)
  # the formula's premise: the lower level is solved to stationarity (a small interior delta is far from it;
  # delta = 0 touches the interval's end on the blank coordinate)
  x_pgd = adv.pgd_attack(_mlp_ce, params, x, y, key, eps=eps, step_size=0.05, num_steps=3)
  dstar = adv.solve_barrier_attack(_mlp_ce, params, x, y, x_pgd - x, eps=eps, config=cfg)
  residual = functools.partial(adv.barrier_residual, _mlp_ce, params, x, y, eps=eps, config=cfg)
  assert np.all(residual(dstar) < 1e-8) and np.all(residual(jnp.full_like(x, 0.01)) > 0.1)
  assert np.all(np.isinf(residual(jnp.zeros_like(x))))


# ------------------------------------------------------------------------------------------------------------
# Sharded == unsharded (4 fake CPU devices).


def test_sharded_equals_unsharded():
  assert jax.device_count() >= 4
  params, x, y = _problem(n=32)
  config = adv.done(0.5, eps=0.1, step_size=0.025, num_steps=4)
  key = jax.random.key(2)
  mask = jnp.ones((32,), jnp.float32)

  @jax.jit
  def step(params, x, y, mask):
    (value, (w, losses, _)), g = jax.value_and_grad(adv.done_objective, argnums=1, has_aux=True)(
        _linear_ce, params, x, y, key, config.weighting.init(), config=config, mask=mask)
    return value, w, g

  ref = step(params, x, y, mask)
  mesh = jax.make_mesh((4,), ("batch",), axis_types=(jax.sharding.AxisType.Explicit,))
  with jax.set_mesh(mesh):
    sh = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    xs, ys, ms = jax.device_put(x, sh), jax.device_put(y, sh), jax.device_put(mask, sh)
    out = step(params, xs, ys, ms)
  assert len(xs.sharding.device_set) == 4
  for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(out)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------------------
# Robust evaluation.


def test_robust_evaluate_matches_numpy():
  params, x, y = _problem(n=50, k=4)
  logits_fn = lambda p, xx: xx.reshape(xx.shape[0], -1) @ p["w"] + p["b"][None, :]
  key = jax.random.key(4)
  m = jax.jit(functools.partial(adv.robust_evaluate, logits_fn, num_classes=4, eps=0.05, step_size=0.02,
                                num_steps=3, batch_size=50))(params, x, y, key)
  x_adv = adv.pgd_attack(_linear_ce, params, x, y, jax.random.fold_in(key, 0), eps=0.05, step_size=0.02,
                         num_steps=3)
  yn = np.asarray(y)
  clean = np.argmax(np.asarray(logits_fn(params, x)), 1) == yn
  robust = np.argmax(np.asarray(logits_fn(params, x_adv)), 1) == yn
  per_class = np.array([robust[yn == c].mean() for c in range(4)])
  np.testing.assert_allclose(m["sa"], clean.mean(), atol=1e-6)
  np.testing.assert_allclose(m["ra"], robust.mean(), atol=1e-6)
  np.testing.assert_allclose(m["per_class_robust"], per_class, atol=1e-6)
  np.testing.assert_allclose(m["ra_tail"], np.sort(per_class)[:2].mean(), atol=1e-6)  # ceil(0.3 * 4) = 2
  assert float(m["ra"]) <= float(m["sa"]) + 1e-6
  # Padding (a batch size that does not divide n) changes nothing but the attack keys: with no attack steps
  # and no random start the results must be identical.
  kw = dict(num_classes=4, eps=0.05, step_size=0.02, num_steps=0, random_start=False)
  a = adv.robust_evaluate(logits_fn, params, x, y, key, batch_size=50, **kw)
  b = adv.robust_evaluate(logits_fn, params, x, y, key, batch_size=16, **kw)
  for name in ("sa", "ra", "per_class_robust", "class_counts"):
    np.testing.assert_allclose(a[name], b[name], atol=1e-6)


def test_tail_accuracy_skips_absent_classes():
  per_class = jnp.asarray([0.9, 0.1, 0.5, 0.0, 0.7])
  counts = jnp.asarray([10.0, 10.0, 10.0, 0.0, 10.0])
  np.testing.assert_allclose(adv.tail_accuracy(per_class, counts, 0.3), (0.1 + 0.5) / 2)


# ------------------------------------------------------------------------------------------------------------
# ResNet-18.


def test_resnet18_shapes_and_parameter_count():
  from jaxfair import resnet  # pylint: disable=g-import-not-at-top
  full = resnet.resnet18((32, 32, 3), 10)
  params, _ = jax.eval_shape(full.init, jax.random.key(0))
  assert sum(p.size for p in jax.tree.leaves(params)) == 11_173_962  # the standard CIFAR ResNet-18
  # Shapes only (abstract evaluation): compiling even a width-4 ResNet-18 init costs ~20 s of CPU.
  small = resnet.resnet18((8, 8, 1), 10, width=4)
  params, state = jax.eval_shape(small.init, jax.random.key(0))
  out, new_state = jax.eval_shape(lambda p, s, x, m: small.apply(p, s, x, train=True, mask=m), params, state,
                                  jax.ShapeDtypeStruct((3, 8, 8, 1), jnp.float32),
                                  jax.ShapeDtypeStruct((3,), jnp.bool_))
  assert out.shape == (3, 10)
  assert jax.tree.structure(new_state) == jax.tree.structure(state)

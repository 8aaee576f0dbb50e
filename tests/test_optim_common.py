"""The shared optimizer suite (after optax.contrib's `_common_test.py`), over jaxfair's adamp, sgdp, exadam and
optax.adam as a control: convergence on parabola / Rosenbrock / 2x2 matrix / mixed 1-D+2-D targets, no
recompilation, `inject_hyperparams` equality, dtype preservation, `MultiSteps`, schedules, extra args,
`tree_map_params`, and state shapes/dtypes/shardings on a 4-device mesh."""
from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxfair import optim

# name -> (factory, kwargs for the convergence runs)
OPTIMIZERS = {
    "adamp": (optim.adamp, dict(learning_rate=1e-2)),
    "adamp_nesterov_wd": (optim.adamp, dict(learning_rate=1e-2, nesterov=True, weight_decay=1e-4)),
    "sgdp": (optim.sgdp, dict(learning_rate=1e-3, momentum=0.9)),
    "exadam": (optim.exadam, dict(learning_rate=1e-2)),
    "exadam_dynamic": (optim.exadam, dict(learning_rate=3e-3, dynamic_step_size=True)),
    "optax.adam": (optax.adam, dict(learning_rate=1e-2)),
}
MAIN = ("adamp", "sgdp", "exadam", "optax.adam")
NUM_STEPS = 10_000


def _parabola(dtype):
  final = jnp.array([1.0, -1.0, 1.0], dtype)
  return jnp.array([-1.0, 10.0, 1.0], dtype), final, lambda p: jnp.sum((p - final) ** 2)


def _rosenbrock(dtype):
  a, b = 1.0, 100.0
  return (jnp.array([0.0, 0.0], dtype), jnp.array([a, a**2], dtype),
          lambda p: (a - p[0]) ** 2 + b * (p[1] - p[0] ** 2) ** 2)


def _matrix_parabola(dtype):
  final = jnp.array([[3.0, -2.0], [1.0, 4.0]], dtype)
  return jnp.zeros((2, 2), dtype), final, lambda p: jnp.sum((p - final) ** 2)


def _mixed(dtype):
  f1, f2 = jnp.array([1.0, -1.0, 2.0], dtype), jnp.array([[1.0, 0.0], [-1.0, 1.0]], dtype)
  return ((jnp.zeros(3, dtype), jnp.zeros((2, 2), dtype)), (f1, f2),
          lambda p: jnp.sum((p[0] - f1) ** 2) + jnp.sum((p[1] - f2) ** 2))


TARGETS = {"parabola": _parabola, "rosenbrock": _rosenbrock, "matrix": _matrix_parabola, "mixed": _mixed}


def _make(name, **overrides):
  factory, kwargs = OPTIMIZERS[name]
  return factory(**{**kwargs, **overrides})


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_converges(name, target):
  init, final, obj = TARGETS[target](jnp.float32)
  # Rosenbrock's valley needs a smaller step for the momentum/sign-like methods.
  overrides = {}
  if target == "rosenbrock" and name.startswith("exadam"):
    overrides = dict(learning_rate=OPTIMIZERS[name][1]["learning_rate"] / 3)
  opt = _make(name, **overrides)

  @jax.jit
  def run(params):
    state = opt.init(params)
    state = optax.tree.map_params(opt, lambda v: v, state)  # tree_map_params works (a no-op change)

    def body(carry, _):
      params, state = carry
      updates, state = opt.update(jax.grad(obj)(params), state, params)
      return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(body, (params, state), length=NUM_STEPS)
    return params

  got = run(init)
  for g, f in zip(jax.tree.leaves(got), jax.tree.leaves(final)):
    np.testing.assert_allclose(g, f, rtol=3e-2, atol=3e-2, err_msg=f"{name} on {target}")


@pytest.mark.parametrize("name", MAIN)
def test_no_recompilation_and_extra_args(name):
  opt = _make(name)
  init, _, obj = _rosenbrock(jnp.float32)
  traces = []

  @jax.jit
  def step(params, state):
    traces.append(1)
    updates, state = opt.update(jax.grad(obj)(params), state, params, unexpected_extra_arg=1)
    return optax.apply_updates(params, updates), state

  params, state = step(init, opt.init(init))
  params, state = step(params, state)
  params, state = step(params, state)
  assert len(traces) == 1, "the optimizer recompiles on the second call"


def _inject_case(name):
  return {
      "adamp": (optim.adamp, dict(learning_rate=1e-3, weight_decay=1e-2, nesterov=True)),
      "sgdp": (optim.sgdp, dict(learning_rate=1e-2, momentum=0.9, weight_decay=1e-2)),
      "exadam": (optim.exadam, dict(learning_rate=1e-3, weight_decay=1e-2, dynamic_step_size=True)),
      "optax.adam": (optax.adam, dict(learning_rate=1e-3)),
  }[name]


@pytest.mark.parametrize("name, static", [(n, True) for n in MAIN] + [("adamp", False), ("sgdp", False)])
def test_inject_hyperparams_gives_identical_results(name, static):
  """static=False: channel_axis is injected as a traced int (the branchless all-axes path)."""
  factory, kwargs = _inject_case(name)
  static_args = ("channel_axis",) if static and name in ("adamp", "sgdp") else ()
  opt = factory(**kwargs)
  opt_inject = optax.inject_hyperparams(factory, static_args=static_args)(**kwargs)
  # Gradients orthogonal to the weights per output channel, so the projection fires on the 2-D/3-D leaves.
  params = [-jnp.ones((2, 3)), jnp.ones((2, 5, 2)), jnp.ones(4)]
  grads = [jnp.array([[1.0, -1.0, 0.0], [0.5, 0.0, -0.5]]), -jnp.ones((2, 5, 2)), jnp.arange(4.0)]

  def two_steps(opt):
    state = opt.init(params)
    u1, state = opt.update(grads, state, params)
    p1 = optax.apply_updates(params, u1)
    u2, state = opt.update(grads, state, p1)
    return u1, u2, state

  u1, u2, state = jax.jit(functools.partial(two_steps, opt))()
  v1, v2, state_inject = jax.jit(functools.partial(two_steps, opt_inject))()
  # optax's own tolerance (its adam differs by ~1e-5 relative: the injected f32 betas round differently).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), (u1, u2), (v1, v2))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), state,
               state_inject.inner_state)


@pytest.mark.parametrize("name", MAIN)
def test_inject_hyperparams_with_bf16_params(name):
  """optax casts injected hyperparameters to the params' dtype, where b2 = 0.999 becomes 1 in bf16 (NaN updates
  under jit): the eager check says so and names the fix, hyperparam_dtype=float32, which gives finite updates."""
  factory, kwargs = _inject_case(name)
  params = {"w": jnp.ones((3, 4), jnp.bfloat16), "b": jnp.full((4,), 0.5, jnp.bfloat16)}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.1), params)
  if name in ("adamp", "exadam"):
    with pytest.raises(ValueError, match="hyperparam_dtype=jnp.float32"):
      optax.inject_hyperparams(factory)(**kwargs).init(params)
  opt = optax.inject_hyperparams(factory, hyperparam_dtype=jnp.float32)(**kwargs)
  updates, _ = jax.jit(opt.update)(grads, opt.init(params), params)  # float32 (the lr is), as for optax.adam
  for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(optax.apply_updates(params, updates))):
    assert bool(jnp.all(jnp.isfinite(u))) and bool(jnp.any(u != 0)) and p.dtype == jnp.bfloat16


def test_traced_channel_axis_out_of_range_gives_nan_updates():
  """A traced channel_axis cannot raise under jit; out of range it must not wrap around silently."""
  opt = optax.inject_hyperparams(optim.adamp)(0.1, channel_axis=2)
  params = [jnp.ones((2, 3)), jnp.ones(3)]
  updates, _ = jax.jit(opt.update)([jnp.full((2, 3), 0.1), jnp.full(3, 0.1)], opt.init(params), params)
  assert bool(jnp.all(jnp.isnan(updates[0]))) and bool(jnp.all(jnp.isfinite(updates[1])))  # 1-D: no projection


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("name", MAIN)
def test_dtype_preserved(name, dtype):
  dtype = jnp.dtype(dtype)
  opt = _make(name)
  params = {"w": jnp.ones((3, 4), dtype), "b": jnp.full((4,), 0.5, dtype)}
  grads = {"w": jnp.full((3, 4), 0.1, dtype), "b": jnp.full((4,), -0.2, dtype)}
  state = opt.init(params)
  updates, new_state = jax.jit(opt.update)(grads, state, params)
  for u in jax.tree.leaves(updates):
    assert u.dtype == dtype
    assert np.all(np.isfinite(np.asarray(u, np.float32)))
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(new_state)):
    assert a.dtype == b.dtype and a.shape == b.shape
  new_params = optax.apply_updates(params, updates)
  for leaf in jax.tree.leaves(new_params):
    assert leaf.dtype == dtype


@pytest.mark.parametrize("name", MAIN)
def test_multisteps(name):
  """MultiSteps(k=2): params move every second step, by the inner update on the mean gradient."""
  opt = _make(name)
  multi = optax.MultiSteps(opt, every_k_schedule=2)
  params = {"w": jnp.array([[1.0, 2.0], [3.0, -1.0]]), "b": jnp.array([0.5, -0.5])}
  g1 = {"w": jnp.array([[0.1, -0.2], [0.3, 0.0]]), "b": jnp.array([1.0, 2.0])}
  g2 = {"w": jnp.array([[0.3, 0.2], [-0.1, 0.4]]), "b": jnp.array([-1.0, 0.0])}
  state = multi.init(params)
  update = jax.jit(multi.update)
  u1, state = update(g1, state, params)
  assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(u1))
  u2, state = update(g2, state, params)
  mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
  expected, _ = opt.update(mean, opt.init(params), params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), u2, expected)


@pytest.mark.parametrize("name", MAIN)
def test_schedules_accepted(name):
  schedule = optax.linear_schedule(1e-2, 0.0, transition_steps=10)
  opt = _make(name, learning_rate=schedule)
  const = _make(name, learning_rate=1e-2)
  params = {"w": jnp.array([[1.0, 2.0], [3.0, -1.0]])}
  grads = {"w": jnp.array([[0.1, -0.2], [0.3, 0.5]])}
  u_sched, s = jax.jit(opt.update)(grads, opt.init(params), params)
  u_const, _ = jax.jit(const.update)(grads, const.init(params), params)
  np.testing.assert_allclose(u_sched["w"], u_const["w"], rtol=1e-6)  # schedule(0) == 1e-2
  for _ in range(10):
    u_sched, s = jax.jit(opt.update)(grads, s, params)
  np.testing.assert_allclose(u_sched["w"], 0.0, atol=1e-8)  # schedule(10) == 0 (up to f32 rounding)


@pytest.mark.parametrize("name", MAIN)
def test_state_stable_on_4_device_mesh(name):
  assert len(jax.devices()) >= 4, "conftest sets 4 fake CPU devices"
  mesh = jax.make_mesh((4,), ("x",))
  opt = _make(name)
  specs = {"w": P("x", None), "conv": P(None, None, None, "x"), "b": P()}
  key = jax.random.key(0)
  k1, k2, k3 = jax.random.split(key, 3)
  with jax.set_mesh(mesh):
    raw = {"w": jax.random.normal(k1, (8, 6)), "conv": jax.random.normal(k2, (3, 3, 2, 8)),
           "b": jax.random.normal(k3, (6,))}
    params = {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in raw.items()}
    grads = jax.tree.map(lambda x: 0.1 * x + 0.01, params)
    state = jax.jit(opt.init)(params)

    @jax.jit
    def step(params, state):
      updates, state = opt.update(grads, state, params)
      return optax.apply_updates(params, updates), state

    p1, s1 = step(params, state)
    p2, s2 = step(p1, s1)

  def assert_same_layout(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
      assert (x.shape, x.dtype) == (y.shape, y.dtype)
      assert x.sharding.is_equivalent_to(y.sharding, x.ndim), (x.shape, x.sharding, y.sharding)

  assert_same_layout(s1, s2)
  assert_same_layout(p2, params)
  # Moment/momentum buffers keep the parameter sharding.
  by_shape = {x.shape: x.sharding for x in jax.tree.leaves(params)}
  for x in jax.tree.leaves(s2):
    if x.shape in by_shape and x.ndim:
      assert x.sharding.is_equivalent_to(by_shape[x.shape], x.ndim), (x.shape, x.sharding)
  # Same numbers as the unsharded computation.
  ref_p, ref_s = raw, opt.init(raw)
  for _ in range(2):
    u, ref_s = opt.update(jax.tree.map(lambda x: 0.1 * x + 0.01, raw), ref_s, ref_p)
    ref_p = optax.apply_updates(ref_p, u)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p2, ref_p)


@pytest.mark.parametrize("name", ["adamp", "adamp_nesterov_wd", "sgdp"])
@pytest.mark.parametrize("channel_axis", [-1, 0])
def test_donated_update_copies_no_leaf(name, channel_axis):
  """Parameters and state are updated in place: the compiled step holds no copy of a leaf. (A reshaped read of p
  in the projection's output pass once cost one extra copy of every conv kernel per step.)"""
  opt = _make(name, channel_axis=channel_axis)
  params = {"conv": jnp.ones((3, 3, 16, 32)), "dense": jnp.ones((64, 32)), "bias": jnp.ones(32)}

  def step(p, s, g):
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s

  hlo = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt.init(params), params).compile().as_text()
  entry = hlo[hlo.index("\nENTRY"):]
  leaf_copy = re.compile(r"= f32\[\d+,[\d,]*\]\S* copy\(")
  leaf_copies = [line.strip()[:120] for line in entry.splitlines() if leaf_copy.search(line)]
  assert not leaf_copies, leaf_copies


def test_project_rejects_mismatched_shapes():
  p = jnp.ones((3, 4))
  kw = dict(eps=1e-8, delta=0.1, wd_ratio=0.1, channel_axis=-1)
  with pytest.raises(ValueError, match=r"`g` \(shape \(4, 3\)\) must have the shape of `p` \(\(3, 4\)\)"):
    optim.project(p, jnp.ones((4, 3)), p, **kw)
  with pytest.raises(ValueError, match=r"`d` \(shape \(3, 1\)\) must have the shape of `p`"):
    optim.project(p, p, jnp.ones((3, 1)), **kw)

"""jaxfair.optim vs the PyTorch reference optimizers: stored float64 golden trajectories (no torch needed), the
spec's hand-checkable first AdamP step, projection edge cases and construction-time validation."""
from __future__ import annotations

import importlib.util
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxfair import optim
from jaxfair.optim import _common

_GOLDEN_DIR = pathlib.Path(__file__).parent / "golden"
_spec = importlib.util.spec_from_file_location("make_optim_golden", _GOLDEN_DIR / "make_optim_golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)

# One compiled program per shape instead of op-by-op dispatch (keeps the file fast on a loaded machine).
_project = jax.jit(optim.project, static_argnames="channel_axis")

FACTORIES = {"adamp": optim.adamp, "sgdp": optim.sgdp, "exadam": optim.exadam}


@pytest.fixture(scope="module")
def golden_arrays():
  with np.load(golden.GOLDEN_PATH) as f:
    return dict(f)


def _run_problem(name):
  family, kwargs, modes, _ = golden.PROBLEMS[name]
  data = golden.problem_data(name)
  jdata = {k: jnp.asarray(v) for k, v in data.items()}
  params = {leaf: jnp.asarray(data[f"{leaf}/init"]) for leaf in golden.LEAVES}
  extra = {} if family == "exadam" else {"channel_axis": 0}  # PyTorch layouts
  tx = FACTORIES[family](**kwargs, **extra)
  grad_fn = jax.grad(lambda p: golden.loss(p, jdata, modes, jnp))

  @jax.jit
  def step(params, state):
    updates, state = tx.update(grad_fn(params), state, params)
    return optax.apply_updates(params, updates), state

  state = tx.init(params)
  out = {}
  for t in range(1, golden.NUM_STEPS + 1):
    params, state = step(params, state)
    if t in golden.CHECKPOINTS:
      out[t] = jax.device_get(params)
  return out


@pytest.mark.parametrize("name", sorted(golden.PROBLEMS))
def test_trajectory_matches_reference(name, golden_arrays, x64):
  traj = _run_problem(name)
  assert golden.NUM_STEPS >= 100
  for t in golden.CHECKPOINTS:
    for leaf in golden.LEAVES:
      ref = golden_arrays[f"{name}/{leaf}/step{t}"]
      got = traj[t][leaf]
      assert got.dtype == np.float64
      rel = np.max(np.abs(got - ref)) / np.max(np.abs(ref))
      assert rel < 1e-10, f"{name} {leaf} step {t}: relative error {rel:.3g}"


@pytest.mark.parametrize("name", sorted(n for n, p in golden.PROBLEMS.items() if p[2] == golden.MIXED
                                        and p[0] != "exadam"))
def test_golden_problems_fire_the_projection(name, x64):
  """The mixed problems exercise both views: conv -> channel view, dense -> layer view, bias -> never."""
  data = golden.problem_data(name)
  params = {leaf: jnp.asarray(data[f"{leaf}/init"]) for leaf in golden.LEAVES}
  grads = jax.jit(jax.grad(lambda p: golden.loss(p, data, golden.MIXED, jnp)))(params)
  for leaf, expect in (("conv", "channel"), ("dense", "layer"), ("bias", None)):
    p, g = params[leaf], grads[leaf]
    _, ratio = _project(p, g, g, eps=1e-8, delta=0.1, wd_ratio=0.5, channel_axis=0)
    assert float(ratio) == (1.0 if expect is None else 0.5)
    if expect == "layer":  # the channel view must fail for the dense leaf, so the layer view is exercised
      rows = np.abs(np.sum(np.asarray(g * p), 1)) / (np.linalg.norm(g, axis=1) * np.linalg.norm(p, axis=1))
      assert rows.max() >= 0.1 / math.sqrt(p.shape[1])


def test_golden_first_step_adamp(x64):
  """The spec's hand-checkable first step (lr=0.1, weight_decay=0.1, PyTorch layout)."""
  params = {"W": jnp.array([[1.0, 2.0, 2.0], [0.0, 3.0, 4.0]]), "b": jnp.array([0.5, -0.5])}
  grads = {"W": jnp.array([[2.0, -1.0, 0.0], [1.0, 0.0, 0.0]]), "b": jnp.array([0.2, -0.4])}
  tx = optim.adamp(0.1, weight_decay=0.1, channel_axis=0)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_allclose(new["W"], [[0.8878888896, 2.0757777773, 1.9757777783],
                                        [-0.0999999990, 2.9970000000, 3.9960000000]], rtol=0, atol=2e-10)
  np.testing.assert_allclose(new["b"], [0.3950000050, -0.3950000025], rtol=0, atol=2e-10)
  # The same with flax layout (transpose + channel_axis=-1) gives the transposed result.
  tx_flax = optim.adamp(0.1, weight_decay=0.1, channel_axis=-1)
  params_t = {"W": params["W"].T, "b": params["b"]}
  grads_t = {"W": grads["W"].T, "b": grads["b"]}
  updates_t, _ = jax.jit(tx_flax.update)(grads_t, tx_flax.init(params_t), params_t)
  np.testing.assert_allclose(optax.apply_updates(params_t, updates_t)["W"].T, new["W"], rtol=1e-14)


def test_projection_edge_cases(x64):
  p = jnp.array([[1.0, 2.0, 2.0], [0.0, 3.0, 4.0]])
  d = jnp.array([[1.0, 1.0, 1.0], [-1.0, 0.5, 2.0]])
  # Zero gradient: cos = 0, the projection "fires" (ratio = wd_ratio) and removes the radial part per row.
  d_new, r = _project(p, jnp.zeros_like(p), d, eps=1e-8, delta=0.1, wd_ratio=0.25, channel_axis=0)
  assert float(r) == 0.25
  np.testing.assert_allclose(jnp.sum(d_new * p, axis=1), 0.0, atol=1e-7)
  # All-zero weights: p_n = 0, a no-op, but the ratio is still wd_ratio.
  d_new, r = _project(jnp.zeros_like(p), d, d, eps=1e-8, delta=0.1, wd_ratio=0.25, channel_axis=0)
  assert float(r) == 0.25
  np.testing.assert_array_equal(d_new, d)
  # Gradient parallel to the weights: no view passes.
  d_new, r = _project(p, p, d, eps=1e-8, delta=0.1, wd_ratio=0.25, channel_axis=0)
  assert float(r) == 1.0
  np.testing.assert_array_equal(d_new, d)
  # Shape (1, n): both views coincide.
  p1, g1 = p[:1], jnp.array([[2.0, -1.0, 0.0]])
  a, ra = _project(p1, g1, d[:1], eps=1e-8, delta=0.1, wd_ratio=0.25, channel_axis=0)
  b, rb = _project(p1, g1, d[:1], eps=1e-8, delta=0.1, wd_ratio=0.25, channel_axis=-1)
  assert float(ra) == float(rb) == 0.25
  np.testing.assert_allclose(a, b, rtol=1e-14)
  # 1-D leaves are never projected.
  v, r = _project(p[0], jnp.zeros(3), d[0], eps=1e-8, delta=0.1, wd_ratio=0.25, channel_axis=0)
  assert float(r) == 1.0
  np.testing.assert_array_equal(v, d[0])


def test_projection_channel_axis_middle_matches_transpose(x64):
  """A middle channel axis equals moving that axis to the front (the reshape view needs no transpose)."""
  key = jax.random.key(0)
  k1, k2, k3 = jax.random.split(key, 3)
  p = jax.random.normal(k1, (3, 4, 5))
  d = jax.random.normal(k3, (3, 4, 5))
  g = jax.random.normal(k2, (3, 4, 5))
  g = g - p * jnp.sum(g * p, axis=(0, 2), keepdims=True) / jnp.sum(p * p, axis=(0, 2), keepdims=True)
  a, ra = _project(p, g, d, eps=1e-8, delta=0.1, wd_ratio=0.1, channel_axis=1)
  b, rb = _project(jnp.moveaxis(p, 1, 0), jnp.moveaxis(g, 1, 0), jnp.moveaxis(d, 1, 0), eps=1e-8,
                        delta=0.1, wd_ratio=0.1, channel_axis=0)
  assert float(ra) == float(rb) == 0.1
  np.testing.assert_allclose(a, jnp.moveaxis(b, 0, 1), rtol=1e-12)


def test_traced_channel_axis_matches_static(x64):
  """Under jit with channel_axis as an array (inject_hyperparams without static_args) the result is the same."""
  key = jax.random.key(1)
  p = jax.random.normal(key, (2, 3, 4))
  g = jnp.zeros_like(p).at[:, :, 0].set(1.0)
  g = g - p * jnp.sum(g * p, axis=(0, 1), keepdims=True) / jnp.sum(p * p, axis=(0, 1), keepdims=True)
  d = jnp.ones_like(p)
  for axis in (0, 1, 2, -1):
    static = _project(p, g, d, eps=1e-8, delta=0.1, wd_ratio=0.1, channel_axis=axis)
    traced = jax.jit(lambda ax: optim.project(p, g, d, eps=1e-8, delta=0.1, wd_ratio=0.1,
                                              channel_axis=ax))(jnp.int32(axis))
    np.testing.assert_allclose(traced[0], static[0], rtol=1e-13)
    assert float(traced[1]) == float(static[1])


def test_sgdp_project_buffer_semantics(x64):
  """project_buffer=False keeps the raw momentum buffer; True stores the projected direction (clovaai)."""
  params = {"W": jnp.array([[1.0, 2.0, 2.0], [0.0, 3.0, 4.0]])}
  grads = {"W": jnp.array([[2.0, -1.0, 0.0], [1.0, 0.0, 0.0]])}
  for project_buffer in (False, True):
    tx = optim.scale_by_sgdp(momentum=0.9, channel_axis=0, project_buffer=project_buffer)
    state = tx.init(params)
    params2 = {"W": params["W"] + 0.5}  # no longer orthogonal to the gradient after the change
    updates, state = tx.update(grads, state, params2)
    if project_buffer:
      np.testing.assert_allclose(state.momentum["W"], updates["W"])
    else:
      np.testing.assert_allclose(state.momentum["W"], grads["W"])


def test_exadam_constant_gradient_steps(x64):
  """|u_t|/lr = d1 (1 + 1/(1-b1^t)) / sqrt(1 + b1^t) for a constant gradient; 15.95 at t=1."""
  tx = optim.exadam(1.0)
  params = jnp.zeros(3)
  state = tx.init(params)
  g = jnp.ones(3)
  update = jax.jit(tx.update)
  for t in range(1, 11):
    u, state = update(g, state, params)
    b1t, b2t = 0.9**t, 0.999**t
    v = 1 - b2t
    d1 = 1 + v / (v + 1e-8) * b2t
    m = 1 - b1t
    d2 = 1 + m * m / (m * m + 1e-8) * b1t
    expected = d1 * (m + 1) / m / (math.sqrt(d2) + 1e-8)
    np.testing.assert_allclose(-u, expected, rtol=1e-12)
    if t == 1:
      np.testing.assert_allclose(-u, 15.95, atol=0.01)
  # Dynamic step (paper v1): the factor ln(sqrt(2) sqrt(t+1)).
  np.testing.assert_allclose(optim.dynamic_step_factor(1.0), 0.693, atol=1e-3)
  np.testing.assert_allclose(optim.dynamic_step_factor(10.0), 1.546, atol=1e-3)
  np.testing.assert_allclose(optim.dynamic_step_factor(100.0), 2.654, atol=1e-3)


@pytest.mark.parametrize("factory, kwargs, arg", [
    (optim.adamp, dict(learning_rate=-1e-3), "learning_rate"),
    (optim.adamp, dict(eps=-1e-8), "eps"),
    (optim.adamp, dict(delta=-0.1), "delta"),
    (optim.adamp, dict(b1=1.0), "b1"),
    (optim.adamp, dict(b2=-0.1), "b2"),
    (optim.adamp, dict(wd_ratio=-0.1), "wd_ratio"),
    (optim.adamp, dict(weight_decay=-1.0), "weight_decay"),
    (optim.adamp, dict(channel_axis=0.5), "channel_axis"),
    (optim.scale_by_adamp, dict(b1=1.5), "b1"),
    (optim.sgdp, dict(learning_rate=-0.1), "learning_rate"),
    (optim.sgdp, dict(learning_rate=0.1, momentum=1.0), "momentum"),
    (optim.sgdp, dict(learning_rate=0.1, dampening=1.5), "dampening"),
    (optim.sgdp, dict(learning_rate=0.1, eps=-1.0), "eps"),
    (optim.sgdp, dict(learning_rate=0.1, delta=-1.0), "delta"),
    (optim.sgdp, dict(learning_rate=0.1, wd_ratio=-1.0), "wd_ratio"),
    (optim.exadam, dict(learning_rate=-1.0), "learning_rate"),
    (optim.exadam, dict(eps=-1.0), "eps"),
    (optim.exadam, dict(b1=1.0), "b1"),
    (optim.exadam, dict(b2=2.0), "b2"),
    (optim.exadam, dict(weight_decay=-1.0), "weight_decay"),
    (optim.scale_by_exadam, dict(b2=1.0), "b2"),
])
def test_bad_hyperparameters_raise_at_construction(factory, kwargs, arg):
  with pytest.raises(ValueError, match=f"`{arg}`"):
    factory(**kwargs)


def test_channel_axis_out_of_range_is_clear():
  tx = optim.adamp(channel_axis=3)
  params = {"w": jnp.ones((2, 3))}
  with pytest.raises(ValueError, match="channel_axis"):
    tx.update(params, tx.init(params), params)


def test_update_without_params_is_clear():
  tx = optim.adamp()
  params = {"w": jnp.ones((2, 3))}
  with pytest.raises(ValueError, match="params"):
    tx.update(params, tx.init(params))


def test_validation_skips_tracers():
  """Hyperparameters traced under jit (inject_hyperparams) are not checked, and do not error."""
  params = {"w": jnp.ones((2, 3))}

  @jax.jit
  def f(lr, b1):
    tx = optim.adamp(lr, b1=b1)
    return tx.update(params, tx.init(params), params)[0]

  assert f(1e-3, 0.9)["w"].shape == (2, 3)


def test_bf16_compute_in_f32():
  assert _common.compute_dtype(jnp.bfloat16) == jnp.float32
  assert _common.compute_dtype(jnp.float32) == jnp.float32

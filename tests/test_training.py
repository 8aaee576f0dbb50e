import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxfair import data, losses, models, training
from jaxfair.data import Batch


def _digits_program(batch_size=64, width=32, ds=None, loss=losses.softmax_cross_entropy, **kw):
  ds = data.load_digits() if ds is None else ds
  return training.make_train(
      model=models.mlp(ds.input_shape, 10, width=width, depth=1), loss=loss, data=ds,
      batch_size=batch_size,
      optimizer=lambda h: optax.inject_hyperparams(optax.adam)(learning_rate=h["learning_rate"]), **kw)


def test_seeds_by_learning_rates_compile_once_and_equal_sequential_runs():
  program = _digits_program()
  traces = []

  def run(key, hparams):
    traces.append(1)
    return training.train(program, key, hparams, num_steps=40)

  seeds, lrs = 8, jnp.array([1e-3, 3e-3, 1e-2])
  keys = jnp.repeat(jax.random.split(jax.random.key(0), seeds), len(lrs))
  hparams = {"learning_rate": jnp.tile(lrs, seeds)}
  sweep = jax.jit(jax.vmap(run))
  states, metrics, evals = sweep(keys, hparams)
  sweep(jax.random.split(jax.random.key(1), 24), hparams)  # new values, same shapes: no retrace
  assert len(traces) == 1
  assert metrics["loss"].shape == (24, 40) and evals["test_per_class_accuracy"].shape == (24, 10)

  single = jax.jit(run)
  for r in [0, 5, 13, 23]:
    s, m, e = single(keys[r], {"learning_rate": hparams["learning_rate"][r]})
    np.testing.assert_allclose(m["loss"], metrics["loss"][r], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(e["test_accuracy"], evals["test_accuracy"][r], atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 s.params, jax.tree.map(lambda x: x[r], states.params))
  # different learning rates really ran differently
  assert not np.allclose(metrics["loss"][0, -1], metrics["loss"][2, -1])


def test_mlp_on_digits_reaches_high_accuracy():
  program = _digits_program(width=64)
  _, _, ev = jax.jit(functools.partial(training.train, program, num_steps=300))(
      jax.random.key(0), {"learning_rate": 3e-3})
  assert ev["test_accuracy"] >= 0.95


class _GradientCapture:
  """An optax transform whose update is the gradient itself (so the new params minus the old = grad)."""

  def __new__(cls):
    return optax.GradientTransformation(lambda p: optax.EmptyState(), lambda g, s, p=None: (g, s))


@pytest.mark.parametrize("norm", [None, "batch"])
def test_masked_final_batch_equals_unpadded_batch(norm):
  model = models.mlp((6,), 3, width=8, depth=1, norm=norm)
  step = training.make_train_step(model, training.per_example(losses.softmax_cross_entropy), training.uniform())
  params, model_state = model.init(jax.random.key(0))
  state = training.TrainState(jnp.int32(0), params, model_state, optax.EmptyState(), (), jax.random.key(1))
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(5, 6)).astype(np.float32), rng.integers(0, 3, 5)
  junk = 100.0 * rng.normal(size=(3, 6)).astype(np.float32)
  padded = Batch(jnp.concatenate([x, junk]), jnp.concatenate([y, jnp.array([2, 0, 1])]),
                 jnp.arange(8) < 5)
  exact = Batch(jnp.asarray(x), jnp.asarray(y), jnp.ones(5, bool))
  s_pad, m_pad = jax.jit(step, static_argnums=0)(_GradientCapture(), state, padded)
  s_ex, m_ex = jax.jit(step, static_argnums=0)(_GradientCapture(), state, exact)
  np.testing.assert_allclose(m_pad["objective"], m_ex["objective"], rtol=1e-6)
  np.testing.assert_allclose(m_pad["loss"], m_ex["loss"], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), s_pad.params, s_ex.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               s_pad.model_state, s_ex.model_state)
  assert float(m_pad["weight_max_n"]) == pytest.approx(1.0)


def test_chunking_does_not_change_the_run():
  """Chunks that split epochs anywhere see the same batches as one long chunk (bit-identical on CPU)."""
  ds = data.load_iris()  # 112 examples, batch 25: 5 batches per epoch
  program = training.make_train(model=models.mlp(ds.input_shape, 3, width=8, depth=1),
                                loss=losses.softmax_cross_entropy, data=ds, batch_size=25, optimizer=optax.sgd(0.1))
  chunk = jax.jit(program.run_chunk, static_argnums=3)
  state = program.init(jax.random.key(0), {})
  whole, m_whole = chunk(state, {}, program.data, 23)
  part, m1 = chunk(state, {}, program.data, 7)
  part, m2 = chunk(part, {}, program.data, 16)
  jax.tree.map(np.testing.assert_array_equal, whole.params, part.params)
  np.testing.assert_array_equal(m_whole["loss"], np.concatenate([m1["loss"], m2["loss"]]))


def test_every_example_trained_once_per_epoch():
  """With a ragged final batch, one epoch's masks cover each training example exactly once."""
  ds = data.load_iris()  # 112 training examples, batch 25 -> 5 batches, the last with 12 real ones
  seen = np.zeros(len(ds.y_train))
  x = jnp.arange(len(ds.y_train))
  for step in range(data.num_batches(len(ds.y_train), 25)):
    b = data.epoch_batch(jax.random.key(0), x, x, jnp.int32(step), 25)
    np.add.at(seen, np.asarray(b.x)[np.asarray(b.mask)], 1)
  np.testing.assert_array_equal(seen, 1)


def test_nan_loss_stops_with_step_and_last_finite_metrics():
  ds = data.load_digits()
  x_train = ds.x_train.copy()
  x_train[7] = np.nan  # one corrupt training example
  program = training.make_train(model=models.mlp(ds.input_shape, 10, width=8, depth=1),
                                loss=losses.softmax_cross_entropy, data=ds._replace(x_train=x_train),
                                batch_size=256, optimizer=optax.sgd(0.1))
  state = program.init(jax.random.key(0), {})
  _, metrics = jax.jit(program.run_chunk, static_argnums=3)(state, {}, program.data, 12)
  assert not np.all(np.isfinite(metrics["loss"]))
  with pytest.raises(FloatingPointError, match=r"Non-finite loss at step \d+.*Last finite metrics"):
    training.assert_finite_metrics(metrics)
  training.assert_finite_metrics({"step": jnp.arange(3), "loss": jnp.ones(3)})  # finite: no error


def test_weighting_rule_and_monitor_loss_are_used():
  """A rule putting all weight on the first real example makes the objective that example's loss."""
  first_only = training.WeightingRule(
      init=lambda: jnp.int32(0),
      apply=lambda l, m, s: (jax.nn.one_hot(0, l.shape[0], dtype=l.dtype), s + 1))
  program = _digits_program(weighting=first_only, monitor_loss=losses.one_hot_mean_squared_error)
  state = program.init(jax.random.key(0), {"learning_rate": 1e-3})
  state, metrics = jax.jit(program.run_chunk, static_argnums=3)(state, {"learning_rate": 1e-3}, program.data, 3)
  assert int(state.rule_state) == 3
  np.testing.assert_allclose(metrics["weight_max_n"], 64.0)
  np.testing.assert_allclose(metrics["ess_fraction"], 1 / 64, rtol=1e-6)
  assert np.all(metrics["loss"] < 1.0)  # MSE to one-hot, not the cross-entropy (about 2.3 at init)


def test_weight_diagnostics_normalise_weights_that_do_not_sum_to_one():
  """The EMA KL-DRO rule's weights sum to 1 only on average; ESS/N and N w_max describe the normalised ones."""
  half_uniform = training.WeightingRule(init=lambda: jnp.int32(0),
                                        apply=lambda l, m, s: (0.5 * m / m.sum(), s))
  program = _digits_program(weighting=half_uniform)
  state = program.init(jax.random.key(0), {"learning_rate": 1e-3})
  _, metrics = jax.jit(program.run_chunk, static_argnums=3)(state, {"learning_rate": 1e-3}, program.data, 2)
  np.testing.assert_allclose(metrics["weight_max_n"], 1.0, rtol=1e-6)
  np.testing.assert_allclose(metrics["ess_fraction"], 1.0, rtol=1e-6)
  zero = training.WeightingRule(init=lambda: jnp.int32(0), apply=lambda l, m, s: (0.0 * l, s))
  program = _digits_program(weighting=zero)  # no weight anywhere: diagnostics 0, not NaN or inf
  _, metrics = jax.jit(program.run_chunk, static_argnums=3)(state, {"learning_rate": 1e-3}, program.data, 1)
  assert float(metrics["weight_max_n"][0]) == 0.0 and float(metrics["ess_fraction"][0]) == 0.0


def test_losses_declaring_step_and_run_key_receive_them():
  """`step` counts the steps; `run_key` is fixed for the run (EnsLoss's lambda re-drawn every P epochs)."""
  def loss(outputs, labels, *, key, mask, step=None, run_key=None):
    del key, labels
    return jnp.full(outputs.shape[:1], step + jax.random.uniform(run_key)) + 0.0 * outputs[:, 0]

  program = _digits_program(loss=loss, monitor_loss=losses.softmax_cross_entropy)
  state = program.init(jax.random.key(0), {"learning_rate": 1e-3})
  _, metrics = jax.jit(program.run_chunk, static_argnums=3)(state, {"learning_rate": 1e-3}, program.data, 3)
  offset = np.asarray(metrics["objective"]) - np.arange(3)
  assert 0.0 < offset[0] < 1.0 and np.allclose(offset, offset[0])


def test_identity_perturbation_leaves_training_unchanged():
  plain = _digits_program()
  perturbed = _digits_program(perturb=lambda loss_fn, params, x, y, key: x + 0.0 * loss_fn(params, x, y)[:, None])
  hp = {"learning_rate": 1e-3}
  run = lambda p: jax.jit(functools.partial(training.train, p, num_steps=5))(jax.random.key(0), hp)[1]["loss"]
  np.testing.assert_allclose(run(plain), run(perturbed), rtol=1e-6)


def test_make_train_rejects_bad_data_and_sizes():
  ds = data.load_digits()
  with pytest.raises(ValueError, match=r"`data.x_train` .* and `data.y_train` .* same number of examples"):
    _digits_program(ds=ds._replace(y_train=ds.y_train[:-1]))
  with pytest.raises(ValueError, match=r"`data.y_test` must lie in \[0, 10\); found range \[0, 10\]"):
    _digits_program(ds=ds._replace(y_test=np.where(np.arange(len(ds.y_test)) == 3, 10, ds.y_test)))
  with pytest.raises(ValueError, match="`eval_batch_size` must be positive"):
    _digits_program(eval_batch_size=0)


def test_batches_and_masked_mean_reject_mismatched_shapes():
  with pytest.raises(ValueError, match=r"`x` and `y` must have the same number of examples"):
    data.padded_batches(jnp.zeros((5, 2)), jnp.arange(3), 2)
  with pytest.raises(ValueError, match=r"`x` and `y` must have the same number of examples"):
    data.epoch_batch(jax.random.key(0), jnp.zeros((5, 2)), jnp.arange(3), 0, 2)
  with pytest.raises(ValueError, match=r"`mask` \(shape \(4, 1\)\) must have the shape of `values`"):
    training.masked_mean(jnp.arange(4.0), jnp.ones((4, 1), bool))

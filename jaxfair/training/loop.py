"""`make_train(...) -> TrainProgram`: pure init / chunked `lax.scan` training / evaluation.

In the PureJaxRL style, a program is a set of pure functions of `(key, hparams)`, so one compiled program
runs many seeds x hyperparameters:

    program = make_train(model=..., loss=..., optimizer=lambda h: optax.adam(h["learning_rate"]), data=...)
    init = jax.jit(jax.vmap(program.init))
    chunk = jax.jit(jax.vmap(program.run_chunk, in_axes=(0, 0, None, None)), static_argnums=3)
    states = init(keys, hparams)                       # keys (R,), hparams {"learning_rate": (R,)}
    states, metrics = chunk(states, hparams, program.data, 100)   # metrics[name]: (R, 100)
    results = jax.jit(jax.vmap(program.evaluate, in_axes=(0, None)))(states, program.data)

The dataset is an explicit argument (`program.data`), never a closure: jit embeds closed-over arrays as
constants in the compiled program, which is slow to compile and duplicates device memory.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxfair import _checks
from jaxfair.data.batching import batch_from_permutation, epoch_permutation, num_batches
from jaxfair.models import PureModel
from jaxfair.training import sharding
from jaxfair.training.components import PerExampleLoss, Perturbation, WeightingRule, per_example, uniform
from jaxfair.training.evaluate import make_evaluate
from jaxfair.training.step import (DATA_STREAM, INIT_STREAM, TrainState, make_train_step, stream_key)

Array = jax.Array
PyTree = Any
Hparams = Mapping[str, Any]


class TrainData(NamedTuple):
  """Device arrays the compiled program indexes (labels may be class indices or regression targets)."""
  x_train: Array
  y_train: Array
  x_test: Array
  y_test: Array


class TrainProgram(NamedTuple):
  """Pure functions of one run; vmap them over a leading run axis (see the module docstring)."""
  init: Callable[[Array, Hparams], TrainState]
  run_chunk: Callable[[TrainState, Hparams, TrainData, int], tuple[TrainState, dict[str, Array]]]
  evaluate: Callable[[TrainState, TrainData], dict[str, Array]]
  data: TrainData


def as_per_example_loss(loss: Callable) -> PerExampleLoss:
  """Accepts either the `PerExampleLoss` protocol or a plain `(outputs, labels) -> (B,)` function."""
  params = inspect.signature(loss).parameters
  return loss if "key" in params or any(p.kind == p.VAR_KEYWORD for p in params.values()) else per_example(loss)


def as_train_data(data: Any) -> TrainData:
  """Any object with x_train / y_train / x_test / y_test (e.g. `Dataset`, `RegressionTask`) on the device."""
  try:
    return TrainData(*(jnp.asarray(getattr(data, f)) for f in TrainData._fields))
  except AttributeError as e:
    raise TypeError(f"`data` must have fields {TrainData._fields}; got {type(data).__name__}.") from e


def make_train(*, model: PureModel, loss: Callable, data: Any, batch_size: int,
               optimizer: optax.GradientTransformation | Callable[[Hparams], optax.GradientTransformation],
               weighting: WeightingRule | None = None, perturb: Perturbation | None = None,
               monitor_loss: Callable[[Array, Array], Array] | None = None,
               num_classes: int | None = None, eval_batch_size: int = 512, eval_train: bool = False,
               evaluate: Callable[[TrainState, TrainData], dict[str, Array]] | None = None) -> TrainProgram:
  """Assembles a `TrainProgram` from the four pluggable pieces.

  Args:
    model: pure model (`jaxfair.models`).
    loss: per-example training loss (protocol or plain function).
    data: dataset with x_train, y_train, x_test, y_test (it lives on the device).
    batch_size: examples per step; the last batch of each epoch is padded with a mask.
    optimizer: an optax transformation, or `hparams -> transformation` (e.g. with
      `optax.inject_hyperparams`) so hyperparameters vary along the vmapped run axis.
    weighting: instance-weighting rule (default uniform).
    perturb: input perturbation (default identity).
    monitor_loss: real loss reported and evaluated when `loss` is a surrogate.
    num_classes: for classification metrics; read from `data.num_classes` when present.
    eval_batch_size: evaluation batch size.
    eval_train: also evaluate on the training split (`train_` metrics).
    evaluate: replaces the default evaluation `(state, data) -> metrics`.
  """
  for value, name in ((batch_size, "batch_size"), (eval_batch_size, "eval_batch_size")):
    if value <= 0:
      raise ValueError(f"`{name}` must be positive, got {value}.")
  loss = as_per_example_loss(loss)
  weighting = weighting or uniform()
  make_optimizer = optimizer if callable(optimizer) and not isinstance(
      optimizer, optax.GradientTransformation) else (lambda hparams: optimizer)
  if num_classes is None:
    num_classes = getattr(data, "num_classes", None)
  train_data = as_train_data(data)
  for split in ("train", "test"):
    x, y = getattr(train_data, f"x_{split}"), getattr(train_data, f"y_{split}")
    _checks.check_same_leading(x, y, f"data.x_{split}", f"data.y_{split}")
    if num_classes is not None and jnp.issubdtype(y.dtype, jnp.integer):
      _checks.check_class_labels(y, num_classes, f"data.y_{split}")  # an out-of-range label gives NaN losses
  step_fn = make_train_step(model, loss, weighting, perturb, monitor_loss)

  def init(key: Array, hparams: Hparams) -> TrainState:
    params, model_state = model.init(stream_key(key, INIT_STREAM))
    opt_state = make_optimizer(hparams).init(params)
    return TrainState(jnp.zeros((), jnp.int32), params, model_state, opt_state, weighting.init(), key)

  def run_chunk(state: TrainState, hparams: Hparams, data: TrainData, num_steps: int):
    tx = make_optimizer(hparams)
    data_key = stream_key(state.key, DATA_STREAM)
    n = data.x_train.shape[0]
    per_epoch = num_batches(n, batch_size)
    # Draw each epoch's permutation once per chunk (not once per step): the chunk spans at most
    # num_steps // per_epoch + 2 epochs.
    first_epoch = state.step // per_epoch
    epochs = first_epoch + jnp.arange(num_steps // per_epoch + 2)
    perms = jax.vmap(lambda e: epoch_permutation(data_key, e, n, batch_size))(epochs)

    def body(state, _):
      epoch, index = jnp.divmod(state.step, per_epoch)
      batch = batch_from_permutation(perms[epoch - first_epoch], index, data.x_train, data.y_train, batch_size)
      batch = jax.tree.map(sharding.constrain_batch, batch)
      state, metrics = step_fn(tx, state, batch)
      return state, {"step": state.step, **metrics}

    return jax.lax.scan(body, state, length=num_steps)

  if evaluate is None:
    eval_loss = monitor_loss or (lambda o, t: loss(o, t, key=None, mask=jnp.ones(t.shape[:1], bool)))
    test_eval = make_evaluate(model, loss_fn=eval_loss, num_classes=num_classes, batch_size=eval_batch_size)
    train_eval = make_evaluate(model, loss_fn=eval_loss, num_classes=num_classes, batch_size=eval_batch_size,
                               prefix="train_")

    def evaluate(state: TrainState, data: TrainData) -> dict[str, Array]:
      metrics = test_eval(state.params, state.model_state, data.x_test, data.y_test)
      if eval_train:
        metrics.update(train_eval(state.params, state.model_state, data.x_train, data.y_train))
      return metrics

  return TrainProgram(init, run_chunk, evaluate, train_data)


def train(program: TrainProgram, key: Array, hparams: Hparams, num_steps: int):
  """One whole run, pure: `(final_state, per-step metrics (num_steps,), final evaluation)`.

  `jax.jit(jax.vmap(partial(train, program, num_steps=T)))(keys, hparams)` runs a whole sweep as one program.
  """
  state = program.init(key, hparams)
  state, metrics = program.run_chunk(state, hparams, program.data, num_steps)
  return state, metrics, program.evaluate(state, program.data)


def assert_finite_metrics(metrics: Mapping[str, Array], *, names: tuple[str, ...] = ("loss", "objective"),
                          run_labels: list[str] | None = None) -> None:
  """Raises FloatingPointError naming the first step (and run) whose loss is NaN/Inf, with the last finite
  metrics of that run. `metrics[name]` is (T,) or (R, T) with a "step" entry of the same shape."""
  steps = np.asarray(metrics["step"])
  arrays = {k: np.asarray(v) for k, v in metrics.items()}
  bad = np.zeros(steps.shape, bool)
  for name in names:
    if name in arrays:
      bad |= ~np.isfinite(arrays[name])
  if not bad.any():
    return
  if steps.ndim == 1:
    steps, bad, arrays = steps[None], bad[None], {k: v[None] for k, v in arrays.items()}
  run = int(np.argmax(bad.any(axis=1)))
  t = int(np.argmax(bad[run]))
  label = f" (run {run_labels[run] if run_labels else run})" if steps.shape[0] > 1 or run_labels else ""
  last = {k: float(v[run, t - 1]) for k, v in arrays.items() if t > 0 and v.ndim == 2}
  raise FloatingPointError(
      f"Non-finite loss at step {int(steps[run, t])}{label}: "
      f"{ {k: float(arrays[k][run, t]) for k in names if k in arrays} }. Last finite metrics: "
      f"{last or 'none (the first step of this chunk already failed)'}. Lower the learning rate, check the "
      "inputs for NaN, or use a loss that is bounded for these margins.")

"""The one training step every method plugs into (see `components.py` for the four pieces).

    x' = perturb(x)                       (identity by default)
    l_i = loss(model(params, x'_i), y_i)  (per example)
    w = weighting(stop_gradient(l), mask) (uniform by default; zero on padding)
    params <- optax_update(grad_params sum_i stop_gradient(w_i) l_i)
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxfair import _checks
from jaxfair.data.batching import Batch
from jaxfair.models import PureModel
from jaxfair.training.components import PerExampleLoss, Perturbation, WeightingRule

Array = jax.Array
PyTree = Any


class TrainState(NamedTuple):
  """Everything a run carries between steps; a pytree, so runs stack along a leading vmap axis."""
  step: Array          # int32 scalar: number of updates done
  params: PyTree
  model_state: PyTree  # e.g. BatchNorm statistics
  opt_state: PyTree
  rule_state: PyTree   # weighting-rule state (e.g. EMA normaliser)
  key: Array           # typed PRNG key of this run; step keys are fold_in(key, step)


# Streams derived from a run key, so data order, model init and step randomness are independent.
INIT_STREAM, DATA_STREAM, STEP_STREAM, LOSS_STREAM = 0, 1, 2, 3


def stream_key(key: Array, stream: int) -> Array:
  return jax.random.fold_in(key, stream)


def masked_mean(values: Array, mask: Array) -> Array:
  """Mean over the real examples (`mask` True); padding is ignored even where its values are NaN."""
  _checks.check_same_shape(mask, values, "mask", "values")
  mask = mask.astype(bool)
  return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(mask.sum(), 1).astype(values.dtype)


def make_train_step(model: PureModel, loss: PerExampleLoss, weighting: WeightingRule,
                    perturb: Perturbation | None = None,
                    monitor_loss: Callable[[Array, Array], Array] | None = None):
  """Builds `train_step(optimizer, state, batch) -> (state, metrics)`.

  Args:
    model: pure model; its `apply` runs with `train=True` for the update and `train=False` for attacks.
    loss: per-example training loss `(outputs, labels, *, key, mask) -> (B,)`. A loss that also declares
      `step` and/or `run_key` keywords gets, in the training step, the step count and a key fixed for the
      whole run (e.g. EnsLoss's lambda re-drawn every P epochs); give them a None default, since evaluation
      and attacks call the loss without them (and with key=None).
    weighting: instance-weighting rule.
    perturb: optional input perturbation (e.g. PGD), called inside the differentiated function.
    monitor_loss: a real per-example loss `(outputs, labels) -> (B,)` reported as "loss" (use it when the
      training loss is a surrogate, e.g. EnsLoss); defaults to the training loss.

  The returned step is pure; metrics are scalars: "loss" (monitored, mean over real examples), "objective"
  (the weighted training loss), "grad_norm", "weight_max_n" (N * max weight; 1 for uniform) and
  "ess_fraction" (effective sample size / N).
  """

  def attack_loss(model_state):
    """Per-example loss of the model in inference mode, the quantity a perturbation maximises."""
    def loss_fn(params, x, y):
      outputs, _ = model.apply(params, model_state, x, train=False)
      if monitor_loss is not None:
        return monitor_loss(outputs, y)
      return loss(outputs, y, key=None, mask=jnp.ones(y.shape[:1], bool))
    return loss_fn

  loss_params = inspect.signature(loss).parameters
  run_level = [name for name in ("step", "run_key") if name in loss_params]

  def train_step(optimizer: optax.GradientTransformation, state: TrainState, batch: Batch):
    key = jax.random.fold_in(stream_key(state.key, STEP_STREAM), state.step)
    k_perturb, k_loss = jax.random.split(key)
    mask = batch.mask
    available = {"step": state.step, "run_key": stream_key(state.key, LOSS_STREAM)}
    run_level_kw = {name: available[name] for name in run_level}

    def objective(params):
      x = batch.x
      if perturb is not None:
        x = perturb(attack_loss(state.model_state), params, x, batch.y, k_perturb)
      outputs, model_state = model.apply(params, state.model_state, x, train=True, mask=mask)
      losses = loss(outputs, batch.y, key=k_loss, mask=mask, **run_level_kw)
      losses = jnp.where(mask, losses, 0.0)
      weights, rule_state = weighting.apply(jax.lax.stop_gradient(losses), mask, state.rule_state)
      weights = jax.lax.stop_gradient(weights)
      monitored = losses if monitor_loss is None else monitor_loss(outputs, batch.y)
      aux = (model_state, rule_state, weights, masked_mean(jax.lax.stop_gradient(monitored), mask))
      return jnp.sum(weights * losses), aux

    (value, (model_state, rule_state, weights, monitored)), grads = jax.value_and_grad(
        objective, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # Diagnostics of the normalised weights (the EMA KL-DRO rule's sum to 1 only on average).
    n = jnp.maximum(mask.sum(), 1).astype(weights.dtype)
    total, sum_sq = weights.sum(), jnp.sum(weights ** 2)
    positive = sum_sq > 0  # all-zero weights (no real example): report 0, not NaN or inf
    metrics = {"loss": monitored, "objective": value, "grad_norm": optax.tree.norm(grads),
               "weight_max_n": jnp.where(positive, n * weights.max() / jnp.where(positive, total, 1.0), 0.0),
               "ess_fraction": jnp.where(positive, total ** 2 / (n * jnp.where(positive, sum_sq, 1.0)), 0.0)}
    new_state = TrainState(state.step + 1, params, model_state, opt_state, rule_state, state.key)
    return new_state, metrics

  return train_step

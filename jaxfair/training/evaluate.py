"""Compiled, batched evaluation: accuracy, mean loss and per-class accuracy (optionally under an attack)."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxfair.data.batching import padded_batches
from jaxfair.models import PureModel
from jaxfair.training.components import Perturbation

Array = jax.Array


def predictions(outputs: Array) -> Array:
  """Class predictions: argmax for (B, K) outputs, `output > 0` for binary (B,) or (B, 1) outputs."""
  if outputs.ndim == 1 or outputs.shape[-1] == 1:
    return (outputs.reshape(outputs.shape[0]) > 0).astype(jnp.int32)
  return jnp.argmax(outputs, axis=-1).astype(jnp.int32)


def make_evaluate(model: PureModel, *, loss_fn: Callable[[Array, Array], Array] | None,
                  num_classes: int | None, batch_size: int = 512, perturb: Perturbation | None = None,
                  prefix: str = "test_"):
  """Builds `evaluate(params, model_state, x, y, key) -> metrics` (pure, jittable, vmappable).

  Metrics: `{prefix}loss` (mean of `loss_fn` over examples), and for classification (`num_classes` set)
  `{prefix}accuracy` and `{prefix}per_class_accuracy` (K,) (NaN for a class absent from `y`). With `perturb`
  each batch is attacked first (with `loss_fn` as the attacked loss and the true labels).
  """
  if loss_fn is None and num_classes is None:
    raise ValueError("make_evaluate needs `loss_fn` or `num_classes`.")

  def evaluate(params, model_state, x, y, key=None):
    batches = padded_batches(x, y, batch_size)
    if key is None:
      key = jax.random.key(0)

    def per_example_loss(p, xb, yb):
      return loss_fn(model.apply(p, model_state, xb, train=False)[0], yb)

    def body(totals, inputs):
      index, batch = inputs
      xb = batch.x
      if perturb is not None:
        xb = perturb(per_example_loss, params, xb, batch.y, jax.random.fold_in(key, index))
      outputs, _ = model.apply(params, model_state, xb, train=False)
      mask = batch.mask.astype(jnp.float32)
      out = dict(totals)
      out["count"] = totals["count"] + mask.sum()
      if loss_fn is not None:
        out["loss"] = totals["loss"] + jnp.sum(jnp.where(batch.mask, loss_fn(outputs, batch.y), 0.0))
      if num_classes is not None:
        correct = (predictions(outputs) == batch.y).astype(jnp.float32) * mask
        onehot = jax.nn.one_hot(batch.y, num_classes) * mask[:, None]
        out["correct"] = totals["correct"] + correct.sum()
        out["class_correct"] = totals["class_correct"] + onehot.T @ correct
        out["class_count"] = totals["class_count"] + onehot.sum(axis=0)
      return out, None

    zeros = {"count": 0.0, "loss": 0.0}
    if num_classes is not None:
      zeros.update(correct=0.0, class_correct=jnp.zeros(num_classes), class_count=jnp.zeros(num_classes))
    zeros = jax.tree.map(jnp.asarray, zeros)
    num = batches.mask.shape[0]
    totals, _ = jax.lax.scan(body, zeros, (jnp.arange(num), batches))
    metrics = {}
    if loss_fn is not None:
      metrics[prefix + "loss"] = totals["loss"] / totals["count"]
    if num_classes is not None:
      metrics[prefix + "accuracy"] = totals["correct"] / totals["count"]
      metrics[prefix + "per_class_accuracy"] = jnp.where(
          totals["class_count"] > 0, totals["class_correct"] / jnp.maximum(totals["class_count"], 1), jnp.nan)
    return metrics

  return evaluate

"""The four pluggable pieces of a training step, as pure-function protocols.

    batch --perturb--> inputs --model--> outputs --loss--> losses (B,) --weighting--> w (B,)
          --> sum(stop_gradient(w) * losses) --grad--> optax transform --> new params

* `Perturbation`: `(loss_fn, params, x, y, key) -> x'` where `loss_fn(params, x, y) -> (B,)` gives per-example
  losses of the model (in inference mode). `None` means identity. PGD (`jaxfair.adversarial.pgd_attack`,
  partially applied) fits here. The perturbation is called inside the differentiated function, so a
  perturbation with a custom VJP (implicit differentiation) contributes to the gradient; PGD should return a
  `stop_gradient`-ed input (Danskin).
* `PerExampleLoss`: `(outputs, labels, *, key, mask) -> (B,)`. `per_example(fn)` lifts a plain
  `(outputs, labels) -> (B,)` loss. The key lets random losses (EnsLoss) draw per step; `mask` marks real
  examples (1) vs padding (0). A loss that also declares `step` and/or `run_key` (default None) receives, in
  the training step, the step count and a key fixed for the run (for randomness held over several steps).
* `WeightingRule`: an `(init, apply)` pair like an optax transform: `init() -> rule_state` and
  `apply(losses, mask, rule_state) -> (weights, rule_state)`. Weights are >= 0, zero on padding, sum to 1 over
  the real examples of the (global) batch; the step applies `stop_gradient` to them.
* The optimizer: any `optax.GradientTransformation`.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp

Array = jax.Array
PyTree = Any


class PerExampleLoss(Protocol):

  def __call__(self, outputs: Array, labels: Array, *, key: Array, mask: Array) -> Array:
    ...


Perturbation = Callable[[Callable[[PyTree, Array, Array], Array], PyTree, Array, Array, Array], Array]


def per_example(fn: Callable[[Array, Array], Array]) -> PerExampleLoss:
  """Lifts a deterministic `(outputs, labels) -> (B,)` loss to the `PerExampleLoss` protocol."""

  def loss(outputs, labels, *, key=None, mask=None):
    del key, mask
    return fn(outputs, labels)

  loss.__name__ = getattr(fn, "__name__", "loss")
  return loss


class WeightingRule(NamedTuple):
  """Instance-weighting rule: `init() -> state`, `apply(losses, mask, state) -> (weights, state)`."""
  init: Callable[[], PyTree]
  apply: Callable[[Array, Array, PyTree], tuple[Array, PyTree]]


def masked_uniform(mask: Array, dtype=jnp.float32) -> Array:
  """1/n on the n real examples, 0 on padding (all-zero if the batch is entirely padding)."""
  mask = mask.astype(dtype)
  return mask / jnp.maximum(mask.sum(), 1.0)


def uniform() -> WeightingRule:
  """Plain mean over the real examples of the batch (ERM)."""
  return WeightingRule(init=lambda: (),
                       apply=lambda losses, mask, state: (masked_uniform(mask, losses.dtype), state))

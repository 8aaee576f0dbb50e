"""Batching for datasets that live on the device and are indexed inside compiled loops.

Each epoch is a fresh permutation drawn from `fold_in(key, epoch)`; the last, ragged batch of an epoch is
padded (with copies of example 0) and carries `mask = 0` on the padding, so no example is ever silently
dropped and weighted losses stay exact.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class Batch(NamedTuple):
  x: Array
  y: Array
  mask: Array  # (B,) bool: True for real examples, False for padding


def num_batches(num_examples: int, batch_size: int) -> int:
  """Batches per epoch, counting the ragged last one."""
  if batch_size <= 0:
    raise ValueError(f"`batch_size` must be positive, got {batch_size}.")
  return math.ceil(num_examples / batch_size)


def _num_examples(x, y) -> int:
  """The common leading dimension of every array in `x` and `y` (a clear error when they disagree)."""
  sizes = {name: {leaf.shape[0] if leaf.ndim else None for leaf in jax.tree.leaves(tree)}
           for name, tree in (("x", x), ("y", y))}
  if len(sizes["x"] | sizes["y"]) != 1 or None in sizes["x"] | sizes["y"]:
    raise ValueError(f"`x` and `y` must have the same number of examples along axis 0; got leading sizes "
                     f"{sorted(map(str, sizes['x']))} for `x` and {sorted(map(str, sizes['y']))} for `y`.")
  return sizes["x"].pop()


def _gather(tree, idx):
  return jax.tree.map(lambda a: jnp.take(a, idx, axis=0), tree)


def epoch_permutation(key: Array, epoch: Array, num_examples: int, batch_size: int) -> Array:
  """The example order of `epoch`, padded with index 0 to a whole number of batches."""
  perm = jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)
  return jnp.pad(perm, (0, num_batches(num_examples, batch_size) * batch_size - num_examples))


def batch_from_permutation(perm: Array, index: Array, x, y, batch_size: int) -> Batch:
  """Batch number `index` of an epoch whose (padded) order is `perm`."""
  n = _num_examples(x, y)
  start = index * batch_size
  idx = jax.lax.dynamic_slice_in_dim(perm, start, batch_size)
  mask = start + jnp.arange(batch_size) < n
  return Batch(_gather(x, idx), _gather(y, idx), mask)


def epoch_batch(key: Array, x, y, step: Array, batch_size: int) -> Batch:
  """The batch for global `step`: epoch = step // batches_per_epoch, a per-epoch permutation from `key`.

  `x` and `y` may be arrays or pytrees of arrays with a common leading dimension. This draws the epoch's
  permutation on every call; loops should draw each epoch's permutation once (`epoch_permutation`) and
  slice batches from it (`batch_from_permutation`), as `jaxfair.training.make_train` does.
  """
  n = _num_examples(x, y)
  epoch, index = jnp.divmod(step, num_batches(n, batch_size))
  return batch_from_permutation(epoch_permutation(key, epoch, n, batch_size), index, x, y, batch_size)


def padded_batches(x, y, batch_size: int) -> Batch:
  """All examples in order as (num_batches, batch_size, ...) stacks, padded, with the mask (for evaluation)."""
  n = _num_examples(x, y)
  nb = num_batches(n, batch_size)
  idx = jnp.arange(nb * batch_size)
  mask = idx < n
  idx = jnp.where(mask, idx, 0).reshape(nb, batch_size)
  return Batch(_gather(x, idx), _gather(y, idx), mask.reshape(nb, batch_size))

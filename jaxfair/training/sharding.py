"""Device meshes for sweeps: shard the run (seed x hparam) axis and/or the batch axis. No pmap.

A sweep state is a pytree whose every leaf has a leading run axis of size R (seeds x hyperparameters, vmapped).
The mesh has two named axes:

* ``"runs"``: splits the R runs over devices (each device trains R / n_runs models; no communication).
* ``"batch"``: splits each training batch over devices (data parallelism: XLA inserts the gradient all-reduce).

Usage, in the runner (plain `jit`, the mesh set with `jax.set_mesh`)::

  mesh = make_sweep_mesh(run_shards=4)             # or batch_shards=4, or 2 x 2
  with jax.set_mesh(mesh):
    hparams = put_runs(hparams_numpy, mesh)        # (R, ...) arrays, split along "runs"
    step = jax.jit(jax.vmap(f, spmd_axis_name=RUNS), out_shardings=runs_sharding(mesh))

and, inside a train step, `constrain_batch(x)` marks the batch axis (axis 0 of the un-vmapped array) as split
along ``"batch"`` when the current mesh has that axis (and does nothing otherwise), so the same program runs
unsharded, seed-sharded or batch-sharded.

Multi-host: after `jax.distributed.initialize()`, `jax.devices()` lists every process's devices, the mesh spans
them, and `put_runs` builds global arrays from the (identical) host value on every process.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

RUNS = "runs"
BATCH = "batch"
_AUTO = jax.sharding.AxisType.Auto


def make_sweep_mesh(run_shards: int | None = None, batch_shards: int = 1,
                    devices: Any = None) -> jax.sharding.Mesh:
  """A `(runs, batch)` mesh over `run_shards * batch_shards` devices.

  Args:
    run_shards: devices along the run axis; None uses every device not used by `batch_shards`.
    batch_shards: devices along the batch axis.
    devices: the devices to use (default `jax.devices()`, all processes).
  """
  devices = list(jax.devices() if devices is None else devices)
  if batch_shards < 1:
    raise ValueError(f"`batch_shards` must be >= 1, got {batch_shards}.")
  if run_shards is None:
    run_shards = len(devices) // batch_shards
  if run_shards < 1 or run_shards * batch_shards > len(devices):
    raise ValueError(f"`run_shards` x `batch_shards` = {run_shards} x {batch_shards} needs "
                     f"{run_shards * batch_shards} devices but {len(devices)} are available.")
  n = run_shards * batch_shards
  if n == len(devices):
    return jax.make_mesh((run_shards, batch_shards), (RUNS, BATCH), axis_types=(_AUTO, _AUTO), devices=devices)
  return jax.sharding.Mesh(np.asarray(devices[:n]).reshape(run_shards, batch_shards), (RUNS, BATCH),
                           axis_types=(_AUTO, _AUTO))


def axis_size(mesh: jax.sharding.Mesh | None, name: str) -> int:
  if mesh is None or name not in mesh.axis_names:
    return 1
  return int(mesh.shape[name])


def runs_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (run) axis split along "runs", everything else replicated."""
  return NamedSharding(mesh, P(RUNS))


def put_runs(tree: Any, mesh: jax.sharding.Mesh | None) -> Any:
  """Host arrays with a leading run axis -> global device arrays split along "runs" (multi-host safe).

  Every process must pass the same values. Without a mesh, a plain `jnp.asarray`.
  """
  if mesh is None:
    return jax.tree.map(jax.numpy.asarray, tree)
  num = axis_size(mesh, RUNS)
  sharding = runs_sharding(mesh)

  def put(x):
    x = np.asarray(x)
    if x.shape[0] % num:
      raise ValueError(f"the number of runs ({x.shape[0]} = seeds x hparam combinations) must be divisible by "
                       f"the {num} devices of the run axis; change the seeds or `run_shards`.")
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

  return jax.tree.map(put, tree)


def put_replicated(tree: Any, mesh: jax.sharding.Mesh | None) -> Any:
  """Host or device arrays -> global arrays replicated on every device of `mesh` (multi-host safe)."""
  if mesh is None:
    return jax.tree.map(jax.numpy.asarray, tree)
  sharding = NamedSharding(mesh, P())

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

  return jax.tree.map(put, tree)


def constrain_batch(x: jax.Array) -> jax.Array:
  """Marks axis 0 of `x` (the batch axis) as split over the "batch" mesh axis, if the current mesh has one.

  Call it on the batch inputs inside a train step (under `vmap` over runs the run axis is handled by
  `vmap(..., spmd_axis_name="runs")`). A no-op when no mesh is set or its "batch" axis has size 1.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or BATCH not in mesh.axis_names or mesh.shape[BATCH] == 1:
    return x
  if x.shape[0] % mesh.shape[BATCH]:
    raise ValueError(f"the batch size {x.shape[0]} must be divisible by the {mesh.shape[BATCH]} devices of the "
                     "batch axis; change `batch_size` (or `eval_batch_size` for evaluation batches) or "
                     "`batch_shards`.")
  return jax.lax.with_sharding_constraint(x, P(BATCH))


def shard_model_inputs(model: Any) -> Any:
  """Wraps a `PureModel` so its inputs (and mask) are split along the "batch" mesh axis when there is one.

  The training step of `jaxfair.training.make_train` calls `model.apply(params, state, x, train=..., mask=...)`
  on each batch, so wrapping the model is enough to shard the batch axis (data parallelism) without touching
  the step: XLA propagates the split through the forward pass and all-reduces the gradients. A no-op
  without a mesh.
  """
  init, apply = model

  def sharded_apply(params, model_state, x, *args, mask=None, **kwargs):
    x = jax.tree.map(constrain_batch, x)
    if mask is not None:
      mask = constrain_batch(mask)
      return apply(params, model_state, x, *args, mask=mask, **kwargs)
    return apply(params, model_state, x, *args, **kwargs)

  return type(model)(init, sharded_apply)


def gather(tree: Any) -> Any:
  """Device arrays (possibly spread over processes) -> NumPy arrays with the full global value on every host."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, jax.device_get(tree))
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))

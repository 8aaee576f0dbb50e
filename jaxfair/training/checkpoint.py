"""Checkpoints: orbax-checkpoint behind one small interface.

The only module in jaxfair that touches orbax. A checkpoint holds

* ``state``: any pytree of arrays (a batched `TrainState` of many runs, say). It is stored as a flat dict of its
  leaves (``"000000"``, ``"000001"``, ...) so NamedTuples, empty subtrees and `None` leaves round-trip through
  the caller's template rather than through orbax's tree handling. Typed PRNG keys (``jax.random.key``) are
  stored as their raw ``key_data`` and rewrapped with the template's implementation on restore.
* ``meta``: a JSON dict (the runner keeps its log position and bookkeeping there).

Writes are synchronous (``enable_async_checkpointing=False``) so that a checkpoint that `save` returned from is
on disk: a run killed right after can resume from it. Every process must call `save`/`restore` in a multi-host
run (orbax coordinates them); only the primary host writes the JSON metadata.

Example::

  ckpt = Checkpointer(workdir / "checkpoints", max_to_keep=2)
  ckpt.save(step, state, meta={"log_bytes": 123})
  latest = ckpt.latest_step()
  if latest is not None:
    state, meta = ckpt.restore(latest, template=state)
"""
from __future__ import annotations

import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any


class _QuietOrbax(logging.Filter):
  """Drops orbax's per-save INFO chatter (dozens of lines per checkpoint); warnings and errors pass."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or "orbax" not in record.pathname


_FILTER = _QuietOrbax()
for _name in ("absl", "orbax"):
  if not any(isinstance(f, _QuietOrbax) for f in logging.getLogger(_name).filters):
    logging.getLogger(_name).addFilter(_FILTER)


def _is_key(x: Any) -> bool:
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_storable(x: Any) -> Any:
  return jax.random.key_data(x) if _is_key(x) else x


def _key_impl(x: Any) -> Any:
  """The PRNG implementation of a typed key array or of a `ShapeDtypeStruct` with a key dtype."""
  if isinstance(x, jax.Array):
    return jax.random.key_impl(x)
  return x.dtype._impl  # pylint: disable=protected-access


def _key_data_sharding(x: Any) -> Any:
  """Sharding of `key_data(x)`: the key's sharding with the trailing key dimension replicated."""
  sharding = getattr(x, "sharding", None)
  if isinstance(sharding, jax.sharding.NamedSharding):
    spec = tuple(sharding.spec) + (None,) * (x.ndim - len(sharding.spec))
    return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*spec, None))
  if sharding is not None and len(sharding.device_set) == 1:
    return sharding
  return None


class Checkpointer:
  """Saves and restores `(state pytree, JSON meta)` pairs under `directory/<step>/`.

  Args:
    directory: where the step folders go (created if missing).
    max_to_keep: how many most recent checkpoints to keep (None keeps all).
  """

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int | None = 2):
    if max_to_keep is not None and max_to_keep < 1:
      raise ValueError(f"`max_to_keep` must be >= 1 or None, got {max_to_keep}.")
    self.directory = os.path.abspath(os.fspath(directory))
    # A save killed midway leaves only a temporary folder, never a step that `latest_step` would return;
    # those folders are removed when the next manager opens the directory.
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=False, cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: PyTree, meta: dict[str, Any] | None = None) -> None:
    """Writes checkpoint `step` (overwriting nothing: a step that exists is an error)."""
    leaves = jax.tree.leaves(state)
    flat = {f"{i:06d}": _to_storable(x) for i, x in enumerate(leaves)}
    meta = dict(meta or {})
    meta["_num_leaves"] = len(leaves)
    self._manager.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(flat),
                                                          meta=ocp.args.JsonSave(meta)), force=True)
    self._manager.wait_until_finished()

  def restore(self, step: int, template: PyTree) -> tuple[PyTree, dict[str, Any]]:
    """Restores checkpoint `step` into the structure, dtypes and shardings of `template`.

    `template` may hold arrays or `jax.ShapeDtypeStruct`s (with `sharding=` for sharded restores); typed keys in
    it are rewrapped with the same PRNG implementation.
    """
    leaves, treedef = jax.tree.flatten(template)
    meta = dict(self.restore_meta(step))
    n = meta.pop("_num_leaves", len(leaves))
    if n != len(leaves):
      raise ValueError(f"checkpoint {step} in {self.directory} has {n} arrays but the template has "
                       f"{len(leaves)}: the config changed since it was written. Use a fresh --workdir.")
    abstract = {f"{i:06d}": _abstract_leaf(x) for i, x in enumerate(leaves)}
    restored = self._manager.restore(int(step), args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    flat = restored["state"]
    out = []
    for i, x in enumerate(leaves):
      y = flat[f"{i:06d}"]
      if _is_key(x):
        y = jax.random.wrap_key_data(y, impl=_key_impl(x))
      out.append(y)
    return jax.tree.unflatten(treedef, out), meta

  def restore_meta(self, step: int) -> dict[str, Any]:
    """Only the JSON metadata of checkpoint `step`."""
    return dict(self._manager.restore(int(step), args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

  def close(self) -> None:
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _abstract_leaf(x: Any) -> jax.ShapeDtypeStruct:
  if _is_key(x):
    impl_shape = jax.eval_shape(jax.random.key_data, x).shape
    return jax.ShapeDtypeStruct(impl_shape, np.uint32, sharding=_key_data_sharding(x))
  sharding = getattr(x, "sharding", None)
  return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)

"""Input validation that names the argument and the fix.

Shape checks always run (shapes are static under jit). Value checks (labels in range, finite losses) run
when the array is concrete — eagerly, or on the host before data enters a compiled loop — and are skipped
for tracers, where the compiled code's own guards (masking, NaN metrics) take over.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np


def concrete_value(x: Any) -> np.ndarray | None:
  """The NumPy value of `x`, or None when `x` is a tracer."""
  if isinstance(x, jax.core.Tracer):
    return None
  return np.asarray(x)


def check_ndim(x: Any, ndim: int | tuple[int, ...], name: str) -> None:
  ndims = (ndim,) if isinstance(ndim, int) else ndim
  if np.ndim(x) not in ndims:
    raise ValueError(f"`{name}` must have {' or '.join(map(str, ndims))} dimensions, got shape "
                     f"{np.shape(x)}.")


def check_same_leading(a: Any, b: Any, name_a: str, name_b: str) -> None:
  if np.shape(a)[:1] != np.shape(b)[:1]:
    raise ValueError(f"`{name_a}` (shape {np.shape(a)}) and `{name_b}` (shape {np.shape(b)}) must have the "
                     "same number of examples along axis 0.")


def check_same_shape(a: Any, b: Any, name_a: str, name_b: str) -> None:
  """`a` must have exactly `b`'s shape (no silent broadcasting)."""
  if np.shape(a) != np.shape(b):
    raise ValueError(f"`{name_a}` (shape {np.shape(a)}) must have the shape of `{name_b}` ({np.shape(b)}).")


def check_binary_labels(labels: Any, name: str = "labels") -> None:
  """Labels must be 0/1 (not -1/+1: convert with `(y + 1) // 2`)."""
  value = concrete_value(labels)
  if value is None:
    return
  bad = ~np.isin(value, (0, 1))
  if bad.any():
    raise ValueError(f"`{name}` must be in {{0, 1}}; found {np.unique(value[bad])[:5].tolist()}. "
                     "For -1/+1 labels pass (y + 1) // 2.")


def check_class_labels(labels: Any, num_classes: int, name: str = "labels") -> None:
  """Integer labels (checked under jit too: the dtype is static) in [0, num_classes) (when concrete)."""
  dtype = np.dtype(getattr(labels, "dtype", None) or np.asarray(labels).dtype)
  if not np.issubdtype(dtype, np.integer):
    raise ValueError(f"`{name}` must be integer class indices, got dtype {dtype}.")
  value = concrete_value(labels)
  if value is None:
    return
  if value.size and (value.min() < 0 or value.max() >= num_classes):
    raise ValueError(f"`{name}` must lie in [0, {num_classes}); found range [{value.min()}, {value.max()}].")


def check_positive(value: Any, name: str, *, allow_zero: bool = False) -> None:
  """Raises for a concrete hyperparameter that is not > 0 (or >= 0)."""
  v = concrete_value(value)
  if v is None:
    return
  bad = ((v < 0) if allow_zero else (v <= 0)) | np.isnan(v)
  if np.any(bad):
    shown = v.tolist() if v.size <= 8 else f"{np.flatnonzero(bad).size} bad values, first {v[bad][:5].tolist()}"
    raise ValueError(f"`{name}` must be {'>= 0' if allow_zero else '> 0'}, got {shown}.")


def check_finite(x: Any, name: str) -> None:
  v = concrete_value(x)
  if v is not None and not np.all(np.isfinite(v)):
    raise ValueError(f"`{name}` contains NaN or Inf at indices {np.argwhere(~np.isfinite(v))[:5].ravel().tolist()}.")

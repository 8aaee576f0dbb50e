r"""Shared pieces of jaxfair's optimizers: the AdamP/SGDP projection, dtype handling and validation.

The projection (Heo et al., 2021, Algorithm 1-2 and Eq. 11) removes the radial component of an update
direction for weights whose loss looks scale-invariant. For a leaf :math:`p` with raw gradient :math:`g` and
update direction :math:`d`, two *views* are tried in order:

* the channel view: one row per slice along ``channel_axis`` (all other axes flattened);
* the layer view: the whole leaf as one row.

A view passes iff :math:`\max_{\text{rows}} |\cos(g_r, p_r)| < \delta / \sqrt{\text{view\_dim}}` with
:math:`\cos(x, y) = x \cdot y / (\max(\|x\|, \epsilon) \max(\|y\|, \epsilon))`. For the first passing view
every row becomes :math:`d_r - \hat p_r (\hat p_r \cdot d_r)` with :math:`\hat p_r = p_r / (\|p_r\| + \epsilon)`
and the weight-decay ratio is ``wd_ratio``; when no view passes, :math:`d` is unchanged and the ratio is 1.
Leaves with fewer than two dimensions are never projected.

Implementation notes (speed): both views are computed from the SAME four per-channel reductions
(:math:`p\cdot p, g\cdot g, g\cdot p, p\cdot d` per row; the layer view sums them), so the projection costs
those four reductions (on XLA:CPU each is its own pass over the leaf) plus the elementwise output pass, with no
transposes: the reductions view the leaf as ``(pre, C, post)`` by a free reshape, and the output pass works in
the leaf's own shape. The choice between views is branchless (``jnp.where``), so it runs under
``jit``/``vmap`` and inside ``optax.inject_hyperparams``.

References:
  Heo et al., "AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant Weights",
  ICLR 2021. https://arxiv.org/abs/2006.08217
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxfair import _checks

Array = jax.Array


def compute_dtype(dtype: Any) -> jnp.dtype:
  """Arithmetic dtype for a leaf: at least float32 (bf16/f16 leaves are computed in f32, stored as is)."""
  return jnp.promote_types(dtype, jnp.float32)


def as_scalar(x: Any, dtype: Any) -> Array:
  """A hyperparameter (Python number, array, tracer) as a 0-d array of `dtype`."""
  return jnp.asarray(x, dtype=dtype)


# ---------------------------------------------------------------------------------------------- validation


def check_nonnegative(value: Any, name: str) -> None:
  """`value >= 0` when concrete (tracers, e.g. under inject_hyperparams + jit, are not checked)."""
  _checks.check_positive(value, name, allow_zero=True)


def check_unit_interval(value: Any, name: str, *, closed: bool = False) -> None:
  """`0 <= value < 1` (or `<= 1` when `closed`) when concrete."""
  v = _checks.concrete_value(value)
  if v is None:
    return
  hi_ok = (v <= 1) if closed else (v < 1)
  if not np.all((v >= 0) & hi_ok):
    hint = "" if closed else (
        " (a value of 1 would never forget; try 0.9 or 0.999. Under optax.inject_hyperparams with bf16/f16 params "
        "the hyperparameters are cast to the params' dtype, where 0.999 rounds to 1: pass "
        "hyperparam_dtype=jnp.float32)")
    raise ValueError(f"`{name}` must lie in [0, 1{']' if closed else ')'}, got {v.tolist()}{hint}.")


def check_learning_rate(learning_rate: Any) -> None:
  if callable(learning_rate):
    return
  check_nonnegative(learning_rate, "learning_rate")


def is_static_int(x: Any) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def static_int_or_none(x: Any) -> int | None:
  """The Python int value of `x` if it is known at trace time (a Python/NumPy int or a concrete array)."""
  if is_static_int(x):
    return int(x)
  v = _checks.concrete_value(x)
  if v is None or v.ndim != 0 or not np.issubdtype(v.dtype, np.integer):
    return None
  return int(v)


def check_channel_axis(channel_axis: Any) -> None:
  if is_static_int(channel_axis):
    return
  v = _checks.concrete_value(channel_axis)
  if v is None:
    return
  if v.ndim != 0 or not (np.issubdtype(v.dtype, np.integer)):
    raise ValueError(f"`channel_axis` must be an int (-1 for flax layouts, 0 for PyTorch layouts), got "
                     f"{channel_axis!r}.")


# ---------------------------------------------------------------------------------------------- projection


def _normalize_axis(channel_axis: int, ndim: int, shape: tuple[int, ...]) -> int:
  if not -ndim <= channel_axis < ndim:
    raise ValueError(f"`channel_axis`={channel_axis} is out of range for a parameter of shape {shape}; use -1 "
                     "(flax layouts: Dense (in, out), Conv (kh, kw, in, out)) or 0 (PyTorch layouts).")
  return channel_axis % ndim


def fresh_copy(tree: Any, tag: int) -> Any:
  """`tree` behind an `optimization_barrier` that XLA cannot merge with another copy of a different `tag`.

  Expressions built on separate copies are not common subexpressions, so XLA fuses each into its own consumer
  instead of materialising a shared leaf-sized temporary (see `project`).
  """
  return jax.lax.optimization_barrier((tree, jnp.int32(tag)))[0]


def _project_static(p: Array, g: Array, d_sums: Array, d_out: Array, *, eps: Array, delta: Array,
                    wd_ratio: Array, axis: int) -> tuple[Array, Array]:
  """Projection with a known channel axis; all arrays already in the compute dtype. `d_sums` and `d_out` are
  the same direction, as one array or as two separately fused expressions (see `project`)."""
  shape = p.shape
  n_ch = shape[axis]
  pre = math.prod(shape[:axis])
  post = math.prod(shape[axis + 1:])
  # A free reshape, never a transpose: (rows, C) for a last channel axis, (C, cols) for a first one, else
  # (pre, C, post). 2-D views matter on CPU: XLA fuses the products into 2-D reductions, not 3-D ones.
  if post == 1:
    view, red = (pre, n_ch), (0,)
  elif pre == 1:
    view, red = (n_ch, post), (1,)
  else:
    view, red = (pre, n_ch, post), (0, 2)
  p3, g3, d3 = p.reshape(view), g.reshape(view), d_sums.reshape(view)

  def rowsum(x):
    return jnp.sum(x, axis=red, keepdims=True)

  pp, gg, gp, pd = rowsum(p3 * p3), rowsum(g3 * g3), rowsum(g3 * p3), rowsum(p3 * d3)
  # The layer view sums the C channel sums. Without the barrier XLA rewrites sum(sum(x)) into a second full
  # reduction over x (four extra passes over the leaf; 4.6x slower on CPU).
  pp, gg, gp, pd = jax.lax.optimization_barrier((pp, gg, gp, pd))
  p_norm, g_norm = jnp.sqrt(pp), jnp.sqrt(gg)
  cos_channel = jnp.abs(gp) / (jnp.maximum(g_norm, eps) * jnp.maximum(p_norm, eps))
  channel_ok = jnp.max(cos_channel) < delta / math.sqrt(p.size // n_ch)

  pp_l, gg_l, gp_l, pd_l = jnp.sum(pp), jnp.sum(gg), jnp.sum(gp), jnp.sum(pd)
  p_norm_l = jnp.sqrt(pp_l)
  cos_layer = jnp.abs(gp_l) / (jnp.maximum(jnp.sqrt(gg_l), eps) * jnp.maximum(p_norm_l, eps))
  layer_ok = cos_layer < delta / math.sqrt(p.size)

  # p_n (p_n . d) = p (p . d) / (||p|| + eps)^2 per row of the passing view.
  coef_channel = pd / jnp.square(p_norm + eps)
  coef_layer = pd_l / jnp.square(p_norm_l + eps)
  zero = jnp.zeros((), p.dtype)
  coef = jnp.where(channel_ok, coef_channel, jnp.where(layer_ok, coef_layer, zero))
  # The output pass stays in the leaf's own shape (only the C coefficients are reshaped): a reshaped read of
  # p inside it would stop XLA from writing the new parameters in place, costing a copy of the leaf.
  coef = coef.reshape(tuple(n_ch if i == axis else 1 for i in range(p.ndim)))
  d_new = d_out - p * coef
  ratio = jnp.where(channel_ok | layer_ok, wd_ratio, jnp.ones((), p.dtype))
  return d_new, ratio


def project(p: Array, g: Array, d: Array | Callable[[int], Array], *, eps: Any, delta: Any, wd_ratio: Any,
            channel_axis: Any) -> tuple[Array, Array]:
  """Removes the radial part of `d` where `g` looks scale-invariant w.r.t. `p` (AdamP/SGDP projection).

  Args:
    p: the pre-step parameter leaf.
    g: its raw gradient (the test uses it, not `d`).
    d: the update direction to project: an array, or a function `tag -> direction` that rebuilds it from
      `fresh_copy(inputs, tag)`. With the function, each use (the p.d sums, the output) gets its own copy of
      the expression, and XLA fuses the direction into each consumer instead of materialising it as a
      leaf-sized temporary. On CPU such a temporary page-faults afresh on every step (AdamP: 9,500 faults per
      step and a quarter to a third of the update time on the 10M-parameter benchmark tree). Pass an array
      when the direction is materialised anyway (SGDP's momentum buffer).
    eps: the norm floor of the cosine test and the `+ eps` of the normalised weight.
    delta: cosine threshold; a view passes iff max |cos| < delta / sqrt(view_dim).
    wd_ratio: weight-decay ratio returned when a view passes.
    channel_axis: output-channel axis of leaves with ndim >= 2 (int; -1 flax, 0 PyTorch). A traced value
      (``optax.inject_hyperparams`` without ``static_args="channel_axis"``) works, at the cost of computing
      every candidate axis and selecting; out of range for a leaf, it makes that leaf's update NaN (a static
      one raises).

  Returns:
    `(d_projected, ratio)`: the projected direction (same shape and dtype as `d`) and the 0-d weight-decay
    ratio (`wd_ratio` if a view passed, else 1; always 1 for leaves with ndim < 2).
  """
  for name, x in (("g", g),) + (() if callable(d) else (("d", d),)):
    _checks.check_same_shape(x, p, name, "p")
  direction = d if callable(d) else (lambda tag: d)
  if p.ndim < 2:
    d0 = direction(0)
    return d0, jnp.ones((), d0.dtype)
  dtype = p.dtype
  eps, delta, wd_ratio = (as_scalar(x, dtype) for x in (eps, delta, wd_ratio))
  axis = static_int_or_none(channel_axis)
  if axis is not None:
    return _project_static(p, g, direction(0), direction(1), eps=eps, delta=delta, wd_ratio=wd_ratio,
                           axis=_normalize_axis(axis, p.ndim, p.shape))
  # Traced channel axis: evaluate every candidate and select (branchless, slower). Each candidate gets its own
  # copies of p and g too, or XLA would materialise the products they share.
  ax = jnp.asarray(channel_axis)
  in_range = (ax >= -p.ndim) & (ax < p.ndim)
  ax = ax % p.ndim
  d_out, r_out = None, jnp.ones((), dtype)
  for i in range(p.ndim):
    p_i, g_i = fresh_copy((p, g), -1 - i)
    d_i, r_i = _project_static(p_i, g_i, direction(2 + 2 * i), direction(3 + 2 * i), eps=eps, delta=delta,
                               wd_ratio=wd_ratio, axis=i)
    d_out = d_i if d_out is None else jnp.where(ax == i, d_i, d_out)
    r_out = jnp.where(ax == i, r_i, r_out)
  # An out-of-range traced axis cannot raise under jit: NaN updates (the training loop's NaN guard stops).
  nan = jnp.asarray(jnp.nan, d_out.dtype)
  return jnp.where(in_range, d_out, nan), jnp.where(in_range, r_out, nan)


def map_leaves(fn, num_outputs: int, tree: Any, *rest: Any) -> tuple[Any, ...]:
  """`fn(leaf, *rest_leaves) -> tuple of num_outputs arrays`, mapped over `tree`; returns num_outputs trees.

  Unlike `jax.tree.map` + unzipping, this never confuses the user's own tuples with the per-leaf outputs.
  """
  leaves, treedef = jax.tree.flatten(tree)
  others = [treedef.flatten_up_to(r) for r in rest]
  outs = [fn(*args) for args in zip(leaves, *others)]
  return tuple(treedef.unflatten([o[i] for o in outs]) for i in range(num_outputs))

"""Small flax NNX models, converted once into a pure `(init, apply)` pair over plain pytrees.

`pure_model(make_module)` turns any NNX module factory into a `PureModel`:

    init(key) -> (params, model_state)                          # plain nested dicts of arrays
    apply(params, model_state, x, *, train, mask=None) -> (outputs, new_model_state)

so the training core is functional and `jax.vmap(model.init)(keys)` initialises many models at once.
Module convention: `__call__(x, *, train: bool, mask=None)`; `train` switches BatchNorm to batch statistics
and `mask` (B,) excludes padding examples from them. Layers are named attributes (not lists), so parameter
paths are readable strings ("hidden_0/kernel") that checkpoint cleanly.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Array = jax.Array
PyTree = Any

ACTIVATIONS = {"relu": jax.nn.relu, "gelu": jax.nn.gelu, "tanh": jnp.tanh, "silu": jax.nn.silu,
               "elu": jax.nn.elu, "identity": lambda x: x}


class PureModel(NamedTuple):
  init: Callable[[Array], tuple[PyTree, PyTree]]
  apply: Callable[..., tuple[Array, PyTree]]


def _fill(abstract: nnx.State, pure: PyTree) -> nnx.State:
  state = jax.tree.map(lambda v: v, abstract)
  nnx.replace_by_pure_dict(state, pure)
  return state


def pure_model(make_module: Callable[[nnx.Rngs], nnx.Module]) -> PureModel:
  """Converts an NNX module factory `rngs -> module` into a pure `PureModel` (params = `nnx.Param` leaves,
  model_state = everything else, e.g. BatchNorm statistics)."""
  graphdef, abstract_params, abstract_state = nnx.split(
      nnx.eval_shape(lambda: make_module(nnx.Rngs(0))), nnx.Param, ...)

  def init(key: Array) -> tuple[PyTree, PyTree]:
    _, params, state = nnx.split(make_module(nnx.Rngs(key)), nnx.Param, ...)
    return nnx.to_pure_dict(params), nnx.to_pure_dict(state)

  def apply(params: PyTree, model_state: PyTree, x: Array, *, train: bool = False,
            mask: Array | None = None) -> tuple[Array, PyTree]:
    module = nnx.merge(graphdef, _fill(abstract_params, params), _fill(abstract_state, model_state))
    outputs = module(x, train=train, mask=mask)
    _, _, new_state = nnx.split(module, nnx.Param, ...)
    return outputs, nnx.to_pure_dict(new_state)

  return PureModel(init, apply)


def _norm_mask(mask: Array | None, ndim: int) -> Array | None:
  return None if mask is None else mask.reshape(mask.shape + (1,) * (ndim - 1)).astype(bool)


NORM_POSITIONS = ("pre_activation", "post_activation")


class MLP(nnx.Module):
  """Flatten -> depth x [Dense(width) -> norm? -> activation] -> Dense(num_outputs); with
  `norm_position="post_activation"` the blocks are Dense -> activation -> norm (EnsLoss's tabular MLPs)."""

  def __init__(self, in_features: int, num_outputs: int, *, width: int, depth: int, activation: str,
               norm: str | None, rngs: nnx.Rngs, norm_position: str = "pre_activation"):
    if norm not in (None, "batch", "layer"):
      raise ValueError(f"`norm` must be None, 'batch' or 'layer', got {norm!r}.")
    if activation not in ACTIVATIONS:
      raise ValueError(f"`activation` must be one of {sorted(ACTIVATIONS)}, got {activation!r}.")
    if norm_position not in NORM_POSITIONS:
      raise ValueError(f"`norm_position` must be one of {NORM_POSITIONS}, got {norm_position!r}.")
    self.depth, self.activation, self.norm = depth, activation, norm
    self.post_activation = norm_position == "post_activation"
    features = in_features
    for i in range(depth):
      # A Dense followed directly by BatchNorm is scale-invariant in its kernel; its bias would be redundant.
      use_bias = norm != "batch" or self.post_activation
      setattr(self, f"hidden_{i}", nnx.Linear(features, width, use_bias=use_bias, rngs=rngs))
      if norm == "batch":
        setattr(self, f"norm_{i}", nnx.BatchNorm(width, momentum=0.9, rngs=rngs))
      elif norm == "layer":
        setattr(self, f"norm_{i}", nnx.LayerNorm(width, rngs=rngs))
      features = width
    self.head = nnx.Linear(features, num_outputs, rngs=rngs)

  def __call__(self, x: Array, *, train: bool = False, mask: Array | None = None) -> Array:
    x = x.reshape(x.shape[0], -1)
    act = ACTIVATIONS[self.activation]
    for i in range(self.depth):
      x = getattr(self, f"hidden_{i}")(x)
      if self.post_activation:
        x = act(x)
      if self.norm == "batch":
        x = getattr(self, f"norm_{i}")(x, use_running_average=not train, mask=_norm_mask(mask, x.ndim))
      elif self.norm == "layer":
        x = getattr(self, f"norm_{i}")(x)
      if not self.post_activation:
        x = act(x)
    return self.head(x)


class CNN(nnx.Module):
  """[Conv3x3 (no bias) -> BatchNorm -> ReLU -> 2x2 avg-pool] per stage -> global average -> Dense.

  Each conv kernel is followed by BatchNorm, so the loss is invariant to its scale: the setting of AdamP/SGDP
  (Heo et al., ICLR 2021). Pooling is skipped once the feature map is 1x1 or smaller than 2.
  """

  def __init__(self, input_shape: Sequence[int], num_outputs: int, *, channels: Sequence[int],
               rngs: nnx.Rngs):
    if len(input_shape) != 3:
      raise ValueError(f"`input_shape` must be (height, width, channels), got {tuple(input_shape)}.")
    self.num_stages = len(channels)
    self.in_channels = in_ch = input_shape[-1]
    for i, ch in enumerate(channels):
      setattr(self, f"conv_{i}", nnx.Conv(in_ch, ch, (3, 3), padding="SAME", use_bias=False, rngs=rngs))
      setattr(self, f"norm_{i}", nnx.BatchNorm(ch, momentum=0.9, rngs=rngs))
      in_ch = ch
    self.head = nnx.Linear(in_ch, num_outputs, rngs=rngs)

  def __call__(self, x: Array, *, train: bool = False, mask: Array | None = None) -> Array:
    if x.ndim != 4 or x.shape[-1] != self.in_channels:
      raise ValueError(f"CNN inputs must be NHWC (batch, height, width, {self.in_channels}), got shape {x.shape}; "
                       "for NCHW images pass x.transpose(0, 2, 3, 1).")
    for i in range(self.num_stages):
      x = getattr(self, f"conv_{i}")(x)
      x = getattr(self, f"norm_{i}")(x, use_running_average=not train, mask=_norm_mask(mask, x.ndim))
      x = jax.nn.relu(x)
      if x.shape[1] >= 2 and x.shape[2] >= 2:
        x = nnx.avg_pool(x, (2, 2), strides=(2, 2))
    return self.head(x.mean(axis=(1, 2)))


def mlp(input_shape: Sequence[int], num_outputs: int, *, width: int = 128, depth: int = 2,
        activation: str = "relu", norm: str | None = None, norm_position: str = "pre_activation") -> PureModel:
  """A pure MLP; `input_shape` excludes the batch axis (inputs are flattened; an int n means (n,)).
  `norm_position`: "pre_activation" (Dense -> norm -> act) or "post_activation" (Dense -> act -> norm)."""
  input_shape = (input_shape,) if isinstance(input_shape, (int, np.integer)) else tuple(input_shape)
  in_features = int(np.prod(input_shape))
  return pure_model(lambda rngs: MLP(in_features, num_outputs, width=width, depth=depth, activation=activation,
                                     norm=norm, rngs=rngs, norm_position=norm_position))


def cnn(input_shape: Sequence[int], num_outputs: int, *, channels: Sequence[int] = (32, 64)) -> PureModel:
  """A pure small CNN with BatchNorm; `input_shape` is (height, width, channels)."""
  return pure_model(lambda rngs: CNN(tuple(input_shape), num_outputs, channels=tuple(channels), rngs=rngs))


def linear(input_shape: Sequence[int], num_outputs: int) -> PureModel:
  """A linear model (an MLP with no hidden layer)."""
  return mlp(input_shape, num_outputs, depth=0)

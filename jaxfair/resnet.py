"""ResNet-18 for 32x32 images (the CIFAR variant of adversarial-training papers), in flax NNX, as a `PureModel`.

Architecture (He et al., 2016; the CIFAR stem of Madry et al. / TRADES / DONE): a 3x3 stride-1 convolution with
`width` channels (no max-pool), four stages of two BasicBlocks (3x3 conv - BN - ReLU - 3x3 conv - BN, plus a
1x1 conv - BN projection shortcut when the shape changes) with widths (1, 2, 4, 8) x `width` and strides
(1, 2, 2, 2), global average pooling and a dense head: 11.17M parameters at width 64 and 10 classes.

`resnet18(input_shape, num_outputs)` returns `PureModel(init, apply)` like `jaxfair.models` (BatchNorm
statistics live in `model_state`; `apply(..., train=True, mask=...)` excludes padding from the batch
statistics).

References:
  He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016.
"""
from __future__ import annotations

from typing import Sequence

import jax
from flax import nnx

from jaxfair.models import PureModel, pure_model

Array = jax.Array


def _bn_mask(mask, x):
  return None if mask is None else mask.reshape(mask.shape + (1,) * (x.ndim - 1)).astype(bool)


class BasicBlock(nnx.Module):
  """conv3x3(stride) - BN - ReLU - conv3x3 - BN, plus the (projected) shortcut, then ReLU."""

  def __init__(self, in_ch: int, out_ch: int, stride: int, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(in_ch, out_ch, (3, 3), strides=(stride, stride), padding="SAME", use_bias=False,
                          rngs=rngs)
    self.bn1 = nnx.BatchNorm(out_ch, momentum=0.9, epsilon=1e-5, rngs=rngs)
    self.conv2 = nnx.Conv(out_ch, out_ch, (3, 3), padding="SAME", use_bias=False, rngs=rngs)
    self.bn2 = nnx.BatchNorm(out_ch, momentum=0.9, epsilon=1e-5, rngs=rngs)
    self.project = stride != 1 or in_ch != out_ch
    if self.project:
      self.shortcut_conv = nnx.Conv(in_ch, out_ch, (1, 1), strides=(stride, stride), use_bias=False, rngs=rngs)
      self.shortcut_bn = nnx.BatchNorm(out_ch, momentum=0.9, epsilon=1e-5, rngs=rngs)

  def __call__(self, x: Array, *, train: bool, mask: Array | None = None) -> Array:
    h = self.conv1(x)
    h = jax.nn.relu(self.bn1(h, use_running_average=not train, mask=_bn_mask(mask, h)))
    h = self.conv2(h)
    h = self.bn2(h, use_running_average=not train, mask=_bn_mask(mask, h))
    s = x
    if self.project:
      s = self.shortcut_conv(x)
      s = self.shortcut_bn(s, use_running_average=not train, mask=_bn_mask(mask, s))
    return jax.nn.relu(h + s)


class ResNet(nnx.Module):
  """CIFAR-style ResNet with BasicBlocks; `stage_sizes=(2, 2, 2, 2)` is ResNet-18."""

  def __init__(self, input_shape: Sequence[int], num_outputs: int, *, stage_sizes: Sequence[int] = (2, 2, 2, 2),
               width: int = 64, rngs: nnx.Rngs):
    if len(input_shape) != 3:
      raise ValueError(f"`input_shape` must be (height, width, channels), got {tuple(input_shape)}.")
    self.stage_sizes = tuple(stage_sizes)
    self.stem = nnx.Conv(input_shape[-1], width, (3, 3), padding="SAME", use_bias=False, rngs=rngs)
    self.stem_bn = nnx.BatchNorm(width, momentum=0.9, epsilon=1e-5, rngs=rngs)
    in_ch = width
    for i, n in enumerate(self.stage_sizes):
      out_ch = width * 2 ** i
      for j in range(n):
        stride = 2 if (i > 0 and j == 0) else 1
        setattr(self, f"stage{i}_block{j}", BasicBlock(in_ch, out_ch, stride, rngs=rngs))
        in_ch = out_ch
    self.head = nnx.Linear(in_ch, num_outputs, rngs=rngs)

  def __call__(self, x: Array, *, train: bool = False, mask: Array | None = None) -> Array:
    h = self.stem(x)
    h = jax.nn.relu(self.stem_bn(h, use_running_average=not train, mask=_bn_mask(mask, h)))
    for i, n in enumerate(self.stage_sizes):
      for j in range(n):
        h = getattr(self, f"stage{i}_block{j}")(h, train=train, mask=mask)
    return self.head(h.mean(axis=(1, 2)))


def resnet18(input_shape: Sequence[int] = (32, 32, 3), num_outputs: int = 10, *, width: int = 64) -> PureModel:
  """A pure ResNet-18 (`width` = 64 is the standard; smaller widths for tests and CPU runs)."""
  return pure_model(lambda rngs: ResNet(tuple(input_shape), num_outputs, stage_sizes=(2, 2, 2, 2), width=width,
                                        rngs=rngs))


def resnet(input_shape: Sequence[int], num_outputs: int, *, stage_sizes: Sequence[int] = (2, 2, 2, 2),
           width: int = 64) -> PureModel:
  """A pure CIFAR-style ResNet with BasicBlocks and the given stage sizes."""
  return pure_model(lambda rngs: ResNet(tuple(input_shape), num_outputs, stage_sizes=tuple(stage_sizes),
                                        width=width, rngs=rngs))

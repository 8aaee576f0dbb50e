"""Synthetic data generators: pure and jittable, `key -> arrays`.

* `linear_regression`: noiseless (interpolation) linear regression with heterogeneous sample norms and a
  shared minimiser, the toy setting of Sow et al. (ICLR 2025) for loss-based reweighting.
* `gaussian_mixture`: classification with a minority group and label noise (group-robustness experiments).
* `long_tailed_mask` / `long_tailed`: exponential class imbalance n_c = n_0 * ratio^(-c/(K-1)) of any
  labelled dataset (Cui et al., 2019).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxfair import _checks
from jaxfair.data.offline import Dataset

Array = jax.Array


class RegressionTask(NamedTuple):
  x_train: Array
  y_train: Array  # (n, 1)
  x_test: Array
  y_test: Array
  w_star: Array   # the shared minimiser: y = x @ w_star exactly (plus optional noise)


def linear_regression(key: Array, num_train: int, num_test: int, dim: int, *, norm_sigma: float = 1.0,
                      noise: float = 0.0) -> RegressionTask:
  """y = x w* with ||x_i|| log-normal: x_i = exp(norm_sigma * s_i) u_i, u_i ~ N(0, I/dim), s_i ~ N(0, 1).

  With noise = 0 every example's loss is minimised by the same w* (the interpolation regime).
  """
  k_w, k_u, k_s, k_e = jax.random.split(key, 4)
  n = num_train + num_test
  w_star = jax.random.normal(k_w, (dim, 1))
  u = jax.random.normal(k_u, (n, dim)) / jnp.sqrt(dim)
  x = jnp.exp(norm_sigma * jax.random.normal(k_s, (n, 1))) * u
  y = x @ w_star + noise * jax.random.normal(k_e, (n, 1))
  return RegressionTask(x[:num_train], y[:num_train], x[num_train:], y[num_train:], w_star)


class GroupedClassification(NamedTuple):
  x: Array
  y: Array        # observed (possibly noisy) labels
  y_clean: Array  # labels before noise
  group: Array    # group index of each example


def gaussian_mixture(key: Array, num_examples: int, dim: int, *, num_classes: int = 2,
                     group_fractions: tuple[float, ...] = (0.9, 0.1), separation: float = 2.0,
                     label_noise: float = 0.0, noise_scale: float = 1.0) -> GroupedClassification:
  """Class- and group-dependent Gaussian clusters; minority groups need their own decision boundary.

  Each (class c, group g) cluster has mean `separation * m_{c,g}` with m_{c,g} random unit vectors, the same
  for every call with the same key; group g is drawn with probability `group_fractions[g]`, the class
  uniformly; then a fraction `label_noise` of labels is replaced by a uniformly drawn *other* class.
  """
  _checks.check_positive(group_fractions, "group_fractions")
  v = _checks.concrete_value(label_noise)
  if v is not None and not 0 <= v <= 1:
    raise ValueError(f"`label_noise` must be a fraction in [0, 1], got {v.tolist()}.")
  k_m, k_g, k_c, k_x, k_flip, k_new = jax.random.split(key, 6)
  num_groups = len(group_fractions)
  means = jax.random.normal(k_m, (num_classes, num_groups, dim))
  means = separation * means / jnp.linalg.norm(means, axis=-1, keepdims=True)
  group = jax.random.categorical(k_g, jnp.log(jnp.asarray(group_fractions)), shape=(num_examples,))
  y_clean = jax.random.randint(k_c, (num_examples,), 0, num_classes)
  x = means[y_clean, group] + noise_scale * jax.random.normal(k_x, (num_examples, dim))
  flip = jax.random.uniform(k_flip, (num_examples,)) < label_noise
  other = (y_clean + jax.random.randint(k_new, (num_examples,), 1, max(num_classes, 2))) % num_classes
  y = jnp.where(flip, other, y_clean)
  return GroupedClassification(x, y.astype(jnp.int32), y_clean.astype(jnp.int32), group.astype(jnp.int32))


def long_tailed_mask(key: Array, labels: Array, num_classes: int, imbalance_ratio: float) -> Array:
  """Boolean keep-mask giving class c a share ratio^(-c/(K-1)) of its examples (class 0 keeps all).

  Which examples are kept within a class is random (from `key`); the counts are exact:
  ceil(n_c * ratio^(-c/(K-1))).
  """
  if imbalance_ratio < 1:
    raise ValueError(f"`imbalance_ratio` must be >= 1 (n_max / n_min), got {imbalance_ratio}.")
  n = labels.shape[0]
  fractions = jnp.power(float(imbalance_ratio), -jnp.arange(num_classes) / max(num_classes - 1, 1))
  counts = jnp.bincount(labels, length=num_classes)
  keep_counts = jnp.ceil(counts * fractions)
  order = jnp.argsort(labels + jax.random.uniform(key, (n,)))   # by class, then random priority
  class_start = jnp.cumsum(counts) - counts
  rank_sorted = jnp.arange(n) - class_start[labels[order]]
  rank = jnp.zeros(n, jnp.int32).at[order].set(rank_sorted.astype(jnp.int32))
  return rank < keep_counts[labels]


def long_tailed(data: Dataset, imbalance_ratio: float, *, seed: int = 0) -> Dataset:
  """Long-tailed version of a dataset: the training split is subsampled, the test split stays balanced."""
  keep = np.asarray(long_tailed_mask(jax.random.key(seed), jnp.asarray(data.y_train), data.num_classes,
                                     imbalance_ratio))
  return data._replace(x_train=data.x_train[keep], y_train=data.y_train[keep],
                       name=f"{data.name}_lt{imbalance_ratio:g}")

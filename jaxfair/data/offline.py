"""Real datasets that need no download (they ship with scikit-learn), with deterministic splits.

Each loader returns a `Dataset` with a stratified train/test split drawn from `seed`; features are
standardised with statistics of the training split only (`standardize=True`), or, for digits as images,
scaled to [0, 1].
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Dataset(NamedTuple):
  """A labelled dataset in host memory; `y` are integer class indices in [0, num_classes)."""
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  name: str = "dataset"

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.x_train.shape[1:])


def standardize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Zero mean / unit variance per feature, fitted on `x_train` (constant features are only centred)."""
  x_train, x_test = np.asarray(x_train), np.asarray(x_test)
  if x_train.ndim < 1 or x_test.shape[1:] != x_train.shape[1:]:
    raise ValueError(f"`x_test` rows have shape {x_test.shape[1:]} but `x_train` rows {x_train.shape[1:]}; "
                     "both splits need the same features.")
  for name, x in (("x_train", x_train), ("x_test", x_test)):
    if not np.all(np.isfinite(x)):
      raise ValueError(f"`{name}` has NaN or Inf; drop or impute those rows before standardising.")
  mean = x_train.mean(axis=0)
  std = x_train.std(axis=0)
  std = np.where(std > 0, std, 1.0)
  return ((x_train - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32)


def split(x: np.ndarray, y: np.ndarray, *, seed: int = 0, test_fraction: float = 0.25,
          standardize_features: bool = True, name: str = "dataset",
          num_classes: int | None = None) -> Dataset:
  """Stratified, seeded train/test split of `(x, y)`; labels are re-encoded to 0..K-1 if they are not."""
  x = np.asarray(x)
  y = np.asarray(y)
  if x.shape[0] != y.shape[0]:
    raise ValueError(f"`x` has {x.shape[0]} rows but `y` has {y.shape[0]}; they must match.")
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"`test_fraction` must be in (0, 1), got {test_fraction}.")
  if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
    rows = np.flatnonzero(~np.all(np.isfinite(x.reshape(len(x), -1)), axis=1))
    raise ValueError(f"`x` has NaN or Inf in rows {rows[:5].tolist()}{' ...' if len(rows) > 5 else ''}; drop or "
                     "impute them first (`load_csv` / `load_arff` drop rows with missing values).")
  classes, y_idx = np.unique(y, return_inverse=True)
  not_indices = not np.issubdtype(y.dtype, np.integer) or classes.min() < 0
  if not_indices or (num_classes is None and not np.array_equal(classes, np.arange(len(classes)))):
    y = y_idx  # e.g. labels {1, 2} (common in UCI/OpenML tables) -> {0, 1}; a given num_classes keeps gaps
  y = y.astype(np.int32)
  if num_classes is not None and y.max() >= num_classes:
    raise ValueError(f"`y` has labels up to {y.max()} but `num_classes` is {num_classes}; pass a larger "
                     "`num_classes` or leave it None (inferred).")
  num_classes = int(num_classes or (y.max() + 1))
  rng = np.random.default_rng(seed)
  test_mask = np.zeros(len(y), dtype=bool)
  for c in range(num_classes):  # stratified: the same test fraction from each class
    idx = np.flatnonzero(y == c)
    rng.shuffle(idx)
    test_mask[idx[:int(round(test_fraction * len(idx)))]] = True
  train_idx = rng.permutation(np.flatnonzero(~test_mask))
  test_idx = np.flatnonzero(test_mask)
  x_train, x_test = x[train_idx].astype(np.float32), x[test_idx].astype(np.float32)
  if standardize_features:
    x_train, x_test = standardize(x_train, x_test)
  return Dataset(x_train, y[train_idx], x_test, y[test_idx], num_classes, name)


def _sklearn(loader_name: str):
  import sklearn.datasets  # pylint: disable=g-import-not-at-top
  bunch = getattr(sklearn.datasets, loader_name)()
  return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target)


def load_digits(*, seed: int = 0, test_fraction: float = 0.25, image: bool = False) -> Dataset:
  """scikit-learn's 8x8 handwritten digits (1797 images, 10 classes).

  Args:
    seed: split seed.
    test_fraction: share of each class held out for testing.
    image: if True, inputs are (N, 8, 8, 1) images scaled to [0, 1] (for CNNs and attacks in pixel space);
      otherwise (N, 64) standardised features.
  """
  x, y = _sklearn("load_digits")
  if image:
    data = split(x / 16.0, y, seed=seed, test_fraction=test_fraction, standardize_features=False,
                 name="digits")
    return data._replace(x_train=data.x_train.reshape(-1, 8, 8, 1), x_test=data.x_test.reshape(-1, 8, 8, 1))
  return split(x, y, seed=seed, test_fraction=test_fraction, name="digits")


def load_breast_cancer(*, seed: int = 0, test_fraction: float = 0.3) -> Dataset:
  """Wisconsin breast cancer (569 examples, 30 features, binary); 70/30 split as in EnsLoss's protocol."""
  return split(*_sklearn("load_breast_cancer"), seed=seed, test_fraction=test_fraction, name="breast_cancer")


def load_wine(*, seed: int = 0, test_fraction: float = 0.25) -> Dataset:
  """UCI wine (178 examples, 13 features, 3 classes)."""
  return split(*_sklearn("load_wine"), seed=seed, test_fraction=test_fraction, name="wine")


def load_iris(*, seed: int = 0, test_fraction: float = 0.25) -> Dataset:
  """Fisher's iris (150 examples, 4 features, 3 classes)."""
  return split(*_sklearn("load_iris"), seed=seed, test_fraction=test_fraction, name="iris")


def select_classes(data: Dataset, classes: tuple[int, ...]) -> Dataset:
  """Keeps only `classes`, relabelled 0..len(classes)-1 in the given order (e.g. a one-vs-one pair)."""
  if len(set(classes)) != len(classes) or not all(0 <= c < data.num_classes for c in classes):
    raise ValueError(f"`classes` must be distinct labels in [0, {data.num_classes}), got {tuple(classes)}.")

  def pick(x, y):
    keep = np.isin(y, classes)
    relabel = np.full(data.num_classes, -1, dtype=np.int32)
    relabel[list(classes)] = np.arange(len(classes))
    return x[keep], relabel[y[keep]]
  x_train, y_train = pick(data.x_train, data.y_train)
  x_test, y_test = pick(data.x_test, data.y_test)
  return Dataset(x_train, y_train, x_test, y_test, len(classes),
                 f"{data.name}[{','.join(map(str, classes))}]")

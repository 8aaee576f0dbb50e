"""Test configuration: 4 fake CPU devices for sharding tests, strict rank promotion.

`(B,) * (B, 1)` silently broadcasting to `(B, B)` is the classic per-example-loss bug, so every test runs with
`jax_numpy_rank_promotion="raise"`.
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_numpy_rank_promotion", "raise")

import pytest  # noqa: E402


def full_size() -> bool:
  """True when slow tests should run at their full size (JAXFAIR_FULL=1); CI runs them small."""
  return os.environ.get("JAXFAIR_FULL", "0") == "1"


@pytest.fixture
def x64():
  """Run a test body in float64."""
  with jax.enable_x64(True):
    yield


@pytest.fixture
def write_fake_mnist():
  """Writes the four gzipped MNIST idx files into a folder: labels 0..9 in turn, random pixels whose mean
  grows with the label (so a working pipeline learns them)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxfair import data  # pylint: disable=g-import-not-at-top

  def write(root, num_train: int, num_test: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", num_train), ("t10k", num_test)):
      labels = (np.arange(n) % 10).astype(np.uint8)
      images = rng.integers(0, 128, (n, 28, 28)) + 12 * labels[:, None, None]
      data.write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images.astype(np.uint8))
      data.write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root

  return write


@pytest.fixture
def write_fake_cifar10():
  """Writes CIFAR-10's six python pickles into a folder: `per_batch` images each, shuffled labels 0..9, random
  pixels whose mean grows with the label. Returns {file name: the pickled dict}."""
  import pickle  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  def write(root, per_batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
      labels = rng.permutation(per_batch) % 10
      images = rng.integers(0, 128, (per_batch, 3072)) + 12 * labels[:, None]
      batches[name] = {b"data": images.astype(np.uint8), b"labels": labels.tolist()}
      with open(root / name, "wb") as f:
        pickle.dump(batches[name], f)
    return batches

  return write

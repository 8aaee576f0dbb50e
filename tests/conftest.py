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

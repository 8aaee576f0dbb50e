import jax
import jax.numpy as jnp
import pytest


def test_rank_promotion_raises():
  with pytest.raises(ValueError, match="rank"):
    _ = jnp.ones(3) * jnp.ones((3, 1))


def test_four_fake_devices():
  assert jax.device_count() == 4

"""Every theory-check module, at its quick size, must pass (the full size: `make theory`)."""
import importlib

import jax
import pytest

from theory_checks.run_all import check_modules


@pytest.mark.parametrize("name", check_modules())
def test_theory_check_passes(name):
  module = importlib.import_module(f"theory_checks.{name}")
  with jax.enable_x64(True), jax.numpy_rank_promotion("allow"):
    checks = module.run(quick=True)
  assert checks, f"{name} returned no checks"
  failing = [c for c in checks if not c.passed]
  assert not failing, failing

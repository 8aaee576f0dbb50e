"""`python -m benchmarks.run_all` (the README's `make bench`) runs every benchmark module and nothing else."""
import importlib
import subprocess
import sys

from benchmarks import run_all


def test_run_all_selects_modules_with_a_main():
  names = run_all.benchmark_names()
  assert {"optimizers", "inductive_bias", "adversarial"} <= set(names)
  assert not {"harness", "xla_profile", "run_all"} & set(names)
  for name in names:
    assert callable(getattr(importlib.import_module(f"benchmarks.{name}"), "main", None)), name


def test_run_all_rejects_an_unknown_name():
  out = subprocess.run([sys.executable, "-m", "benchmarks.run_all", "--only", "optimiser"], capture_output=True,
                       text=True, check=False)
  assert out.returncode != 0 and "unknown benchmark(s) ['optimiser']" in out.stderr

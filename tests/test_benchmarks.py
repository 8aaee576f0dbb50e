"""`python -m benchmarks.run_all` (the README's `make bench`) runs every benchmark module and nothing else."""
import importlib
import json
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


def test_results_record_the_command_line(tmp_path, monkeypatch):
  from benchmarks import harness  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(sys, "argv", ["/somewhere/benchmarks/run_all.py", "--only", "optimizers", "--reps", "3"])
  timing = harness.time_interleaved({"noop": lambda: None}, reps=2, warmup=0)
  path = harness.write_results("demo", timing, {"ratios": {}}, results_dir=tmp_path)
  payload = json.loads(path.read_text())
  assert payload["command"] == "python -m benchmarks.run_all --only optimizers --reps 3"

"""End-to-end tests of the experiment entry point, every config's `:quick` variant, the builder and the plots."""
from __future__ import annotations

import glob
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import optax
import pytest

from experiments import build
from experiments import main as main_lib
from experiments import plot

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in glob.glob(str(ROOT / "experiments" / "configs" / "*.py"))
                 if not os.path.basename(p).startswith("_"))
# erm.py:quick runs end to end through the real command line in test_main_cli_quick_...; every other config
# runs in process below.
IN_PROCESS = [p for p in CONFIGS if os.path.basename(p) != "erm.py"]


def _records(workdir):
  return [json.loads(line) for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def test_main_cli_quick_writes_workdir_and_applies_overrides(tmp_path):
  """Acceptance 1 and 5: the real command line, with `--config.x=...` overrides."""
  workdir = tmp_path / "w"
  cmd = [sys.executable, "-m", "experiments.main", "--config=experiments/configs/erm.py:quick",
         f"--workdir={workdir}", "--config.num_steps=40", "--config.runner.chunk_steps=20",
         "--config.grid.learning_rate=(0.002,0.004)", "--config.runner.progress=log"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  config = json.loads((workdir / "config.json").read_text())
  assert config["num_steps"] == 40 and config["runner"]["chunk_steps"] == 20
  assert config["grid"]["learning_rate"] == [0.002, 0.004]
  recs = _records(workdir)
  assert max(r["step"] for r in recs) == 40
  assert {r["hparams"]["learning_rate"] for r in recs} == {0.002, 0.004}
  assert (workdir / "checkpoints" / "40").is_dir()
  assert list((workdir / "plots").glob("*.png"))
  assert "final test_accuracy [learning_rate=0.002]" in out.stdout
  summary = json.loads((workdir / "summary.json").read_text())
  accuracy = [g["metrics"]["test_accuracy"]["mean"] for g in summary["by_hparams"]]
  assert min(accuracy) > 0.6  # 40 steps of a width-32 MLP on digits: well above chance (0.1)
  assert "step 40/40" in out.stdout  # periodic progress lines when not on a terminal


@pytest.mark.parametrize("config_path", IN_PROCESS, ids=[os.path.basename(p) for p in IN_PROCESS])
def test_every_config_quick_end_to_end(config_path, tmp_path):
  """Every experiments/configs/*.py runs its `:quick` variant end to end (method engineers' configs too).

  The run must finish and leave its config.json in the workdir (or in per-method sub-workdirs); every
  metrics.jsonl it writes (the runner's log; experiments with their own result files may have none) must be
  non-empty with finite scalar metrics.
  """
  rel = os.path.relpath(config_path, ROOT)
  config = main_lib.load_config(f"{rel}:quick")
  assert config.get("experiment"), f"{rel} must set config.experiment"
  main_lib.run_experiment(config, str(tmp_path))
  assert list(tmp_path.rglob("config.json")), f"{rel}:quick wrote no config.json under its workdir"
  for log in sorted(tmp_path.rglob("metrics.jsonl")):
    recs = _records(log.parent)
    assert recs, f"{log} is empty"
    for r in recs:
      for v in r["metrics"].values():
        assert isinstance(v, list) or v not in ("nan", "inf", "-inf"), f"{log}: non-finite metric in {r}"


def test_config_docstrings_give_launch_command():
  """Each config's docstring gives its launch command (and, by convention, the expected result)."""
  for path in CONFIGS:
    text = pathlib.Path(path).read_text()
    name = os.path.relpath(path, ROOT)
    assert "python -m experiments.main" in text and name in text, f"{name}: docstring needs its launch command"


def test_load_config_overrides_and_errors(tmp_path):
  config = main_lib.load_config("experiments/configs/erm.py:quick",
                                ["num_steps=7", "grid.learning_rate=(0.1,0.2)", "name=x", "runner.plots=false"])
  assert config.num_steps == 7 and tuple(config.grid.learning_rate) == (0.1, 0.2) and config.name == "x"
  assert config.runner.plots is False
  with pytest.raises(FileNotFoundError):
    main_lib.load_config("experiments/configs/nope.py")
  config.experiment = "does_not_exist"
  with pytest.raises(ValueError, match="no experiments/does_not_exist.py"):
    main_lib.run_experiment(config, str(tmp_path))


def test_build_components():
  assert build.build("jaxfair.losses.softmax_cross_entropy").__name__ == "softmax_cross_entropy"
  assert build.build(None) is None
  focal = build.build({"fn": "jaxfair.losses.focal", "kwargs": {"gamma": 1.0}, "partial": True})
  assert focal.keywords == {"gamma": 1.0}
  model = build.build({"fn": "jaxfair.models.mlp", "kwargs": {"width": 8}}, input_shape=(4,), num_outputs=3,
                      unused_injection=1)
  assert hasattr(model, "init") and hasattr(model, "apply")
  nested = build.build(
      {"fn": "optax.MultiSteps", "kwargs": {"opt": {"fn": "optax.sgd", "kwargs": {"learning_rate": 0.1}},
                                              "every_k_schedule": 2}})
  assert isinstance(nested, optax.MultiSteps) and hasattr(nested.inner_opt, "update")
  with pytest.raises(ValueError, match="has no attribute path 'no_such_model'"):
    build.build({"fn": "jaxfair.models.no_such_model"})
  with pytest.raises(ValueError, match="import path"):
    build.resolve(".relative")
  with pytest.raises(ValueError, match="cannot import"):
    build.resolve("no_such_package_xyz.thing")
  with pytest.raises(ValueError, match="'fn'"):
    build.build({"kwargs": {}})
  with pytest.raises(TypeError, match="spec"):
    build.build(3)


def test_optimizer_grid_names_checked():
  from experiments import train  # pylint: disable=g-import-not-at-top
  make = train.optimizer_factory({"fn": "optax.adam", "kwargs": {"b1": 0.8}}, ["learning_rate"])
  tx = make({"learning_rate": 0.1})
  assert hasattr(tx, "update")
  with pytest.raises(ValueError, match="not an argument of the optimizer"):
    train.optimizer_factory({"fn": "optax.adam"}, ["temperature"])
  with pytest.raises(ValueError, match="one place"):
    train.optimizer_factory({"fn": "optax.adam", "kwargs": {"learning_rate": 0.1}}, ["learning_rate"])


def _fake_log(path: pathlib.Path):
  rng = np.random.default_rng(0)
  lines = []
  for h, lr in enumerate((0.1, 0.3)):
    for s in range(3):
      run = 3 * h + s
      for step in range(1, 21):
        lines.append({"kind": "train", "step": step, "run": run, "seed_index": s, "seed": s, "hparam_index": h,
                      "hparams": {"lr": lr}, "metrics": {"loss": float(np.exp(-lr * step) + 0.01 * rng.random())}})
      lines.append({"kind": "eval", "step": 20, "run": run, "seed_index": s, "seed": s, "hparam_index": h,
                    "hparams": {"lr": lr}, "metrics": {"test_accuracy": 0.8 + 0.05 * h + 0.01 * s,
                                                       "per_class": [0.7, 0.9, "nan"]}})
  path.mkdir(parents=True, exist_ok=True)
  (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"torn": ')


def test_plots_from_logs_alone(tmp_path):
  _fake_log(tmp_path / "a")
  _fake_log(tmp_path / "b")
  recs = plot.read_metrics(tmp_path / "a")  # the torn last line is skipped
  assert len(recs) == 2 * 3 * 21
  curves = plot.collect(recs, "loss")
  assert set(curves) == {"lr=0.1", "lr=0.3"} and curves["lr=0.1"][1].shape == (3, 20)
  finals = plot.final_values(recs, "test_accuracy")
  np.testing.assert_allclose(finals["lr=0.3"], [0.85, 0.86, 0.87])
  paths = plot.make_plots(tmp_path / "a")
  assert {p.name for p in paths} == {"train_loss.png", "final_test_accuracy.png", "final_per_class.png"}
  assert all(p.stat().st_size > 1000 for p in paths)
  out = subprocess.run([sys.executable, "-m", "experiments.plot", f"--workdir={tmp_path / 'a'}",
                        f"--workdir={tmp_path / 'b'}", f"--out={tmp_path / 'cmp'}", "--label=ERM", "--label=DRO"],
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert (tmp_path / "cmp" / "compare_final_test_accuracy.png").exists()
  assert (tmp_path / "cmp" / "compare_train_loss.png").exists()
  with pytest.raises(FileNotFoundError, match="workdir"):
    plot.read_metrics(tmp_path / "missing")

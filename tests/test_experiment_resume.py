"""The experiments that save results per unit of work resume where an interruption stopped them and reproduce
the uninterrupted run: inductive bias per (task, space), EnsLoss per (model, loss), reweighted classification
per dataset. A finished run (its summary written) is computed afresh when run again, and a workdir holding
another config's results is refused rather than mixed in."""
import json
import shutil

import numpy as np
import pytest

from experiments import main as main_lib
from experiments import runner


def _rows(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _without_timing(row):
  return dict(row, metrics={k: v for k, v in row["metrics"].items() if k != "seconds"})


def test_inductive_bias_resumes_and_matches_the_uninterrupted_run(tmp_path):
  config = main_lib.load_config("experiments/configs/inductive_bias_spaces.py:quick")
  config.plot = None
  full, cut = tmp_path / "full", tmp_path / "cut"
  main_lib.run_experiment(config, str(full))
  shutil.copytree(full, cut)
  rows = _rows(full)
  assert len(rows) >= 3
  # Interrupt after the first record, halfway through writing the second one (so before the summary).
  (cut / "summary.json").unlink()
  lines = (cut / "metrics.jsonl").read_text().splitlines(keepends=True)
  (cut / "metrics.jsonl").write_text(lines[0] + lines[1][:40])
  for row in rows[1:]:
    (cut / f"losses_{row['task']}_{row['space']}.npy").unlink()
  summary = main_lib.run_experiment(config, str(cut))
  resumed = _rows(cut)
  assert resumed[0] == json.loads(lines[0])  # reused as written, timing included: not sampled again
  assert [_without_timing(r) for r in resumed] == [_without_timing(r) for r in rows]
  in_memory = [json.loads(json.dumps(r)) for r in summary["rows"]]
  assert [_without_timing(r) for r in in_memory] == [_without_timing(r) for r in rows]
  for row in rows:
    name = f"losses_{row['task']}_{row['space']}.npy"
    np.testing.assert_array_equal(np.load(cut / name), np.load(full / name))
  main_lib.run_experiment(config, str(full))  # finished: sampled again, same values, new timings
  again = _rows(full)
  assert [_without_timing(r) for r in again] == [_without_timing(r) for r in rows]
  assert again[0]["metrics"]["seconds"] != rows[0]["metrics"]["seconds"]
  config.seed += 1
  with pytest.raises(ValueError, match=r"different config \(differs in: \['seed'\]\)"):
    main_lib.run_experiment(config, str(cut))


def test_ensloss_resumes_per_model_and_loss(tmp_path):
  config = main_lib.load_config("experiments/configs/ensloss_digits.py:quick")
  main_lib.run_experiment(config, str(tmp_path))
  first = json.loads((tmp_path / "results.json").read_text())
  results = sorted((tmp_path / "results").glob("*.npz"))
  assert len(results) == len(config.models) * len(config.losses)
  kept, redone = results[0], results[-1]
  kept_mtime = kept.stat().st_mtime_ns
  (tmp_path / "results.json").unlink()  # interrupted before the end
  redone.unlink()
  (tmp_path / "results" / f"{redone.stem}.tmp.npz").write_bytes(b"cut off")  # an interrupted save
  config.plots = not config.plots  # output-only settings may change on resume
  main_lib.run_experiment(config, str(tmp_path))
  assert kept.stat().st_mtime_ns == kept_mtime and redone.exists()  # loaded, not retrained
  resumed = json.loads((tmp_path / "results.json").read_text())
  assert resumed["accuracy"] == first["accuracy"] and resumed["trimmed"] == first["trimmed"]
  kept_name = "/".join(kept.stem.split("__"))
  assert resumed["seconds"][kept_name] == first["seconds"][kept_name]
  main_lib.run_experiment(config, str(tmp_path))  # finished: trained afresh
  assert kept.stat().st_mtime_ns != kept_mtime
  config.epochs += 1
  with pytest.raises(ValueError, match=r"different config \(differs in: \['epochs'\]\)"):
    main_lib.run_experiment(config, str(tmp_path))


def test_reweighting_classification_resumes_per_dataset(tmp_path):
  config = main_lib.load_config("experiments/configs/reweighting_classification.py:quick")
  config.plots, config.methods = False, ("uniform", "kl_dro")  # two methods: resume does not depend on them
  main_lib.run_experiment(config, str(tmp_path))
  log, summary = ((tmp_path / name).read_bytes() for name in ("metrics.jsonl", "summary.json"))
  first, last = (tmp_path / "datasets" / f"{name}.json" for name in (config.datasets[0], config.datasets[-1]))
  first_mtime = first.stat().st_mtime_ns
  last.unlink()  # interrupted while training the last dataset, its log half written
  (tmp_path / "summary.json").unlink()
  (tmp_path / "metrics.jsonl").write_bytes(log[:len(log) // 2])
  main_lib.run_experiment(config, str(tmp_path))
  assert first.stat().st_mtime_ns == first_mtime and last.exists()  # the first dataset was loaded, not retrained
  assert (tmp_path / "metrics.jsonl").read_bytes() == log
  assert (tmp_path / "summary.json").read_bytes() == summary
  main_lib.run_experiment(config, str(tmp_path))  # finished: trained afresh, to the same log
  assert first.stat().st_mtime_ns != first_mtime and (tmp_path / "metrics.jsonl").read_bytes() == log
  config.seeds = (0,)
  with pytest.raises(ValueError, match=r"different config \(differs in: \['seeds'\]\)"):
    main_lib.run_experiment(config, str(tmp_path))


def test_check_same_config_round_trips_infinities(tmp_path):
  config = main_lib.load_config("experiments/configs/ensloss_digits.py:quick")
  config.ensloss.clip = float("-inf")  # allowed: no lower clip on the derivative
  (tmp_path / "config.json").write_text(config.to_json(indent=2))
  runner.check_same_config(tmp_path / "config.json", config.to_json(indent=2))
  config.epochs += 1
  with pytest.raises(ValueError, match="epochs"):
    runner.check_same_config(tmp_path / "config.json", config.to_json(indent=2))

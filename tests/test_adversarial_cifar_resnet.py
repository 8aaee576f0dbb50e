"""The full-scale CIFAR-10 adversarial config runs end to end on CPU at a small size: its data path (the
CIFAR-10 python pickles from `data.kwargs.data_dir`, here fake ones in the real format) and its model path
(ResNet-18, PGD in the step, robust evaluation), with a width-4 ResNet-18, two steps, PGD-1 and DONE only.

The full size (width 64, 39,100 steps, four methods, PGD-10/PGD-20 on the real pickles) is meant for a GPU.
"""
import json
import math

from experiments import main as main_lib


def test_cifar10_config_with_resnet18_runs(tmp_path, write_fake_cifar10):
  data_dir = tmp_path / "cifar-10-batches-py"
  data_dir.mkdir()
  write_fake_cifar10(data_dir, per_batch=16)
  config = main_lib.load_config("experiments/configs/adversarial_cifar10.py", [f"data.kwargs.data_dir={tmp_path}"])
  config.model.kwargs.width = 4
  config.methods = ("done",)
  config.num_steps, config.batch_size = 2, 16
  config.attack.num_steps = config.eval_attack.num_steps = 1
  config.eval_attack.batch_size = 16
  config.runner.chunk_steps, config.runner.log_every, config.runner.plots = 2, 1, False
  main_lib.run_experiment(config, str(tmp_path / "run"))
  assert "jaxfair.resnet.resnet18" in next(tmp_path.rglob("config.json")).read_text()
  assert list(tmp_path.rglob("summary.json")), "no final evaluation written"
  log = next(tmp_path.rglob("metrics.jsonl")).read_text().splitlines()
  records = [json.loads(line) for line in log]
  losses = [r["metrics"]["loss"] for r in records if r["kind"] == "train"]
  assert len(losses) == 2 and all(math.isfinite(l) for l in losses)
  evals = [r for r in records if r["kind"] == "eval"]
  assert evals, "no evaluation logged"
  assert len(evals[-1]["metrics"]["test_per_class_robust"]) == 10  # the pickles' ten classes

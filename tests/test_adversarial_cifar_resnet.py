"""The full-scale CIFAR-10 adversarial config's own model path (ResNet-18, PGD in the step, robust evaluation)
runs end to end on CPU at a small size: CIFAR-shaped images, width-4 ResNet-18, two steps, PGD-1.

The full size (width 64, 39,100 steps, PGD-10/PGD-20 on the real pickles) is meant for a GPU.
"""
import json
import math

from experiments import main as main_lib


def test_cifar10_config_with_resnet18_runs(tmp_path):
  config = main_lib.load_config("experiments/configs/adversarial_cifar10.py:quick")
  config.model = dict(fn="jaxfair.resnet.resnet18", kwargs=dict(width=4))
  config.num_steps = 2
  config.runner.chunk_steps = 2
  main_lib.run_experiment(config, str(tmp_path))
  assert "jaxfair.resnet.resnet18" in next(tmp_path.rglob("config.json")).read_text()
  assert list(tmp_path.rglob("summary.json")), "no final evaluation written"
  log = next(tmp_path.rglob("metrics.jsonl")).read_text().splitlines()
  records = [json.loads(line) for line in log]
  losses = [r["metrics"]["loss"] for r in records if r["kind"] == "train"]
  assert len(losses) == 2 and all(math.isfinite(l) for l in losses)
  assert any(r["kind"] == "eval" for r in records)

r"""Full-scale EnsLoss comparison on the 45 CIFAR-10 one-vs-one pairs (Dai, ICML 2025, Sec. 5.1), from a
user-supplied CIFAR-10 python-pickle folder (`data_batch_1..5`, `test_batch`; no download).

Launch on an accelerator:

  python -m experiments.main --config=experiments/configs/ensloss_cifar10.py \
      --workdir=workdirs/ensloss_cifar10 --config.data_dir=/data/cifar-10-batches-py

The paper trains ResNet/VGG/MobileNet for 200 epochs (lr 1e-3, wd 5e-4, batch 128, 5 trials) and reports,
e.g. for ResNet50, mean accuracy EnsLoss 0.9218 vs BCE 0.8978 vs hinge 0.8977 vs exponential 0.8454 and
EnsLoss better on 42/45 pairs vs BCE. jaxfair.models has no ResNet; this config uses the BatchNorm CNN
(channels 64-128-256) and the MLP, so its numbers are NOT comparable to the paper's ResNet table; they test
the same protocol. Each (model, loss) trains 45 pairs x 5 trials = 225 runs as one program, in groups of
`runs_per_program` (lower it if memory is short). Not run in this repository (no CIFAR-10 offline).
`:quick` is a seconds-long smoke test of the same image/CNN code path on the offline 8x8 digits pairs (tiny
CNN, 2 pairs, 1 trial), so it runs without CIFAR-10; pass a data dir and `--config.dataset=cifar10_pairs` to
smoke-test the real loader.
"""
from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  quick = arg == "quick"
  if arg not in (None, "", "quick"):
    raise ValueError(f"ensloss_cifar10.py takes no argument or ':quick', got {arg!r}.")
  c = ml_collections.ConfigDict()
  c.experiment = "ensloss"
  c.name = "CIFAR-10 one-vs-one pairs"
  c.dataset = "digits_pairs" if quick else "cifar10_pairs"
  c.data_dir = ""
  c.max_pairs = 2 if quick else 0
  c.trials = 1 if quick else 5
  c.losses = ("ensloss", "exponential") if quick else ("ensloss", "logistic", "hinge", "exponential")
  c.models = (dict(cnn=dict(kind="cnn", channels=(4,))) if quick else
              dict(cnn=dict(kind="cnn", channels=(64, 128, 256)), mlp3=dict(kind="mlp", width=1024, depth=3)))
  c.optimizer = dict(name="sgd", learning_rate=1e-3, momentum=0.9, weight_decay=5e-4, cosine=True)
  c.exp_clip_norm = 10.0
  c.ensloss = dict(lam=0.0, clip=-1.0, tail="inverse", shift=1e-6, lam_redraw=False,
                   lam_period_epochs=0)  # P > 0: lambda ~ U(-1, 1) re-drawn every P epochs (off, as in the paper)
  c.batch_size = 128
  c.epochs = 1 if quick else 200
  c.num_evals = 1 if quick else 20
  c.runs_per_program = 0 if quick else 45
  c.map_batch = 0
  c.alpha = 0.05
  c.plots = not quick
  return c

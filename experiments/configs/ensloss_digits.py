r"""EnsLoss vs BCE / hinge / exponential on the 45 one-vs-one pairs of the offline 8x8 digits (the CPU-scale
analogue of the paper's 45 CIFAR-10 pairs; Dai, ICML 2025, Sec. 5.1).

Launch (MLPs; about 30 minutes on a busy 2-core CPU; every (model, loss) is ONE compiled program over 45
pairs x 5 trials = 225 vmapped runs):

  python -m experiments.main --config=experiments/configs/ensloss_digits.py --workdir=workdirs/ensloss_digits

The small CNN (`:cnn`, 45 pairs x 3 trials, 20 epochs, about 25 minutes; vmapped convolutions are slow on XLA:CPU, so the runs
go through `lax.map` in vmapped blocks of 15, still one program):

  python -m experiments.main --config=experiments/configs/ensloss_digits.py:cnn --workdir=workdirs/ensloss_digits_cnn

Models: MLP depth 1/3/5 (width 64, Linear-BatchNorm-ReLU blocks) on the 64 standardised pixels; the BatchNorm
CNN (channels 8, 16) on the 8x8 images in [0, 1]. SGD momentum 0.9, lr 0.01, weight decay 5e-4, cosine
schedule, batch 128, 30 epochs (CNN 20); the exponential loss alone gets grad-norm clipping at 10. Trial t uses
split seed t (75/25) and init/data-order seed t for every loss (paired). Writes `tables.md` (the paper's
better/no-difference/worse counts and mean accuracies), `results.json` and `plots/`.

Expected result: digits pairs are nearly separable, so every loss reaches about 0.99 mean accuracy and the
differences are small (docs/ensloss.md has the measured tables).

Smoke test (seconds): `--config=experiments/configs/ensloss_digits.py:quick`.
"""
from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  quick = arg == "quick"
  if arg not in (None, "", "quick", "cnn"):
    raise ValueError(f"ensloss_digits.py takes no argument, ':cnn' or ':quick', got {arg!r}.")
  c = ml_collections.ConfigDict()
  c.experiment = "ensloss"
  c.name = "digits one-vs-one pairs"
  c.dataset = "digits_pairs"
  c.max_pairs = 2 if quick else 0          # 0 = all 45 pairs
  c.trials = 2 if quick else (3 if arg == "cnn" else 5)
  c.losses = ("ensloss", "logistic") if quick else ("ensloss", "logistic", "hinge", "exponential")
  if quick:
    c.models = dict(mlp1=dict(kind="mlp", width=16, depth=1))
  elif arg == "cnn":
    c.models = dict(cnn=dict(kind="cnn", channels=(8, 16)))
  else:
    c.models = dict(mlp1=dict(kind="mlp", width=64, depth=1), mlp3=dict(kind="mlp", width=64, depth=3),
                    mlp5=dict(kind="mlp", width=64, depth=5))
  c.optimizer = dict(name="sgd", learning_rate=0.01, momentum=0.9, weight_decay=5e-4, cosine=True)
  c.exp_clip_norm = 10.0
  c.ensloss = dict(lam=0.0, clip=-1.0, tail="inverse", shift=1e-6, lam_redraw=False,
                   lam_period_epochs=0)  # P > 0: lambda ~ U(-1, 1) re-drawn every P epochs (off, as in the paper)
  c.batch_size = 128
  c.epochs = 2 if quick else (20 if arg == "cnn" else 30)
  c.num_evals = 1 if quick else 6
  c.runs_per_program = 0                   # 0 = all runs in one program
  c.map_batch = 15 if arg == "cnn" else 0  # CNN: lax.map over blocks of 15 vmapped runs (see experiments/ensloss.py)
  c.alpha = 0.05
  c.plots = not quick
  return c

r"""Inductive bias (bits) of MLP hypothesis spaces of different width and depth on the digits task.

Launch (CPU, several minutes on 2 cores):

  python -m experiments.main --config=experiments/configs/inductive_bias_architecture.py \
      --workdir=workdirs/ib_architecture

Task: scikit-learn digits (64 standardised features), 200 training / 300 test points, one-hot MSE (null
error 0.1). Spaces: ReLU MLPs Linear(64, w) + depth x Linear(w, w) + Linear(w, 10) for w in {16, 64, 256} and
depth in {0, 1, 2}; 64 hypotheses each (independent inits and minibatch orders), Adam lr 3e-3, 150 epochs
of batch 50; every net fits its training set (train MSE reported). Target errors 0.015, 0.02, 0.03. Expected result: bits (ncx2 fit, 95% intervals) separate the
architectures; wider nets need fewer bits at the same target error on this task. Results in metrics.jsonl / summary.json, plots in plots/.

Smoke test (seconds):

  python -m experiments.main --config=experiments/configs/inductive_bias_architecture.py:quick --workdir=/tmp/iba
"""
from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  quick = arg == "quick"
  if arg not in (None, "", "quick"):
    raise ValueError(f"inductive_bias_architecture.py takes no argument or ':quick', got {arg!r}.")
  c = ml_collections.ConfigDict()
  c.experiment = "inductive_bias"
  c.name = "inductive_bias_architecture"
  c.seed = 0
  c.tasks = (dict(name="digits", kind="digits", family="digits", dim=None, n_train=40 if quick else 200,
                  n_test=60 if quick else 300, target_errors=(0.015, 0.02, 0.03)),)
  widths = (8,) if quick else (16, 64, 256)
  depths = (0,) if quick else (0, 1, 2)
  c.spaces = tuple(dict(name=f"mlp_w{w}_d{d}", kind="nn", num_samples=24 if quick else 64, width=w, depth=d,
                        epochs=20 if quick else 150, learning_rate=3e-3, batch_size=20 if quick else 50)
                   for w in widths for d in depths)
  c.target_fractions = (0.2,)
  c.plot = dict(x="width", series="depth", panel="family", yscale="linear")
  return c

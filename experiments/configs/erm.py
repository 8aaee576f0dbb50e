r"""ERM baseline: an MLP on the offline scikit-learn digits set (8x8 images, 10 classes), uniform weights.

Launch (the `make run` job):

  python -m experiments.main --config=experiments/configs/erm.py --workdir=workdirs/digits_mlp

Expected result: final test accuracy >= 0.95 for every seed (about 0.97-0.98; 3 seeds in one vmapped program,
a 2-layer width-128 ReLU MLP, Adam at learning rate 1e-3, batch 64, 1500 steps ~ 70 epochs; under a minute
on 2 CPU cores). Smoke test (a few seconds):

  python -m experiments.main --config=experiments/configs/erm.py:quick --workdir=/tmp/erm_quick

Sweep learning rates in the same compiled program:

  python -m experiments.main --config=experiments/configs/erm.py --workdir=workdirs/digits_lr \
      --config.grid.learning_rate='(3e-4,1e-3,3e-3)'
"""
from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  quick = arg == "quick"
  if arg not in (None, "", "quick"):
    raise ValueError(f"erm.py takes no argument or ':quick', got {arg!r}.")
  c = ml_collections.ConfigDict()
  c.experiment = "train"
  c.name = "digits_mlp_erm"
  c.data = dict(fn="jaxfair.data.load_digits", kwargs=dict(seed=0, test_fraction=0.25))
  c.model = dict(fn="jaxfair.models.mlp", kwargs=dict(width=32 if quick else 128, depth=2, activation="relu"))
  c.loss = "jaxfair.losses.softmax_cross_entropy"
  c.weighting = dict(fn="jaxfair.training.uniform")
  c.perturb = None
  c.evaluate = None
  c.optimizer = dict(fn="optax.adam", kwargs=dict(b1=0.9, b2=0.999))
  c.grid = dict(learning_rate=(3e-3,) if quick else (1e-3,))
  c.seeds = (0, 1) if quick else (0, 1, 2)
  c.batch_size = 64
  c.num_steps = 100 if quick else 1500
  c.train_kwargs = dict(eval_batch_size=512)
  c.report_metric = "test_accuracy"
  c.runner = dict(chunk_steps=25 if quick else 100, log_every=1 if quick else 10, checkpoint_every=2 if quick else 5,
                  eval_every=2 if quick else 5, max_to_keep=2, run_shards=1, batch_shards=1, progress="auto",
                  tensorboard=False, plots=True)
  return c

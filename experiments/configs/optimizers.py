r"""Optimizer comparison on the offline 8x8 digits set with the BatchNorm CNN (every conv kernel is followed by
BatchNorm, so the loss is invariant to its scale -- the AdamP/SGDP setting).

Optimizers: Adam, AdamW (wd 1e-2), SGD + momentum 0.9, AdamP, SGDP (momentum 0.9), EXAdam, EXAdam with the
paper-v1 dynamic step size; no weight decay except AdamW, so the comparison isolates the projection (the
paper's "without weight decay" setting). For each optimizer, 3 seeds x 3 learning rates run as one vmapped
program; the learning rate is chosen by the lowest final training loss (mean over seeds), and the test
accuracy at that learning rate is reported (mean of the last 5 evaluations, i.e. steps 240-400, per run,
since a single evaluation is noisy at large learning rates with BatchNorm; the final one is shown too). The evaluation logs the conv-kernel norms.

Launch (a few minutes on 2 idle CPU cores; 400 steps ~ 19 epochs, CNN channels (16, 32)):

  python -m experiments.main --config=experiments/configs/optimizers.py --workdir=workdirs/optimizers

Smoke test (seconds):

  python -m experiments.main --config=experiments/configs/optimizers.py:quick --workdir=/tmp/optimizers_quick

Expected result: the conv-kernel norms (scale-invariant weights) grow to about 2x their initial value under
Adam, AdamW, EXAdam and SGD + momentum but stay within about 1.1x under AdamP and SGDP (the projection removes
the radial part of the momentum update). Test accuracy at the chosen learning rate is about 0.85-0.95 and noisy
(BatchNorm at large learning rates; 0.96-0.97 at each optimizer's best learning rate), with differences between
optimizers within about one standard deviation over seeds. Table: workdir/results.md; plot:
workdir/plots/optimizers.png; see docs/optimizers.md for what we measured.
"""
from __future__ import annotations

import ml_collections

ADAM_LRS = (1e-3, 3e-3, 1e-2)
SGD_LRS = (0.01, 0.03, 0.1)
EXADAM_LRS = (3e-4, 1e-3, 3e-3)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  quick = arg == "quick"
  if arg not in (None, "", "quick"):
    raise ValueError(f"optimizers.py takes no argument or ':quick', got {arg!r}.")
  c = ml_collections.ConfigDict()
  c.experiment = "optimizers"
  c.name = "digits_cnn_optimizers"
  c.data = dict(fn="jaxfair.data.load_digits", kwargs=dict(seed=0, test_fraction=0.25, image=True))
  c.model = dict(fn="jaxfair.models.cnn", kwargs=dict(channels=(4, 8) if quick else (16, 32)))
  c.loss = "jaxfair.losses.softmax_cross_entropy"
  c.weighting = dict(fn="jaxfair.training.uniform")
  c.perturb = None
  c.evaluate = dict(fn="experiments.optimizers.norm_evaluator")
  c.optimizer_specs = dict(
      adam=dict(fn="optax.adam", kwargs=dict(), learning_rates=ADAM_LRS),
      adamw=dict(fn="optax.adamw", kwargs=dict(weight_decay=1e-2), learning_rates=ADAM_LRS),
      sgd_momentum=dict(fn="optax.sgd", kwargs=dict(momentum=0.9), learning_rates=SGD_LRS),
      adamp=dict(fn="experiments.optimizers.adamp", kwargs=dict(), learning_rates=ADAM_LRS),
      sgdp=dict(fn="experiments.optimizers.sgdp", kwargs=dict(momentum=0.9), learning_rates=SGD_LRS),
      exadam=dict(fn="jaxfair.optim.exadam.exadam", kwargs=dict(), learning_rates=EXADAM_LRS),
      exadam_dynamic=dict(fn="jaxfair.optim.exadam.exadam", kwargs=dict(dynamic_step_size=True),
                          learning_rates=EXADAM_LRS),
  )
  c.optimizers = ("adamp",) if quick else tuple(c.optimizer_specs.keys())
  if quick:
    c.optimizer_specs.adamp.learning_rates = (1e-3, 3e-3)
  c.seeds = (0,) if quick else (0, 1, 2)
  c.batch_size = 64
  c.num_steps = 10 if quick else 400
  c.select_last = 2 if quick else 10  # lr chosen by the mean training loss of the last logged steps
  c.accuracy_last_evals = 1 if quick else 5  # test accuracy reported as the mean of the last evaluations
  c.train_kwargs = dict(eval_batch_size=512)
  c.report_metric = "test_accuracy"
  c.runner = dict(chunk_steps=5 if quick else 40, log_every=1 if quick else 10, checkpoint_every=0 if quick else 4,
                  eval_every=1, max_to_keep=1, run_shards=1, batch_shards=1, progress="auto",
                  tensorboard=False, plots=not quick)
  return c

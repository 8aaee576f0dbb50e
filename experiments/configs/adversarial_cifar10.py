r"""Full-scale adversarial training on CIFAR-10 (GPU): ResNet-18, PGD-10 training attack (L_inf, eps 8/255,
step 2/255, random start), PGD-20 evaluation (step 2/255); AT vs DONE (per-batch, EMA) vs loss-reweighted AT.

The data are the CIFAR-10 python pickles (`data_batch_1..5`, `test_batch`) in a directory you supply
(no download at run time):

  python -m experiments.main --config=experiments/configs/adversarial_cifar10.py \
      --workdir=workdirs/adv_cifar10 --config.data.kwargs.data_dir=/path/to/cifar-10-batches-py

Long-tailed CIFAR-10 (imbalance ratio 10 on the training split): add --config.long_tail=10.
Only DONE vs AT: --config.methods='("at","done")'. More seeds: --config.seeds='(0,1,2)' (vmapped; memory
grows linearly).

Training: SGD (momentum 0.9, weight decay 5e-4), batch 128, learning rate 0.1 decayed x0.1 at 50% and 75%
of 100 epochs (39,100 steps); no data augmentation (the training core has none — expect robust overfitting to
cost a few points of RA against published numbers, which use random crops/flips and early stopping). DONE:
r = 1 (per batch) and r = 1, beta = 0.05 (EMA). Evaluation every 10 epochs on the 10,000 test images.

Expected result (published PGD AT with ResNet-18: SA ~ 82-84%, RA-PGD20 ~ 48-52%; DONE reports its largest
gains on RA-Tail-30 and modest ones on RA-PGD). Not run by us (no GPU was available in the session that wrote
it); the `:quick` variant (random 32x32 images, a one-stage CNN instead of ResNet-18, DONE only, a few steps)
checks the pipeline on CPU:

  python -m experiments.main --config=experiments/configs/adversarial_cifar10.py:quick --workdir=/tmp/adv_c10_quick
"""
from __future__ import annotations

import ml_collections

from experiments.configs import adversarial_digits

EPOCH = 391  # 50,000 / 128


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "", "quick"):
    raise ValueError(f"adversarial_cifar10.py takes no argument or ':quick', got {arg!r}.")
  quick = arg == "quick"
  c = adversarial_digits.base_config(quick)
  c.name = "adv_cifar10"
  if quick:
    c.data = dict(fn="experiments.adversarial.fake_cifar10", kwargs=dict(num_train=64, num_test=20))
  else:
    c.data = dict(fn="jaxfair.data.load_cifar10", kwargs=dict(data_dir=""))
  # :quick swaps ResNet-18 for a one-stage CNN: compiling even a narrow ResNet-18 costs ~20 s of CPU, too much
  # for the CI smoke test of every config (tests/test_adversarial.py checks the ResNet-18 itself).
  c.model = (dict(fn="jaxfair.models.cnn", kwargs=dict(channels=(8,))) if quick else
             dict(fn="jaxfair.resnet.resnet18", kwargs=dict(width=64)))
  if quick:
    c.methods = ("done",)
  total = 4 if quick else 100 * EPOCH
  c.num_steps = total
  c.batch_size = 16 if quick else 128
  c.seeds = (0,) if quick else (0,)
  c.optimizer = dict(fn="experiments.adversarial.sgd_weight_decay",
                     kwargs=dict(momentum=0.9, weight_decay=5e-4,
                                 learning_rate=dict(fn="experiments.adversarial.piecewise_schedule",
                                                    kwargs=dict(init_value=0.1, total_steps=total))))
  c.grid = dict()
  c.attack = dict(eps=8 / 255, step_size=2 / 255, num_steps=1 if quick else 10, norm="linf", bounds=(0.0, 1.0))
  c.eval_attack = dict(eps=8 / 255, step_size=2 / 255, num_steps=1 if quick else 20, norm="linf",
                       bounds=(0.0, 1.0), batch_size=20 if quick else 500)
  c.runner = dict(chunk_steps=4 if quick else EPOCH, log_every=1 if quick else 50,
                  checkpoint_every=0 if quick else 5, eval_every=0 if quick else 10, max_to_keep=2, run_shards=1,
                  batch_shards=1, progress="auto", tensorboard=False, plots=not quick)
  return c

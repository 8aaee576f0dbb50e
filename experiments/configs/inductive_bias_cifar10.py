r"""Full-scale inductive bias on CIFAR-10 (GPU-sized): bits vs PCA dimension and vs MLP width/depth, GP vs MLP.

Launch on a GPU with the CIFAR-10 python pickles in DATA_DIR (data_batch_1..5 and test_batch, or their
cifar-10-batches-py/ folder; read by jaxfair.data.load_cifar10):

  python -m experiments.main --config=experiments/configs/inductive_bias_cifar10.py \
      --workdir=workdirs/ib_cifar10 --config.data_dir=DATA_DIR

Task: 5,000 training / 1,000 test images (seeded subsample), standardised pixels (3072-d) and PCA-reduced
versions (d = 16, 64, 256); one-hot MSE, target errors 0.06 and 0.08 (null error 0.1). Spaces: the RBF-GP
posterior (10,000 samples, median lengthscale, jitter 1e-4; posterior factorised in float64; the exact
generalized chi-squared tail alongside, skipped beyond 1e5 bits) and ReLU MLPs (width 512 and 2048, depth 1; 500
hypotheses each, Adam lr 1e-3, batch 128, 20 epochs), all hypotheses of a space in one vmapped program
chunked to 8 GiB. Expected result (not yet run here: no GPU or CIFAR-10 files were available to the author):
the paper's claim that the MLP spaces need orders of magnitude fewer bits than the GP space (the CPU-scale
digits runs in docs/inductive_bias.md show this). Runtime is an unmeasured estimate: tens of minutes on one
H100.

Smoke test without data (a digits stand-in at toy size, so the config runs in CI):

  python -m experiments.main --config=experiments/configs/inductive_bias_cifar10.py:quick --workdir=/tmp/ibc
"""
from __future__ import annotations

import ml_collections

from experiments.configs.inductive_bias_mnist import full_scale_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return full_scale_config(arg, dataset="cifar10", target_errors=(0.06, 0.08))

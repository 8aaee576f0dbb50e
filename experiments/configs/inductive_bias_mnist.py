r"""Full-scale inductive bias on MNIST (GPU-sized): bits vs PCA dimension and vs MLP width/depth, GP vs MLP.

Launch on a GPU with the four standard MNIST idx files in DATA_DIR (read by jaxfair.data.load_mnist):

  python -m experiments.main --config=experiments/configs/inductive_bias_mnist.py \
      --workdir=workdirs/ib_mnist --config.data_dir=DATA_DIR

Task: 5,000 training / 1,000 test images (seeded subsample), standardised pixels (784-d) and PCA-reduced
versions (d = 16, 64, 256); one-hot MSE, target errors 0.02 and 0.04 (null error 0.1). Spaces: the RBF-GP
posterior (10,000 samples, median lengthscale, jitter 1e-4; posterior factorised in float64; the exact
generalized chi-squared tail alongside, skipped beyond 1e5 bits) and ReLU MLPs (width 512 and 2048, depth 1; 500
hypotheses each, Adam lr 1e-3, batch 128, 20 epochs), all hypotheses of a space in one vmapped program
chunked to 8 GiB. Expected result (not yet run here: no GPU or MNIST files were available to the author):
the paper's claim that the MLP spaces need orders of magnitude fewer bits than the GP space (the CPU-scale
digits runs in docs/inductive_bias.md show this). Runtime is an unmeasured estimate: tens of minutes on one
H100.

Smoke test without data (a digits stand-in at toy size, so the config runs in CI):

  python -m experiments.main --config=experiments/configs/inductive_bias_mnist.py:quick --workdir=/tmp/ibm
"""
from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return full_scale_config(arg, dataset="mnist", target_errors=(0.02, 0.04))


def full_scale_config(arg: str | None, *, dataset: str, target_errors: tuple[float, ...]
                      ) -> ml_collections.ConfigDict:
  """The GPU-sized study on `dataset` ("mnist" or "cifar10", read from --config.data_dir); `:quick` runs a
  digits stand-in on CPU."""
  quick = arg == "quick"
  if arg not in (None, "", "quick"):
    raise ValueError(f"inductive_bias_{dataset}.py takes no argument or ':quick', got {arg!r}.")
  c = ml_collections.ConfigDict()
  c.experiment = "inductive_bias"
  c.name = f"inductive_bias_{dataset}"
  c.seed = 0
  c.data_dir = ""  # required for the full run: --config.data_dir=DATA_DIR
  gib = 1 << 33
  if quick:
    c.tasks = (dict(name="digits_standin", kind="digits", family="standin", dim=8, n_train=40, n_test=60,
                    target_errors=target_errors),)
    c.spaces = (dict(name="gp_rbf", kind="gp", num_samples=300, lengthscale="median", jitter=1e-4),
                dict(name="mlp_w16_d1", kind="nn", num_samples=24, width=16, depth=1, epochs=10,
                     learning_rate=1e-3, batch_size=20))
  else:
    c.tasks = tuple(dict(name=f"{dataset}_pca{d}" if d else dataset, kind=dataset, family=dataset, dim=d,
                         n_train=5000, n_test=1000, target_errors=target_errors)
                    for d in (16, 64, 256, None))
    c.spaces = (dict(name="gp_rbf", kind="gp", num_samples=10_000, lengthscale="median", jitter=1e-4,
                     max_chunk_bytes=gib, exact_max_bits=1e5),
                dict(name="mlp_w512_d1", kind="nn", num_samples=500, width=512, depth=1, epochs=20,
                     learning_rate=1e-3, batch_size=128, max_chunk_bytes=gib),
                dict(name="mlp_w2048_d1", kind="nn", num_samples=500, width=2048, depth=1, epochs=20,
                     learning_rate=1e-3, batch_size=128, max_chunk_bytes=gib))
  c.target_fractions = (0.2, 0.4)
  c.plot = dict(x="dim", series="space", panel="family", yscale="log")
  return c

r"""GP vs random-feature vs MLP hypothesis spaces on the same task: bits with intervals.

Launch (CPU, a few minutes on 2 cores):

  python -m experiments.main --config=experiments/configs/inductive_bias_spaces.py --workdir=workdirs/ib_spaces

Task: digits reduced to 16 PCA dimensions, 200 training / 300 test points, one-hot MSE (null error 0.1).
Spaces: the RBF-GP posterior (10,000 samples, exact tail alongside), random Fourier features with an
interpolating readout (D = 256 and 2048, 1,000 hypotheses each; D -> inf is the GP), and ReLU MLPs (width 64,
depth 1, 256 hypotheses, 300 full-batch epochs; width 256, 128 hypotheses, 200 epochs; Adam at lr 3e-3; the
reference code uses 1e-3). Target errors 0.02 and 0.03. Expected result: the MLP spaces need
far fewer bits than the kernel-type spaces; random features need more bits than the GP at small D and
approach it as D grows. Results in metrics.jsonl / summary.json, plots in plots/.

Smoke test (seconds):

  python -m experiments.main --config=experiments/configs/inductive_bias_spaces.py:quick --workdir=/tmp/ibs
"""
from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  quick = arg == "quick"
  if arg not in (None, "", "quick"):
    raise ValueError(f"inductive_bias_spaces.py takes no argument or ':quick', got {arg!r}.")
  c = ml_collections.ConfigDict()
  c.experiment = "inductive_bias"
  c.name = "inductive_bias_spaces"
  c.seed = 0
  c.tasks = (dict(name="digits_pca16", kind="digits", family="digits_pca", dim=16, n_train=40 if quick else 200,
                  n_test=60 if quick else 300, target_errors=(0.02, 0.03)),)
  n_rf = 32 if quick else 1000
  spaces = (
      dict(name="gp_rbf", kind="gp", num_samples=500 if quick else 10_000, lengthscale="median"),
      dict(name="rf_D256", kind="rf", num_samples=n_rf, num_features=64 if quick else 256, lengthscale="median"),
      dict(name="rf_D2048", kind="rf", num_samples=n_rf, num_features=128 if quick else 2048,
           lengthscale="median"),
      dict(name="mlp_w64_d1", kind="nn", num_samples=24 if quick else 256, width=16 if quick else 64, depth=1,
           epochs=30 if quick else 300, learning_rate=3e-3, batch_size=None),
      dict(name="mlp_w256_d1", kind="nn", num_samples=24 if quick else 128, width=32 if quick else 256, depth=1,
           epochs=30 if quick else 200, learning_rate=3e-3, batch_size=None),
  )
  c.spaces = spaces[::2] if quick else spaces  # quick: gp, rf_D2048, mlp_w256 (at quick sizes)
  c.target_fractions = (0.2,)
  c.plot = dict(x="space", yscale="linear")
  return c

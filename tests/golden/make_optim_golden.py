"""Golden float64 trajectories of the PyTorch reference optimizers, for jaxfair.optim's parity tests.

Regenerate (needs torch and the reference packages; CI does not):

  .venv/bin/pip install torch==2.13.0 && .venv/bin/pip install --no-deps adamp pytorch_optimizer
  .venv/bin/python tests/golden/make_optim_golden.py

writes tests/golden/optim_golden.npz. References: clovaai AdamP v0.3.0 (`adamp.AdamP`, `adamp.SGDP`; timm's
AdamP/SGDP are the same code), `pytorch_optimizer.SGDP` (momentum buffer kept unprojected, as in the paper),
`pytorch_optimizer.EXAdam` (= the official EXAdam code). EXAdam's paper-v1 dynamic step size is reproduced by
setting the reference's learning rate to lr * ln(sqrt(2) sqrt(t+1)) before step t (weight decay 0 there).

Each problem has three leaves in PyTorch layout -- conv (4, 3, 3, 3), dense (5, 6), bias (5,) -- and a
deterministic loss per leaf, written once for both frameworks (`loss`, array-namespace agnostic):

* "plain":   0.5 sum(c (p - T)^2) + 0.3 sum(A tanh(p))         (projection usually does not fire)
* "channel": sum(A * p / ||p_row||)  (scale-invariant per output channel: the channel view fires)
* "layer":   sum(A * p / ||p||)      (scale-invariant as a whole: the layer view fires)

The jaxfair test recomputes gradients with jax.grad of the same loss and compares the parameters after
steps 1, 2, 10, 50, 100 and NUM_STEPS.
"""
from __future__ import annotations

import math
import pathlib
import sys

import numpy as np

NUM_STEPS = 120
CHECKPOINTS = (1, 2, 10, 50, 100, NUM_STEPS)
SHAPES = {"conv": (4, 3, 3, 3), "dense": (5, 6), "bias": (5,)}
LEAVES = tuple(SHAPES)
GOLDEN_PATH = pathlib.Path(__file__).with_name("optim_golden.npz")

# name -> (optimizer family, kwargs in jaxfair names, loss mode per leaf, reference)
MIXED = ("channel", "layer", "plain")
PLAIN = ("plain", "plain", "plain")
PROBLEMS = {
    "adamp_default": ("adamp", dict(learning_rate=1e-2), MIXED, "clovaai"),
    "adamp_nesterov_wd": ("adamp", dict(learning_rate=1e-2, weight_decay=0.1, nesterov=True), MIXED,
                          "clovaai"),
    "adamp_plain_wd": ("adamp", dict(learning_rate=2e-2, b1=0.8, b2=0.99, weight_decay=0.05, delta=0.2,
                                     wd_ratio=0.3), PLAIN, "clovaai"),
    "sgdp_momentum_wd": ("sgdp", dict(learning_rate=5e-2, momentum=0.9, weight_decay=1e-3), MIXED,
                         "pytorch_optimizer"),
    "sgdp_momentum_wd_project_buffer": ("sgdp", dict(learning_rate=5e-2, momentum=0.9, weight_decay=1e-3,
                                                     project_buffer=True), MIXED, "clovaai"),
    "sgdp_nesterov_dampening": ("sgdp", dict(learning_rate=5e-2, momentum=0.9, dampening=0.1, nesterov=True,
                                             weight_decay=1e-2), MIXED, "clovaai"),
    "sgdp_plain": ("sgdp", dict(learning_rate=2e-2, momentum=0.5, weight_decay=1e-2), PLAIN,
                   "pytorch_optimizer"),
    "sgdp_no_momentum": ("sgdp", dict(learning_rate=5e-2, weight_decay=1e-2), MIXED, "clovaai"),
    "exadam_default": ("exadam", dict(learning_rate=1e-2), PLAIN, "pytorch_optimizer"),
    "exadam_wd_mixed": ("exadam", dict(learning_rate=1e-2, b1=0.85, b2=0.99, weight_decay=0.1), MIXED,
                        "pytorch_optimizer"),
    # lr kept small: once a leaf converges, Adam-type steps turn sign-like (|u| ~ lr for |g| ~ 1e-7) and the
    # oscillation amplifies rounding differences ~2.4x per step, in any implementation (seen at lr=5e-3).
    "exadam_dynamic": ("exadam", dict(learning_rate=1e-3, dynamic_step_size=True), PLAIN, "pytorch_optimizer"),
}


def problem_data(name: str) -> dict[str, np.ndarray]:
  """Initial params and loss constants of a problem (seeded by its name; float64)."""
  seed = sum(ord(ch) * (i + 1) for i, ch in enumerate(name)) % (2**31)
  rng = np.random.RandomState(seed)
  data = {}
  for leaf, shape in SHAPES.items():
    data[f"{leaf}/init"] = rng.normal(size=shape)
    data[f"{leaf}/A"] = rng.normal(size=shape)
    data[f"{leaf}/T"] = rng.normal(size=shape)
    data[f"{leaf}/c"] = rng.uniform(0.5, 1.5, size=shape)
  return data


def loss(params: dict, data: dict, modes: tuple[str, ...], xp) -> object:
  """The problem's loss; `xp` is `torch` or `jax.numpy` (only *, +, sum, sqrt, tanh are used)."""
  total = 0.0
  for leaf, mode in zip(LEAVES, modes):
    p, a = params[leaf], data[f"{leaf}/A"]
    if mode == "plain":
      total = total + 0.5 * (data[f"{leaf}/c"] * (p - data[f"{leaf}/T"]) ** 2).sum() + 0.3 * (a * xp.tanh(p)).sum()
    elif mode == "channel":
      flat = p.reshape(p.shape[0], -1)
      norms = xp.sqrt((flat * flat).sum(1)).reshape((p.shape[0],) + (1,) * (p.ndim - 1))
      total = total + (a * p / norms).sum()
    elif mode == "layer":
      total = total + (a * p / xp.sqrt((p * p).sum())).sum()
    else:
      raise ValueError(mode)
  return total


def _reference_optimizer(family: str, kwargs: dict, reference: str, params: list):
  import adamp as clovaai  # pylint: disable=g-import-not-at-top
  import pytorch_optimizer  # pylint: disable=g-import-not-at-top
  kw = dict(kwargs)
  lr = kw.pop("learning_rate")
  kw.pop("project_buffer", None)
  if family == "adamp":
    betas = (kw.pop("b1", 0.9), kw.pop("b2", 0.999))
    assert reference == "clovaai"
    return clovaai.AdamP(params, lr=lr, betas=betas, **kw)
  if family == "sgdp":
    if reference == "clovaai":
      return clovaai.SGDP(params, lr=lr, **kw)
    return pytorch_optimizer.SGDP(params, lr=lr, **kw)
  if family == "exadam":
    betas = (kw.pop("b1", 0.9), kw.pop("b2", 0.999))
    kw.pop("dynamic_step_size", None)
    return pytorch_optimizer.EXAdam(params, lr=lr, betas=betas, **kw)
  raise ValueError(family)


def main() -> int:
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_default_dtype(torch.float64)
  out = {}
  for name, (family, kwargs, modes, reference) in PROBLEMS.items():
    data = problem_data(name)
    tdata = {k: torch.tensor(v) for k, v in data.items()}
    params = {leaf: torch.tensor(data[f"{leaf}/init"], requires_grad=True) for leaf in LEAVES}
    opt = _reference_optimizer(family, kwargs, reference, [params[leaf] for leaf in LEAVES])
    for t in range(1, NUM_STEPS + 1):
      if kwargs.get("dynamic_step_size"):
        for group in opt.param_groups:
          group["lr"] = kwargs["learning_rate"] * math.log(math.sqrt(2.0) * math.sqrt(t + 1.0))
      opt.zero_grad()
      loss(params, tdata, modes, torch).backward()
      opt.step()
      if t in CHECKPOINTS:
        for leaf in LEAVES:
          out[f"{name}/{leaf}/step{t}"] = params[leaf].detach().numpy().copy()
    moved = max(float(np.abs(out[f"{name}/{leaf}/step{NUM_STEPS}"] - data[f"{leaf}/init"]).max())
                for leaf in LEAVES)
    print(f"{name}: {reference} {family}, max |p_T - p_0| = {moved:.3g}")
  out["meta/torch_version"] = np.array(torch.__version__)
  np.savez_compressed(GOLDEN_PATH, **out)
  print(f"wrote {GOLDEN_PATH} ({GOLDEN_PATH.stat().st_size / 1024:.1f} KiB)")
  return 0


if __name__ == "__main__":
  sys.exit(main())

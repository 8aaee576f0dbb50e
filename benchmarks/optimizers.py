"""Optimizer update time on a mixed-shape ~10M-parameter float32 tree: jaxfair's adamp/sgdp/exadam vs
optax.adam/adamw (same run), vs the PyTorch reference implementations on the same CPU (when torch is
installed), bytes moved per step vs the machine's measured memory bandwidth, and minor page faults per step
(a leaf-sized temporary that XLA:CPU allocates afresh every step shows up there).

  python -m benchmarks.run_all --only optimizers          # writes benchmarks/results/optimizers.json
  python -m benchmarks.optimizers --reps 30 --no-torch     # options

One "update" = ``tx.update`` + ``optax.apply_updates`` in one jitted function with params and optimizer state
donated (in-place), on fixed gradients; flax layouts (channel_axis=-1). Targets (issue 5): adamp and sgdp
<= 1.5x optax.adamw, exadam <= 1.3x optax.adam, all faster than their PyTorch references.
"""
from __future__ import annotations

import argparse
import math
import os
import resource
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import harness, xla_profile
from jaxfair import optim

WD = 1e-4


def make_tree(scale: float = 1.0) -> dict[str, tuple[int, ...]]:
  """19 leaves, ~9.7M parameters at scale 1: conv kernels (4-D), dense kernels (2-D), biases (1-D)."""
  c = lambda n: max(1, int(round(n * scale)))  # noqa: E731
  shapes = {}
  for i in range(4):
    shapes[f"conv_a{i}/kernel"] = (3, 3, c(128), c(256))
    shapes[f"conv_a{i}/bias"] = (c(256),)
  for i in range(2):
    shapes[f"conv_b{i}/kernel"] = (3, 3, c(256), c(256))
  for i in range(3):
    shapes[f"dense_{i}/kernel"] = (c(1024), c(1024))
    shapes[f"dense_{i}/bias"] = (c(1024),)
  shapes["dense_big/kernel"] = (c(4096), c(1024))
  shapes["head/kernel"] = (c(1024), 10)
  shapes["head/bias"] = (10,)
  return shapes


def optimizers() -> dict[str, optax.GradientTransformation]:
  return {
      "optax.adam": optax.adam(1e-3),
      "optax.adamw": optax.adamw(1e-3, weight_decay=WD),
      "jaxfair.adamp": optim.adamp(1e-3, weight_decay=WD),
      "jaxfair.sgdp": optim.sgdp(1e-2, momentum=0.9, weight_decay=WD),
      "jaxfair.exadam": optim.exadam(1e-3),
  }


def fault_variants() -> dict[str, optax.GradientTransformation]:
  """Paths that once materialised a leaf-sized temporary; only their page faults are recorded."""
  return {
      "jaxfair.adamp(nesterov)": optim.adamp(1e-3, weight_decay=WD, nesterov=True),
      "jaxfair.sgdp(nesterov)": optim.sgdp(1e-2, momentum=0.9, weight_decay=WD, nesterov=True),
      "inject_hyperparams(jaxfair.adamp)": optax.inject_hyperparams(optim.adamp)(1e-3, weight_decay=WD),
      "inject_hyperparams(jaxfair.sgdp)": optax.inject_hyperparams(optim.sgdp)(1e-2, momentum=0.9,
                                                                               weight_decay=WD),
  }


# Minimum HBM/DRAM traffic per parameter (float32 arrays read + written) of a straightforward fused schedule:
# adam(w): read g, p, m, v; write p, m, v. adamp: + a reduction pass reading g, p, m, v. sgdp: read g, p, b;
# write p, b (+ reduction pass reading g, p, b). exadam: like adam. The PyTorch AdamP/SGDP references run the
# same projection (cosine reductions) on every >= 2-D parameter, so they count the same.
ARRAYS_PER_PARAM = {"optax.adam": 7, "optax.adamw": 7, "jaxfair.adamp": 11, "jaxfair.sgdp": 8,
                    "jaxfair.exadam": 7, "torch.AdamP": 11, "torch.SGDP": 8, "torch.EXAdam": 7}


def update_step(tx: optax.GradientTransformation):
  """One jitted update (`tx.update` + `optax.apply_updates`) with params and state donated."""
  def step(p, s, g):
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  return jax.jit(step, donate_argnums=(0, 1))


def _jax_thunks(shapes, txs, reps_key=0):
  key = jax.random.key(reps_key)
  keys = jax.random.split(key, 2 * len(shapes))
  params = {k: 0.05 * jax.random.normal(keys[2 * i], s) for i, (k, s) in enumerate(shapes.items())}
  grads = {k: 1e-3 * jax.random.normal(keys[2 * i + 1], s) for i, (k, s) in enumerate(shapes.items())}
  thunks = {}
  for name, tx in txs.items():
    fn = update_step(tx)
    box = {"p": jax.tree.map(jnp.copy, params), "s": tx.init(params)}

    def thunk(fn=fn, box=box):
      box["p"], box["s"] = fn(box["p"], box["s"], grads)
      return box["p"]

    thunks[name] = thunk
  return thunks, params, grads


def _torch_thunks(shapes, params, grads, threads):
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import adamp as clovaai  # pylint: disable=g-import-not-at-top
    import pytorch_optimizer  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    print(f"torch references skipped: {e}")
    return {}, None
  if threads:
    torch.set_num_threads(threads)

  def tensors():
    # flax layout -> PyTorch layout: output channel first (the projection's channel view).
    out = []
    for k in shapes:
      p = np.asarray(params[k])
      g = np.asarray(grads[k])
      if p.ndim == 4:
        p, g = p.transpose(3, 2, 0, 1), g.transpose(3, 2, 0, 1)
      elif p.ndim == 2:
        p, g = p.T, g.T
      t = torch.nn.Parameter(torch.tensor(np.ascontiguousarray(p)))
      t.grad = torch.tensor(np.ascontiguousarray(g))
      out.append(t)
    return out

  makers = {
      "torch.AdamP": lambda ps: clovaai.AdamP(ps, lr=1e-3, weight_decay=WD),
      "torch.SGDP": lambda ps: clovaai.SGDP(ps, lr=1e-2, momentum=0.9, weight_decay=WD),
      "torch.EXAdam": lambda ps: pytorch_optimizer.EXAdam(ps, lr=1e-3),
      "torch.AdamW(foreach)": lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=WD, foreach=True),
  }
  thunks = {}
  for name, make in makers.items():
    opt = make(tensors())

    def thunk(opt=opt):
      with torch.no_grad():
        opt.step()

    thunks[name] = thunk
  return thunks, torch.__version__


def page_faults_per_step(thunk, steps: int = 5) -> float:
  """Minor page faults per call: a leaf-sized temporary that XLA:CPU allocates afresh every step shows up
  here (one fault per 4 KiB page), and first-touching those pages costs as much as the arithmetic."""
  jax.block_until_ready(thunk())
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(steps):
    jax.block_until_ready(thunk())
  return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps


def profile_by_kind(shapes, names=("optax.adamw", "jaxfair.adamp", "jaxfair.sgdp")) -> dict[str, Any]:
  """Per-kind op time and bytes of one update (`benchmarks.xla_profile.by_kind`), for `names`."""
  txs = optimizers()
  out = {}
  for name in names:
    thunks, params, grads = _jax_thunks(shapes, {name: txs[name]})
    hlo = update_step(txs[name]).lower(params, txs[name].init(params), grads).compile().as_text()
    out[name] = xla_profile.by_kind(thunks[name], hlo)
    del thunks
  return out


def measure_bandwidth(n: int, reps: int = 10) -> float:
  """GB/s of an in-place `a += s * b` (read 2, write 1 float32 arrays) with a donated buffer."""
  fn = jax.jit(lambda a, b: a + 0.5 * b, donate_argnums=0)
  box = {"a": jnp.ones((n,), jnp.float32)}
  b = jnp.ones((n,), jnp.float32)

  def thunk():
    box["a"] = fn(box["a"], b)
    return box["a"]

  t = harness.time_interleaved({"axpy": thunk}, reps=reps)["axpy"].median
  return 3 * 4 * n / t / 1e9


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--reps", type=int, default=20)
  parser.add_argument("--scale", type=float, default=1.0, help="width multiplier of the tree")
  parser.add_argument("--no-torch", action="store_true")
  parser.add_argument("--torch-threads", type=int, default=0, help="0 = torch default")
  parser.add_argument("--name", default="optimizers", help="results file benchmarks/results/NAME.json")
  args = parser.parse_args(argv)

  shapes = make_tree(args.scale)
  n = sum(math.prod(s) for s in shapes.values())
  print(f"tree: {len(shapes)} leaves, {n / 1e6:.2f}M float32 parameters")
  thunks, params, grads = _jax_thunks(shapes, optimizers())
  torch_version, tthunks = None, {}
  if not args.no_torch:
    tthunks, torch_version = _torch_thunks(shapes, params, grads, args.torch_threads)
  load_before = os.getloadavg()
  # JAX candidates and PyTorch references in separate rounds: interleaved with PyTorch, whichever JAX candidate
  # ran right after a PyTorch step shared the CPU with its still-spinning worker threads (optax.adam, then).
  timings = harness.time_interleaved(thunks, reps=args.reps, warmup=3)
  if tthunks:
    timings.update(harness.time_interleaved(tthunks, reps=args.reps, warmup=3))
  load_after = os.getloadavg()
  bandwidth = measure_bandwidth(n)
  faults = {k: page_faults_per_step(t) for k, t in thunks.items() if not k.startswith("torch.")}
  del thunks  # free their buffers before building the variants
  faults.update({k: page_faults_per_step(t) for k, t in _jax_thunks(shapes, fault_variants())[0].items()})
  profile = profile_by_kind(shapes)
  med = {k: t.median for k, t in timings.items()}
  ratios = {
      "jaxfair.adamp / optax.adamw": med["jaxfair.adamp"] / med["optax.adamw"],
      "jaxfair.sgdp / optax.adamw": med["jaxfair.sgdp"] / med["optax.adamw"],
      "jaxfair.exadam / optax.adam": med["jaxfair.exadam"] / med["optax.adam"],
  }
  for ours, ref in (("jaxfair.adamp", "torch.AdamP"), ("jaxfair.sgdp", "torch.SGDP"),
                    ("jaxfair.exadam", "torch.EXAdam")):
    if ref in med:
      ratios[f"{ours} / {ref}"] = med[ours] / med[ref]
  targets = {
      "adamp <= 1.5x adamw": ratios["jaxfair.adamp / optax.adamw"] <= 1.5,
      "sgdp <= 1.5x adamw": ratios["jaxfair.sgdp / optax.adamw"] <= 1.5,
      "exadam <= 1.3x adam": ratios["jaxfair.exadam / optax.adam"] <= 1.3,
  }
  for ours, ref in (("jaxfair.adamp", "torch.AdamP"), ("jaxfair.sgdp", "torch.SGDP"),
                    ("jaxfair.exadam", "torch.EXAdam")):
    if ref in med:
      targets[f"{ours} faster than {ref}"] = med[ours] < med[ref]
  traffic = {}
  for k, t in med.items():
    arrays = ARRAYS_PER_PARAM.get(k)
    if arrays is None:
      continue
    gbs = arrays * 4 * n / t / 1e9
    traffic[k] = {"min_bytes_per_step": arrays * 4 * n, "achieved_GBps": gbs,
                  "fraction_of_bandwidth": gbs / bandwidth}
  extra = {"ratios": ratios, "targets_met": targets, "num_params": n, "num_leaves": len(shapes),
           "measured_bandwidth_GBps": bandwidth, "traffic": traffic, "page_faults_per_step": faults,
           "profile_by_kind": profile,
           "torch_version": torch_version,
           "load_average_1min_before_after": [load_before[0], load_after[0]]}
  harness.write_results(args.name, timings, extra)
  print(f"measured bandwidth (a += s*b): {bandwidth:.1f} GB/s")
  print("minor page faults per step: " + ", ".join(f"{k} {v:.0f}" for k, v in faults.items()))
  for k, v in traffic.items():
    print(f"  {k}: {v['achieved_GBps']:.1f} GB/s = {v['fraction_of_bandwidth']:.2f} of bandwidth")
  for k, kinds in profile.items():
    print(f"  profile {k}: " + ", ".join(f"{kind} {v['ms']:.1f} ms at {v['GBps']:.1f} GB/s"
                                         for kind, v in kinds.items()))
  for k, v in targets.items():
    print(f"  target {k}: {'met' if v else 'NOT met'}")


if __name__ == "__main__":
  main()

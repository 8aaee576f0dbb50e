"""K seeds in one vmapped program vs K sequential runs, and the train-step rate.

    python -m benchmarks.run_all --only vmap_seeds            (or: python -m benchmarks.vmap_seeds)

For each model size, the same `make_train` program trains K runs for N steps either as

* ``vmap``: one call of ``jit(vmap(run_chunk))`` over the K runs (what `experiments/runner.py` does), or
* ``sequential``: K calls of ``jit(run_chunk)`` (one run each, the same compiled scan).

Both donate the state. The throughput ratio is time(sequential) / time(vmap): above 1 the vmapped sweep wins.
Regimes: a small MLP on digits (64-64-64-10, batch 64) is dispatch/latency-bound, so batching K runs into one
program amortises the per-op overhead; a large MLP (784-1024-1024-10, batch 128) already keeps the CPU cores
busy with its matmuls, so vmap has little to gain (or loses) on CPU. Also reported: train steps/s of one run
and run-steps/s (K x steps / s) of the vmapped sweep.
"""
from __future__ import annotations

import argparse
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import harness
from jaxfair import data as data_lib
from jaxfair import losses
from jaxfair import models
from jaxfair import training


def _synthetic(n: int, dim: int, num_classes: int, seed: int = 0) -> data_lib.Dataset:
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(dim, num_classes)) / np.sqrt(dim)
  x = rng.normal(size=(n, dim)).astype(np.float32)
  y = np.argmax(x @ w, axis=1).astype(np.int32)
  return data_lib.Dataset(x, y, x[:256], y[:256], num_classes, "synthetic")


def _setup(name: str, k: int, steps: int):
  if name == "small":
    dataset = data_lib.load_digits(seed=0)
    model = models.mlp(dataset.input_shape, dataset.num_classes, width=64, depth=2)
    batch = 64
  else:
    dataset = _synthetic(4096, 784, 10)
    model = models.mlp(dataset.input_shape, dataset.num_classes, width=1024, depth=2)
    batch = 128
  program = training.make_train(
      model=model, loss=losses.softmax_cross_entropy, data=dataset, batch_size=batch,
      optimizer=lambda h: optax.inject_hyperparams(optax.adam)(learning_rate=h["learning_rate"]))
  keys = jax.vmap(jax.random.key)(jnp.arange(k, dtype=jnp.uint32))
  hp = {"learning_rate": jnp.full((k,), 1e-3, jnp.float32)}
  states = jax.jit(jax.vmap(program.init))(keys, hp)
  vmapped = jax.jit(jax.vmap(lambda s, h, d: program.run_chunk(s, h, d, steps), in_axes=(0, 0, None)),
                    donate_argnums=0)
  single = jax.jit(lambda s, h, d: program.run_chunk(s, h, d, steps), donate_argnums=0)
  batched = {"state": states}
  seq = {"states": [jax.tree.map(lambda x, i=i: x[i], states) for i in range(k)]}
  hp1 = {"learning_rate": jnp.float32(1e-3)}

  def run_vmap():
    batched["state"], metrics = vmapped(batched["state"], hp, program.data)
    return metrics["loss"]

  def run_sequential():
    out = []
    for i in range(k):
      seq["states"][i], metrics = single(seq["states"][i], hp1, program.data)
      out.append(metrics["loss"])
    return out

  def run_one():
    seq["states"][0], metrics = single(seq["states"][0], hp1, program.data)
    return metrics["loss"]

  return run_vmap, run_sequential, run_one


def main(argv: Sequence[str] = ()) -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--seeds", type=int, default=8)
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--small_steps", type=int, default=100)
  parser.add_argument("--large_steps", type=int, default=5)
  args = parser.parse_args(list(argv))
  k = args.seeds
  timings, ratios, rates = {}, {}, {}
  for name, steps in (("small", args.small_steps), ("large", args.large_steps)):
    run_vmap, run_seq, run_one = _setup(name, k, steps)
    t = harness.time_interleaved({f"{name}_vmap{k}": run_vmap, f"{name}_sequential{k}": run_seq,
                                  f"{name}_one_run": run_one}, reps=args.reps, warmup=2)
    timings.update(t)
    ratios[f"{name}_sequential_over_vmap"] = t[f"{name}_sequential{k}"].median / t[f"{name}_vmap{k}"].median
    # On a shared machine the fastest repetition is the least disturbed one: report that ratio too.
    ratios[f"{name}_sequential_over_vmap_min"] = (min(t[f"{name}_sequential{k}"].times_s)
                                                  / min(t[f"{name}_vmap{k}"].times_s))
    rates[f"{name}_one_run_steps_per_s"] = steps / t[f"{name}_one_run"].median
    rates[f"{name}_vmap_run_steps_per_s"] = k * steps / t[f"{name}_vmap{k}"].median
    rates[f"{name}_sequential_run_steps_per_s"] = k * steps / t[f"{name}_sequential{k}"].median
  extra = {"ratios": ratios, "rates": rates, "load_average": list(os.getloadavg()),
           "setup": {"seeds": k, "small": f"MLP 64-64-64-10 on digits, batch 64, {args.small_steps} steps/call",
                     "large": f"MLP 784-1024-1024-10 on synthetic data, batch 128, {args.large_steps} steps/call",
                     "optimizer": "adam via inject_hyperparams", "timed": "one chunk call (lax.scan of N steps)"}}
  harness.write_results("vmap_seeds", timings, extra)
  for key, v in rates.items():
    print(f"  {key}: {v:.1f}")


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top
  main(sys.argv[1:])

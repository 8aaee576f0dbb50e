"""Inductive-bias samplers: GP posterior samples/s, MLP hypotheses trained/s, vmapped vs sequential training.

  python -m benchmarks.run_all --only inductive_bias      (writes benchmarks/results/inductive_bias.json)

* gp_cholesky / gp_eigh: 10,000 posterior test-loss samples on a digits-sized problem (n=200 train,
  m=300 test points, k=10 outputs), one compiled `lax.map` over chunks.
* nn_<size>_vmapped_K vs nn_<size>_sequential_K: K MLPs (depth 1: d-w-w-10, full-batch Adam) trained as one
  jit(vmap(train)) program vs the same jitted single-net program (its own lax.scan over steps) called K times
  with the same keys (same results, checked). Sizes: tiny (d=8, w=16, n=64, K=128), small (d=16, w=32,
  n=100, K=32), wide (d=16, w=256, n=100, K=8). Tiny models are latency bound per step on CPU, which is where
  vmapping pays; at width 256 the matmuls already occupy the cores. "fewshot" (d=16, w=16, n=5, 5 classes,
  K=256) is the size of the paper's 5-way 1-shot tasks.
* nn_<size>_vmapped_sharded_K (only with several devices): the same vmapped program with the K keys split over
  every local device. XLA:CPU runs these small programs on one core per device, so on a CPU make one device
  per core:  XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m benchmarks.run_all --only inductive_bias
* nn_<size>_sequential_alldev_K (only with several devices): the K sequential trainings dealt round-robin to
  the devices (asynchronous dispatch runs them side by side), the like-for-like baseline of the sharded row:
  both use every core. "sequential / vmapped over N devices" (one device against N) overstates the gain.
"""
from __future__ import annotations

import functools
import os

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from benchmarks.harness import time_interleaved, write_results
from jaxfair import inductive_bias as ib
from jaxfair.training import sharding


def _task(n, m, d, k, seed=0):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(d, k))
  x = rng.normal(size=(n + m, d)).astype(np.float32)
  y = np.eye(k, dtype=np.float32)[np.argmax(x @ w, 1)]
  return x[:n], y[:n], x[n:], y[n:]


def main(argv=None) -> None:
  del argv
  results = {}
  # --- GP posterior samples.
  xtr, ytr, xte, yte = _task(200, 300, 16, 10)
  num_samples = 10_000
  ls = ib.median_lengthscale(xtr)
  gp = {method: functools.partial(ib.gp_posterior_losses, jax.random.key(0), xtr, ytr, xte, yte,
                                  num_samples=num_samples, lengthscale=ls, method=method)
        for method in ("cholesky", "eigh")}

  # --- MLP hypotheses: (name, K, n_train, d, width, epochs, classes).
  configs = [("fewshot", 256, 5, 16, 16, 200, 5), ("tiny", 128, 64, 8, 16, 200, 10),
             ("small", 32, 100, 16, 32, 200, 10), ("wide", 8, 100, 16, 256, 50, 10)]
  mesh = sharding.make_sweep_mesh() if jax.local_device_count() > 1 else None
  nn, max_diff = {}, {}
  for name, k_hyp, n, d, width, epochs, classes in configs:
    xtr_s, ytr_s, xte_s, yte_s = _task(n, 2 * n, d, classes, seed=1)
    keys = jax.random.split(jax.random.key(1), k_hyp)
    train = functools.partial(ib.train_mlp_hypothesis, x_train=xtr_s, y_train=ytr_s, x_test=xte_s, y_test=yte_s,
                              width=width, depth=1, epochs=epochs, learning_rate=1e-3)
    single = jax.jit(train)
    many = jax.jit(jax.vmap(train))
    sharded_keys = None if mesh is None else jax.device_put(keys, NamedSharding(mesh, P(sharding.RUNS)))
    # Same hypotheses every way (sanity check before timing).
    b = np.asarray([single(key)[0] for key in keys])
    for label, k in (("vmapped", keys), ("vmapped_sharded", sharded_keys)):
      if k is not None:
        max_diff[f"{name}_{label}"] = float(np.max(np.abs(np.asarray(many(k)[0]) - b) / np.abs(b)))
    nn[name] = (k_hyp, keys, sharded_keys, single, many)

  candidates = {
      "gp_cholesky_10k": lambda: gp["cholesky"](),
      "gp_eigh_10k": lambda: gp["eigh"](),
  }
  for name, (k_hyp, keys, sharded_keys, single, many) in nn.items():
    candidates[f"nn_{name}_vmapped_{k_hyp}"] = functools.partial(many, keys)
    if sharded_keys is not None:
      candidates[f"nn_{name}_vmapped_sharded_{k_hyp}"] = functools.partial(many, sharded_keys)
    candidates[f"nn_{name}_sequential_{k_hyp}"] = functools.partial(
        lambda single, keys: [single(key) for key in keys], single, keys)
    if sharded_keys is not None:
      devices = jax.local_devices()
      dealt = [jax.device_put(key, devices[i % len(devices)]) for i, key in enumerate(keys)]
      candidates[f"nn_{name}_sequential_alldev_{k_hyp}"] = functools.partial(
          lambda single, keys: [single(key) for key in keys], single, dealt)
  load_before = os.getloadavg()
  timings = time_interleaved(candidates, reps=9, warmup=1)
  med = {k: t.median for k, t in timings.items()}
  ratios = {"eigh_vs_cholesky (cholesky / eigh)": med["gp_cholesky_10k"] / med["gp_eigh_10k"]}
  throughput = {"gp_cholesky_samples_per_s": num_samples / med["gp_cholesky_10k"],
                "gp_eigh_samples_per_s": num_samples / med["gp_eigh_10k"]}
  for name, (k_hyp, *_) in nn.items():
    v, q = med[f"nn_{name}_vmapped_{k_hyp}"], med[f"nn_{name}_sequential_{k_hyp}"]
    ratios[f"vmapped_speedup_{name} (sequential / vmapped)"] = q / v
    throughput[f"nn_{name}_hypotheses_per_s_vmapped"] = k_hyp / v
    throughput[f"nn_{name}_hypotheses_per_s_sequential"] = k_hyp / q
    if mesh is not None:
      w = med[f"nn_{name}_vmapped_sharded_{k_hyp}"]
      q_all = med[f"nn_{name}_sequential_alldev_{k_hyp}"]
      ratios[f"vmapped_sharded_speedup_{name} (sequential over {mesh.size} devices / vmapped over them)"] = q_all / w
      ratios[f"vmapped_sharded_vs_one_device_{name} (sequential on 1 device / vmapped over {mesh.size})"] = q / w
      throughput[f"nn_{name}_hypotheses_per_s_vmapped_sharded"] = k_hyp / w
      throughput[f"nn_{name}_hypotheses_per_s_sequential_alldev"] = k_hyp / q_all
  for k, v in throughput.items():
    print(f"  {k}: {v:.1f}")
  results.update(ratios=ratios, throughput=throughput,
                 setup={"gp": "n=200, m=300, d=16, k=10, 10k samples, float32",
                        "nn": {name: dict(K=c[1], n_train=c[2], d=c[3], width=c[4], depth=1, epochs=c[5],
                                          classes=c[6], batch="full") for name, c in zip(nn, configs)},
                        "devices": jax.local_device_count(),
                        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                        "vmapped_vs_sequential_max_rel_diff": max_diff})
  write_results("inductive_bias", timings, results)


if __name__ == "__main__":
  main()

"""Inductive-bias samplers: GP posterior samples/s, MLP hypotheses trained/s, vmapped vs sequential training.

  python -m benchmarks.run_all --only inductive_bias      (writes benchmarks/results/inductive_bias.json)

* gp_cholesky / gp_eigh: 10,000 posterior test-loss samples on a digits-sized problem (n=200 train,
  m=300 test points, k=10 outputs), one compiled `lax.map` over chunks.
* nn_<size>_vmapped_K vs nn_<size>_sequential_K: K MLPs (depth 1: d-w-w-10, full-batch Adam) trained as one
  jit(vmap(train)) program vs the same jitted single-net program (its own lax.scan over steps) called K times
  with the same keys (same results, checked). Sizes: tiny (d=8, w=16, n=64, K=128), small (d=16, w=32,
  n=100, K=32), wide (d=16, w=256, n=100, K=8). Tiny models are latency bound per step on CPU, which is where
  vmapping pays; at width 256 the matmuls already occupy the cores.
"""
from __future__ import annotations

import functools
import os

import jax
import numpy as np

from benchmarks.harness import time_interleaved, write_results
from jaxfair import inductive_bias as ib


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

  # --- MLP hypotheses: (name, K, n_train, d, width, epochs).
  configs = [("tiny", 128, 64, 8, 16, 200), ("small", 32, 100, 16, 32, 200), ("wide", 8, 100, 16, 256, 50)]
  nn, max_diff = {}, {}
  for name, k_hyp, n, d, width, epochs in configs:
    xtr_s, ytr_s, xte_s, yte_s = _task(n, 2 * n, d, 10, seed=1)
    keys = jax.random.split(jax.random.key(1), k_hyp)
    train = functools.partial(ib.train_mlp_hypothesis, x_train=xtr_s, y_train=ytr_s, x_test=xte_s, y_test=yte_s,
                              width=width, depth=1, epochs=epochs, learning_rate=1e-3)
    single = jax.jit(train)
    many = jax.jit(jax.vmap(train))
    # Same hypotheses either way (sanity check before timing).
    a = np.asarray(many(keys)[0])
    b = np.asarray([single(key)[0] for key in keys])
    max_diff[name] = float(np.max(np.abs(a - b) / np.abs(b)))
    nn[name] = (k_hyp, keys, single, many)

  candidates = {
      "gp_cholesky_10k": lambda: gp["cholesky"](),
      "gp_eigh_10k": lambda: gp["eigh"](),
  }
  for name, (k_hyp, keys, single, many) in nn.items():
    candidates[f"nn_{name}_vmapped_{k_hyp}"] = functools.partial(many, keys)
    candidates[f"nn_{name}_sequential_{k_hyp}"] = functools.partial(
        lambda single, keys: [single(key) for key in keys], single, keys)
  load_before = os.getloadavg()
  timings = time_interleaved(candidates, reps=5, warmup=1)
  med = {k: t.median for k, t in timings.items()}
  ratios = {"eigh_vs_cholesky (cholesky / eigh)": med["gp_cholesky_10k"] / med["gp_eigh_10k"]}
  throughput = {"gp_cholesky_samples_per_s": num_samples / med["gp_cholesky_10k"],
                "gp_eigh_samples_per_s": num_samples / med["gp_eigh_10k"]}
  for name, (k_hyp, _, _, _) in nn.items():
    v, q = med[f"nn_{name}_vmapped_{k_hyp}"], med[f"nn_{name}_sequential_{k_hyp}"]
    ratios[f"vmapped_speedup_{name} (sequential / vmapped)"] = q / v
    throughput[f"nn_{name}_hypotheses_per_s_vmapped"] = k_hyp / v
    throughput[f"nn_{name}_hypotheses_per_s_sequential"] = k_hyp / q
  for k, v in throughput.items():
    print(f"  {k}: {v:.1f}")
  results.update(ratios=ratios, throughput=throughput,
                 setup={"gp": "n=200, m=300, d=16, k=10, 10k samples, float32",
                        "nn": {name: dict(K=c[1], n_train=c[2], d=c[3], width=c[4], depth=1, epochs=c[5],
                                          batch="full") for name, c in zip(nn, configs)},
                        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                        "vmapped_vs_sequential_max_rel_diff": max_diff})
  write_results("inductive_bias", timings, results)


if __name__ == "__main__":
  main()

"""Toy noiseless linear regression with heterogeneous sample norms (Sow et al., ICLR 2025, toy figure).

ONE compiled program trains every (weighting method, seed, learning rate) triple: plain minibatch SGD
on the squared loss l_i = (x_i theta - y_i)^2 from theta = 0, batches from per-epoch permutations
(`jaxfair.data.epoch_batch`, the ragged last batch masked), weights from the method's `WeightingRule`, the
test MSE logged every `eval_every` steps. Each seed draws its own dataset (`jaxfair.data.linear_regression`).

Two readings are reported (summary.json, plots):
* fixed lr: every method at `config.fixed_lr`;
* tuned lr: (a) each seed (its own dataset) at the method's best lr from the grid for that seed, selected by
  the final TRAIN MSE; (b) one "robust" lr per method: the best among the lrs at which no seed diverged.
A run whose train MSE is non-finite or above `divergence_threshold` x its initial value counts as diverged.
"""
from __future__ import annotations

import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import reweighting_common as common
from jaxfair.data import epoch_batch, linear_regression


def make_sweep(config, methods):
  """`sweep(method_indices (K,), seeds (S,), lrs (L,)) -> (test_mse, train_mse)`, each (K, S, L, evals + 1).

  One compiled program for every method, seed and learning rate (the method is a switch index per run).
  """
  rule = common.switch_rule([common.make_rule(m, config) for m in methods])
  n, d, m = int(config.num_train), int(config.dim), int(config.batch_size)
  num_evals = int(config.num_steps) // int(config.eval_every)
  eval_every = int(config.eval_every)

  def one(method, seed, lr):
    key = jax.random.key(seed)
    task = linear_regression(jax.random.fold_in(key, 0), n, int(config.num_test), d,
                             norm_sigma=float(config.norm_sigma))
    data_key = jax.random.fold_in(key, 1)
    y_train, y_test = task.y_train[:, 0], task.y_test[:, 0]

    def mse(theta):
      return (jnp.mean(jnp.square(task.x_test @ theta - y_test)), jnp.mean(jnp.square(task.x_train @ theta - y_train)))

    def step(carry, t):
      theta, rule_state = carry
      batch = epoch_batch(data_key, task.x_train, y_train, t, m)
      residual = jnp.where(batch.mask, batch.x @ theta - batch.y, 0.0)
      losses = jnp.square(residual)
      w, rule_state = rule.apply(jax.lax.stop_gradient(losses), batch.mask, rule_state)
      grad = 2.0 * (w * residual) @ batch.x  # gradient of sum_i w_i l_i with w held fixed
      return (theta - lr * grad, rule_state), None

    def chunk(carry, c):
      carry, _ = jax.lax.scan(step, carry, c * eval_every + jnp.arange(eval_every))
      return carry, mse(carry[0])

    theta0 = jnp.zeros((d,))
    rule_state = (method, rule.init()[1])
    _, (test, train) = jax.lax.scan(chunk, (theta0, rule_state), jnp.arange(num_evals))
    test0, train0 = mse(theta0)
    return jnp.concatenate([test0[None], test]), jnp.concatenate([train0[None], train])

  sweep = jax.vmap(jax.vmap(jax.vmap(one, in_axes=(None, None, 0)), in_axes=(None, 0, None)), in_axes=(0, None, None))
  return jax.jit(sweep)


def _median(x):
  return float(np.median(x))


def run(config, workdir: str):
  workdir = pathlib.Path(workdir)
  common.write_config(workdir, config)
  log = common.JsonLines(workdir)
  seeds = np.asarray(config.seeds, np.int32)
  lrs = np.asarray(config.learning_rates, np.float32)
  fixed = int(np.argmin(np.abs(lrs - float(config.fixed_lr))))
  steps = np.arange(int(config.num_steps) // int(config.eval_every) + 1) * int(config.eval_every)
  results = {}
  methods = list(config.methods)
  start = time.time()
  all_test, all_train = jax.device_get(make_sweep(config, methods)(jnp.arange(len(methods), dtype=jnp.int32),
                                                                    jnp.asarray(seeds), jnp.asarray(lrs)))
  print(f"{len(methods)} methods x {len(seeds)} seeds x {len(lrs)} lrs in one program: {time.time() - start:.1f}s",
        flush=True)
  for k, method in enumerate(methods):
    test, train = np.asarray(all_test[k], np.float64), np.asarray(all_train[k], np.float64)
    diverged = ~np.isfinite(train[..., -1]) | (train[..., -1] > float(config.divergence_threshold) * train[..., 0])
    results[method] = dict(test=test, train=train, diverged=diverged)
    for si, seed in enumerate(seeds):
      for li, lr in enumerate(lrs):
        for k, step in enumerate(steps):
          log.write({"kind": "eval", "step": int(step), "run": int(si * len(lrs) + li), "seed": int(seed),
                     "hparams": {"method": method, "learning_rate": round(float(lr), 8)},
                     "metrics": {"test_mse": common.finite_or_none(test[si, li, k]),
                                 "train_mse": common.finite_or_none(train[si, li, k]),
                                 "diverged": bool(diverged[si, li])}})
    print(f"  {common.method_label(method, config)}: final test MSE at lr={lrs[fixed]:g}: median "
          f"{_median(test[:, fixed, -1]):.3g}", flush=True)
  log.close()

  summary = {"fixed_lr": round(float(lrs[fixed]), 8), "learning_rates": [round(float(v), 8) for v in lrs], "seeds": seeds.tolist(),
             "steps": int(config.num_steps), "methods": {}}
  for method, res in results.items():
    final_train = np.where(res["diverged"], np.inf, res["train"][..., -1])  # (S, L)
    final_test = np.where(res["diverged"], np.inf, res["test"][..., -1])
    per_seed_best = np.argmin(final_train, axis=1)  # (S,)
    res["per_seed_best"] = per_seed_best
    tuned_test = final_test[np.arange(len(seeds)), per_seed_best]
    stable_idx = [i for i in range(len(lrs)) if not res["diverged"][:, i].any()]
    robust = min(stable_idx, key=lambda i: np.median(final_train[:, i])) if stable_idx else None
    per_lr = {f"{lr:g}": {"median_test_mse": _median(final_test[:, i]),
                          "diverged_seeds": int(res["diverged"][:, i].sum())} for i, lr in enumerate(lrs)}
    summary["methods"][method] = {
        "label": common.method_label(method, config),
        "fixed_lr_test_mse": {"median": _median(final_test[:, fixed]), "min": float(np.min(final_test[:, fixed])),
                              "max": float(np.max(final_test[:, fixed])),
                              "diverged_seeds": int(res["diverged"][:, fixed].sum())},
        # (a) each seed (= its own dataset) at its own best lr by final train MSE
        "tuned_lr_per_seed": [round(float(lrs[i]), 8) for i in per_seed_best],
        "tuned_test_mse": {"median": _median(tuned_test), "min": float(np.min(tuned_test)),
                           "max": float(np.max(tuned_test))},
        # (b) one lr for all seeds: the best among those where no seed diverged
        "robust_lr": None if robust is None else round(float(lrs[robust]), 8),
        "robust_lr_test_mse": None if robust is None else {"median": _median(final_test[:, robust]),
                                                           "max": float(np.max(final_test[:, robust]))},
        "per_lr": per_lr,
    }
  (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
  print(format_table(summary))
  if config.get("plots", True):
    plot(results, steps, lrs, fixed, summary, config, workdir / "plots")
  return summary


def format_table(summary) -> str:
  def f(v):
    return "-" if v is None else f"{v:.3g}"
  lines = [f"{'method':16s} {'@ lr=' + format(summary['fixed_lr'], 'g'):>10s} {'per-seed tuned':>15s} "
           f"{'tuned lrs':>34s} {'robust lr':>10s} {'@ robust':>9s}"]
  for m in summary["methods"].values():
    robust = m["robust_lr_test_mse"]
    lines.append(f"{m['label']:16s} {m['fixed_lr_test_mse']['median']:10.3g} {m['tuned_test_mse']['median']:15.3g} "
                 f"{','.join(format(v, 'g') for v in m['tuned_lr_per_seed']):>34s} {f(m['robust_lr']):>10s} "
                 f"{f(robust and robust['median']):>9s}")
  lines.append("(median final test MSE over seeds; diverged runs count as inf)")
  return "\n".join(lines)


def plot(results, steps, lrs, fixed, summary, config, out: pathlib.Path) -> None:
  plt = common.plt()
  out.mkdir(parents=True, exist_ok=True)
  fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
  for method, res in results.items():
    label = summary["methods"][method]["label"]
    seeds_idx = np.arange(res["test"].shape[0])
    tuned = res["test"][seeds_idx, res["per_seed_best"]]  # (S, T): each seed at its own lr
    for ax, curves, diverged in ((axes[0], res["test"][:, fixed], res["diverged"][:, fixed]),
                                 (axes[1], tuned, res["diverged"][seeds_idx, res["per_seed_best"]])):
      kept = curves[~diverged]  # diverged runs are left out whole (counted in the label)
      suffix = f" ({int(diverged.sum())}/{len(diverged)} diverged)" if diverged.any() else ""
      if kept.shape[0] == 0:
        ax.plot([], [], label=label + suffix)
        continue
      line, = ax.plot(steps, np.median(kept, axis=0), label=label + suffix)
      ax.fill_between(steps, np.percentile(kept, 25, axis=0), np.percentile(kept, 75, axis=0),
                      color=line.get_color(), alpha=0.15)
    finals = np.where(results[method]["diverged"], np.inf, res["test"][..., -1])
    med = np.median(finals, axis=0)  # inf (not drawn) once half the seeds diverge
    axes[2].plot(lrs, np.where(np.isfinite(med), med, np.nan), marker="o", label=label)
  axes[0].set_title(f"fixed lr = {lrs[fixed]:g} (median, IQR over seeds)", fontsize=10)
  axes[1].set_title("each method and seed at its own best lr", fontsize=10)
  axes[2].set_title(f"median final test MSE vs lr (not drawn: >= half diverged)", fontsize=10)
  for ax in axes[:2]:
    ax.set_xlabel("step")
  axes[2].set_xlabel("learning rate")
  axes[2].set_xscale("log")
  for ax in axes:
    ax.set_yscale("log")
    ax.set_ylabel("test MSE")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(f"Noiseless linear regression, n={config.num_train}, d={config.dim}, M={config.batch_size}, "
               f"heterogeneous norms (log-normal, sigma={config.norm_sigma})")
  fig.tight_layout()
  fig.savefig(out / "reweighting_toy.png", dpi=110)
  plt.close(fig)

"""Toy noiseless linear regression with heterogeneous sample norms (Sow et al., ICLR 2025, toy figure).

For each weighting method, ONE compiled program trains every (seed, learning rate) pair: plain minibatch SGD
on the squared loss l_i = (x_i theta - y_i)^2 from theta = 0, batches from per-epoch permutations
(`jaxfair.data.epoch_batch`, the ragged last batch masked), weights from the method's `WeightingRule`, the
test MSE logged every `eval_every` steps. Each seed draws its own dataset (`jaxfair.data.linear_regression`).

Two readings are reported (summary.json, plots):
* fixed lr: every method at `config.fixed_lr`;
* tuned lr: every method at its own best lr from the grid, selected by the final TRAIN MSE (median over seeds);
  a run whose loss is non-finite or above `divergence_threshold` x its initial value counts as diverged.
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


def make_sweep(config, method: str):
  """`sweep(seeds (S,), lrs (L,)) -> (test_mse, train_mse)` each (S, L, num_evals + 1), one program."""
  rule = common.make_rule(method, config)
  n, d, m = int(config.num_train), int(config.dim), int(config.batch_size)
  num_evals = int(config.num_steps) // int(config.eval_every)
  eval_every = int(config.eval_every)

  def one(seed, lr):
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
    _, (test, train) = jax.lax.scan(chunk, (theta0, rule.init()), jnp.arange(num_evals))
    test0, train0 = mse(theta0)
    return jnp.concatenate([test0[None], test]), jnp.concatenate([train0[None], train])

  return jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, 0)), in_axes=(0, None)))


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
  for method in config.methods:
    start = time.time()
    test, train = jax.device_get(make_sweep(config, method)(jnp.asarray(seeds), jnp.asarray(lrs)))
    test, train = np.asarray(test, np.float64), np.asarray(train, np.float64)
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
    print(f"{common.method_label(method, config)}: {len(seeds)} seeds x {len(lrs)} lrs in "
          f"{time.time() - start:.1f}s; final test MSE at lr={lrs[fixed]:g}: median "
          f"{_median(test[:, fixed, -1]):.3g}", flush=True)
  log.close()

  summary = {"fixed_lr": round(float(lrs[fixed]), 8), "learning_rates": [round(float(v), 8) for v in lrs], "seeds": seeds.tolist(),
             "steps": int(config.num_steps), "methods": {}}
  for method, res in results.items():
    final_train = np.where(res["diverged"], np.inf, res["train"][..., -1])
    med_train = np.median(final_train, axis=0)  # (L,)
    best = int(np.argmin(med_train))
    per_lr = {f"{lr:g}": {"median_test_mse": _median(np.where(res["diverged"][:, i], np.inf, res["test"][:, i, -1])),
                          "diverged_seeds": int(res["diverged"][:, i].sum())} for i, lr in enumerate(lrs)}
    stable = [round(float(lr), 8) for i, lr in enumerate(lrs) if not res["diverged"][:, i].any()]
    summary["methods"][method] = {
        "label": common.method_label(method, config),
        "fixed_lr_test_mse": {"median": _median(res["test"][:, fixed, -1]), "min": float(np.min(res["test"][:, fixed, -1])),
                              "max": float(np.max(res["test"][:, fixed, -1])),
                              "diverged_seeds": int(res["diverged"][:, fixed].sum())},
        "tuned_lr": round(float(lrs[best]), 8),
        "tuned_lr_test_mse": {"median": _median(res["test"][:, best, -1]), "min": float(np.min(res["test"][:, best, -1])),
                              "max": float(np.max(res["test"][:, best, -1]))},
        "largest_stable_lr": max(stable) if stable else None,
        "per_lr": per_lr,
    }
  (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
  print(format_table(summary))
  if config.get("plots", True):
    plot(results, steps, lrs, fixed, summary, config, workdir / "plots")
  return summary


def format_table(summary) -> str:
  lines = [f"{'method':24s} {'test MSE @ lr=' + format(summary['fixed_lr'], 'g'):>22s} {'tuned lr':>9s} "
           f"{'test MSE @ tuned':>17s} {'largest stable lr':>18s}"]
  for m in summary["methods"].values():
    lines.append(f"{m['label']:24s} {m['fixed_lr_test_mse']['median']:22.3g} {m['tuned_lr']:9g} "
                 f"{m['tuned_lr_test_mse']['median']:17.3g} {str(m['largest_stable_lr']):>18s}")
  return "\n".join(lines)


def plot(results, steps, lrs, fixed, summary, config, out: pathlib.Path) -> None:
  plt = common.plt()
  out.mkdir(parents=True, exist_ok=True)
  fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
  for method, res in results.items():
    label = summary["methods"][method]["label"]
    best = int(np.argmin(np.abs(lrs - summary["methods"][method]["tuned_lr"])))
    for ax, li, suffix in ((axes[0], fixed, ""), (axes[1], best, f" lr={lrs[best]:g}")):
      curves = np.where(np.isfinite(res["test"][:, li]), res["test"][:, li], np.nan)
      med = np.nanmedian(curves, axis=0)
      line, = ax.plot(steps, med, label=label + suffix)
      ax.fill_between(steps, np.nanmin(curves, axis=0), np.nanmax(curves, axis=0), color=line.get_color(), alpha=0.15)
    finals = np.where(results[method]["diverged"], np.nan, res["test"][..., -1])
    axes[2].plot(lrs, np.nanmedian(finals, axis=0), marker="o", label=label)
  axes[0].set_title(f"fixed lr = {lrs[fixed]:g} (median, min-max over {len(config.seeds)} seeds)")
  axes[1].set_title("each method at its tuned lr (by final train MSE)")
  axes[2].set_title(f"final test MSE vs lr after {int(config.num_steps)} steps (diverged: not drawn)")
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

"""Optimizer comparison: Adam, AdamW, SGD+momentum, AdamP, SGDP, EXAdam (with/without the dynamic step) on
the offline digits set with the BatchNorm CNN (`jaxfair.models.cnn`: every conv kernel is scale-invariant).

For each optimizer, all seeds x learning rates run as ONE compiled program (the generic `train` experiment's
program and the sweep runner, one workdir per optimizer). The learning rate of each optimizer is then chosen
by the lowest mean final *training* loss over seeds (no test data is used to tune), and its test accuracy
reported. The evaluation also logs the norm of each conv kernel (the scale-invariant weights), to show the
norm growth that AdamP/SGDP are designed to slow.

Outputs in the workdir: one sweep workdir per optimizer (metrics.jsonl, checkpoints), results.json,
results.md (the table) and plots/optimizers.png (training loss, test accuracy, conv weight norms vs step).
"""
from __future__ import annotations

import collections
import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import runner as runner_lib
from experiments import train as train_lib
from jaxfair import losses
from jaxfair.training import make_evaluate


def _conv_kernels(params: Any) -> dict[str, jax.Array]:
  """Scale-invariant kernels of the BN CNN: every `conv_i/kernel` (flax layout)."""
  return {name: sub["kernel"] for name, sub in params.items() if name.startswith("conv_")}


def norm_evaluator(model, num_classes):
  """Evaluation factory: test loss/accuracy plus the Frobenius norm of every conv kernel (`norm_conv_i`)."""
  test_eval = make_evaluate(model, loss_fn=losses.softmax_cross_entropy, num_classes=num_classes)

  def evaluate(state, data):
    metrics = test_eval(state.params, state.model_state, data.x_test, data.y_test)
    for name, kernel in _conv_kernels(state.params).items():
      metrics[f"norm_{name}"] = jnp.sqrt(jnp.sum(jnp.square(kernel)))
    return metrics

  return evaluate


# Settings that only change the summary, not training: left out of the config the runner stores and compares
# on resume, so changing them re-summarises finished sweeps instead of refusing to resume.
ANALYSIS_ONLY = ("accuracy_last_evals",)


def _sub_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  spec = config.optimizer_specs[name]
  sub = ml_collections.ConfigDict(config.to_dict())
  sub.optimizer = dict(fn=spec["fn"], kwargs=dict(spec.get("kwargs", {})))
  sub.grid = dict(learning_rate=tuple(spec["learning_rates"]))
  sub.name = f"{config.get('name', 'optimizers')}/{name}"
  return sub


def _read_curves(workdir: pathlib.Path, hparam_index: int) -> dict[str, dict[int, list[float]]]:
  """metric -> step -> values over seeds, for one hparam index (train and eval records)."""
  curves: dict[str, dict[int, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
  with open(workdir / "metrics.jsonl") as f:
    for line in f:
      rec = json.loads(line)
      if rec["hparam_index"] != hparam_index:
        continue
      for k, v in rec["metrics"].items():
        if isinstance(v, (int, float)) and v is not None:
          key = k if rec["kind"] == "eval" else f"train_{k}" if not k.startswith("train_") else k
          curves[key][rec["step"]].append(float(v))
  return curves


def select(result: runner_lib.SweepResult, lrs: tuple[float, ...], num_seeds: int,
           train_loss: np.ndarray, late_accuracy: np.ndarray) -> dict[str, Any]:
  """Picks the learning rate with the lowest mean final training loss; returns per-lr and chosen stats.

  `test_accuracy_*` is the mean over the last few evaluations of each run (then mean/std over seeds);
  `final_test_accuracy_*` is the single final evaluation.
  """
  per_lr = []
  final = np.asarray(result.final_eval["test_accuracy"]).reshape(len(lrs), num_seeds)
  acc = late_accuracy.reshape(len(lrs), num_seeds)
  tl = train_loss.reshape(len(lrs), num_seeds)
  for i, lr in enumerate(lrs):
    per_lr.append({"learning_rate": lr, "train_loss_mean": float(np.mean(tl[i])),
                   "test_accuracy_mean": float(np.mean(acc[i])), "test_accuracy_std": float(np.std(acc[i])),
                   "test_accuracy": acc[i].tolist(),
                   "final_test_accuracy_mean": float(np.mean(final[i])),
                   "final_test_accuracy_std": float(np.std(final[i]))})
  finite = [i for i in range(len(lrs)) if np.isfinite(per_lr[i]["train_loss_mean"])]
  best = min(finite, key=lambda i: per_lr[i]["train_loss_mean"])
  return {"per_lr": per_lr, "chosen_index": best, "chosen": per_lr[best]}


def _late_mean(workdir: pathlib.Path, runs: list[runner_lib.Run], kind: str, metric: str, last: int) -> np.ndarray:
  """Per run, the mean of `metric` over its last `last` records of `kind` ("train" or "eval") in the log
  (NaN where a value is missing or non-finite)."""
  per_run = collections.defaultdict(list)
  with open(workdir / "metrics.jsonl") as f:
    for line in f:
      rec = json.loads(line)
      if rec["kind"] == kind and metric in rec["metrics"]:
        per_run[rec["run"]].append((rec["step"], rec["metrics"][metric]))
  out = []
  for r in runs:
    vals = [v for _, v in sorted(per_run[r.run])][-last:]
    out.append(float(np.mean(vals)) if vals and all(isinstance(v, (int, float)) for v in vals) else float("nan"))
  return np.asarray(out)


def format_table(summary: dict[str, Any], title: str) -> str:
  lines = [f"### {title}", "",
           "| optimizer | chosen lr | final train loss | test accuracy, last evals (mean ± std over seeds) | "
           "final test accuracy | conv-kernel norm growth ‖W_T‖/‖W_0‖ (mean over layers) |",
           "|---|---|---|---|---|---|"]
  for name, s in summary["optimizers"].items():
    c = s["chosen"]
    lines.append(f"| {name} | {c['learning_rate']:g} | {c['train_loss_mean']:.4f} | "
                 f"{c['test_accuracy_mean']:.4f} ± {c['test_accuracy_std']:.4f} | "
                 f"{c['final_test_accuracy_mean']:.4f} ± {c['final_test_accuracy_std']:.4f} | "
                 f"{s['norm_growth']:.3f} |")
  lines += ["", "All learning rates (test accuracy over the last evals, mean over seeds; * = chosen by the final "
            "training loss):", ""]
  for name, s in summary["optimizers"].items():
    cells = [f"{p['learning_rate']:g}: {p['test_accuracy_mean']:.4f}{'*' if i == s['chosen_index'] else ''}"
             for i, p in enumerate(s["per_lr"])]
    lines.append(f"- {name}: " + ", ".join(cells))
  return "\n".join(lines)


def initial_conv_norms(program, seeds, hparams) -> dict[str, float]:
  """Conv-kernel norms at step 0 (mean over seeds): the runner starts run r from jax.random.key(seed)."""
  norms = collections.defaultdict(list)

  @jax.jit
  def conv_norms(key):
    params = program.init(key, hparams).params
    return {f"norm_{k}": jnp.sqrt(jnp.sum(jnp.square(w))) for k, w in _conv_kernels(params).items()}

  for seed in seeds:
    for k, v in conv_norms(jax.random.key(int(seed))).items():
      norms[k].append(float(v))
  return {k: float(np.mean(v)) for k, v in norms.items()}


def plot(path: pathlib.Path, curves: dict[str, dict[str, dict[int, list[float]]]], title: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
  for name, c in curves.items():
    for ax, key in zip(axes[:2], ("train_loss", "test_accuracy")):
      if key in c:
        steps = sorted(c[key])
        ax.plot(steps, [np.mean(c[key][s]) for s in steps], label=name)
    norm_keys = sorted(k for k in c if k.startswith("norm_conv_"))
    if norm_keys:  # step 0 holds the initial norms
      steps = sorted(c[norm_keys[0]])
      mean_norm = [np.mean([np.mean(c[k][s]) / np.mean(c[k][0]) for k in norm_keys]) for s in steps]
      axes[2].plot(steps, mean_norm, label=name)
  axes[0].set(title="training loss (mean over seeds)", xlabel="step", yscale="log")
  axes[1].set(title="test accuracy (mean over seeds)", xlabel="step", ylim=(0.8, 1.0))
  axes[2].set(title="conv kernel norm / initial norm (scale-invariant)", xlabel="step")
  for ax in axes:
    ax.grid(alpha=0.3)
  axes[2].legend(fontsize=8)
  fig.suptitle(title)
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains every optimizer's seeds x learning-rate sweep, chooses each lr, writes the table and plots."""
  workdir = pathlib.Path(workdir)
  options = train_lib.runner_options(config)
  num_seeds = len(config.seeds)
  summary = {"optimizers": {}, "num_steps": int(config.num_steps), "seeds": list(config.seeds),
             "selection": "lowest mean training loss over the last logged steps",
             "test_accuracy": f"mean over the last {config.get('accuracy_last_evals', 5)} evaluations per run"}
  curves = {}
  for name in config.optimizers:
    sub = _sub_config(config, name)
    program = train_lib.make_program(sub)
    lrs = tuple(sub.grid.learning_rate)
    runs = runner_lib.make_runs(tuple(config.seeds), dict(sub.grid))
    stored = {k: v for k, v in sub.to_dict().items() if k not in ANALYSIS_ONLY}
    res = runner_lib.run_sweep(program, runs, workdir / name, options, config=stored, name=sub.name)
    if not res.completed:
      print(f"{name}: stopped after {res.steps_done} steps; run the same command again to resume.")
      return {}
    sel = select(res, lrs, num_seeds, _late_mean(workdir / name, runs, "train", "loss", config.get("select_last", 5)),
                 _late_mean(workdir / name, runs, "eval", "test_accuracy", config.get("accuracy_last_evals", 5)))
    c = _read_curves(workdir / name, sel["chosen_index"])
    for k, v in initial_conv_norms(program, config.seeds, {"learning_rate": lrs[sel["chosen_index"]]}).items():
      c[k][0] = [v]
    norm_keys = sorted(k for k in c if k.startswith("norm_conv_"))
    growth = float("nan")
    if norm_keys:
      steps = sorted(c[norm_keys[0]])
      growth = float(np.mean([np.mean(c[k][steps[-1]]) / np.mean(c[k][0]) for k in norm_keys]))
    summary["optimizers"][name] = {**sel, "norm_growth": growth, "spec": config.optimizer_specs[name].to_dict()}
    curves[name] = c
    print(f"{name}: lr {sel['chosen']['learning_rate']:g}, test accuracy "
          f"{sel['chosen']['test_accuracy_mean']:.4f} ± {sel['chosen']['test_accuracy_std']:.4f}, "
          f"conv norm growth {growth:.3f}")
  title = config.get("name", "optimizers")
  table = format_table(summary, title)
  (workdir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
  (workdir / "results.md").write_text(table + "\n")
  if config.runner.get("plots", True):
    plot(workdir / "plots" / "optimizers.png", curves, title)
  print(table)
  return summary


# Flax-layout aliases for configs. `optax.inject_hyperparams` (used by the sweep runner) injects every numeric
# argument of the factory, including the integer `channel_axis`, which then becomes a traced value and takes
# the slower all-axes projection path; these wrappers have no `channel_axis` argument, so it stays static.


def adamp(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, delta=0.1, wd_ratio=0.1,
          nesterov=False):
  """`jaxfair.optim.adamp` with channel_axis=-1 (flax layouts) fixed."""
  from jaxfair import optim  # pylint: disable=g-import-not-at-top
  return optim.adamp(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, delta=delta,
                     wd_ratio=wd_ratio, nesterov=nesterov, channel_axis=-1)


def sgdp(learning_rate, momentum=0.0, dampening=0.0, eps=1e-8, weight_decay=0.0, delta=0.1, wd_ratio=0.1,
         nesterov=False):
  """`jaxfair.optim.sgdp` with channel_axis=-1 (flax layouts) fixed."""
  from jaxfair import optim  # pylint: disable=g-import-not-at-top
  return optim.sgdp(learning_rate, momentum=momentum, dampening=dampening, eps=eps, weight_decay=weight_decay,
                    delta=delta, wd_ratio=wd_ratio, nesterov=nesterov, channel_axis=-1)

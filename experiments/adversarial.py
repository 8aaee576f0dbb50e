r"""Adversarial training: standard AT vs DONE (KL-DRO weights, per-batch and EMA) vs loss-reweighted AT.

Every method is the same training step (`jaxfair.training`) with a PGD perturbation (or DONE's implicit one)
and a different weighting rule; each method's seeds (x optimizer grid) run as ONE compiled, vmapped program
through `experiments.runner.run_sweep` (logs, checkpoints, resume per method in `workdir/<method>/`).
Evaluation is compiled and batched (`jaxfair.adversarial.robust_evaluate`): SA, PGD-k robust accuracy
(RA-PGD), RA-Tail-30 (robust accuracy of the 30% most vulnerable classes) and per-class robust accuracy.

Outputs in `workdir`: `results.json` (per method and seed, and mean / 95% t-interval over seeds, plus paired
differences to the first method), `results.md` (the table), and plots `per_class_robust.png`,
`weights.png` (N * max weight and effective-sample-size fraction over training), `ra_tail.png`.

Config fields (see experiments/configs/adversarial_digits.py):
  data, long_tail (imbalance ratio of the training split; 0 = as loaded), model, loss, optimizer, grid, seeds,
  batch_size, num_steps, runner: as for the generic `train` experiment.
  attack: dict(eps, step_size, num_steps, norm, bounds) — the training attack.
  eval_attack: dict(eps, step_size, num_steps, norm, bounds, batch_size) — the evaluation attack (PGD-20).
  methods: tuple of names; method_specs.<name>: dict(weighting=<component spec or None>,
    gradient="danskin"|"implicit", barrier=dict(...) for implicit).
"""
from __future__ import annotations

import json
import math
import pathlib
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import build as build_lib
from experiments import runner as runner_lib
from experiments import train as train_lib
from jaxfair import adversarial as adv
from jaxfair.data import synthetic
from jaxfair.training import sharding as sharding_lib


def _t_quantile(df: int, level: float = 0.95) -> float:
  try:
    from scipy import stats  # pylint: disable=g-import-not-at-top
    return float(stats.t.ppf(0.5 + level / 2, df))
  except ImportError:  # normal approximation
    return 1.959964


def mean_ci(values: np.ndarray, level: float = 0.95) -> dict[str, float]:
  """Mean and the half-width of the two-sided t confidence interval over seeds (axis 0)."""
  v = np.asarray(values, dtype=float)
  n = v.shape[0]
  mean = float(np.mean(v))
  if n < 2:
    return {"mean": mean, "ci": float("nan"), "n": n}
  half = _t_quantile(n - 1, level) * float(np.std(v, ddof=1)) / math.sqrt(n)
  return {"mean": mean, "ci": half, "n": n}


def load_data(config: ml_collections.ConfigDict):
  kwargs = dict(build_lib._to_python(config.data).get("kwargs") or {})  # pylint: disable=protected-access
  if "data_dir" in kwargs and not kwargs["data_dir"]:
    raise ValueError("this config reads its data from files: pass the directory, e.g. "
                     "--config.data.kwargs.data_dir=/path/to/cifar-10-batches-py")
  data = build_lib.build(config.data)
  ratio = float(config.get("long_tail", 0) or 0)
  if ratio > 1:
    data = synthetic.long_tailed(data, ratio, seed=int(config.get("long_tail_seed", 0)))
  x_min, x_max = float(np.min(data.x_train)), float(np.max(data.x_train))
  lo, hi = config.attack.bounds
  if x_min < lo or x_max > hi:
    raise ValueError(f"inputs span [{x_min}, {x_max}] but config.attack.bounds is {tuple(config.attack.bounds)}; "
                     "load images scaled to [0, 1] (e.g. load_digits(image=True)).")
  return data


def make_evaluate(model, num_classes: int, eval_attack: dict[str, Any]):
  """(state, data) -> SA / RA / RA-Tail-30 / per-class metrics under the evaluation attack."""
  ev = dict(eval_attack)
  batch_size = int(ev.pop("batch_size", 256))

  def evaluate(state, data):
    def logits_fn(params, x):
      return model.apply(params, state.model_state, x, train=False)[0]

    m = adv.robust_evaluate(logits_fn, state.params, data.x_test, data.y_test,
                            jax.random.fold_in(state.key, 7), num_classes=num_classes, batch_size=batch_size,
                            eps=ev["eps"], step_size=ev["step_size"], num_steps=int(ev["num_steps"]),
                            norm=ev.get("norm", "linf"), bounds=tuple(ev.get("bounds", (0.0, 1.0))))
    return {"test_sa": m["sa"], "test_ra": m["ra"], "test_ra_tail30": m["ra_tail"], "test_sa_tail30": m["sa_tail"],
            "test_per_class_robust": m["per_class_robust"], "test_per_class_clean": m["per_class_clean"]}

  return evaluate


def make_perturbation(config, spec):
  attack = dict(config.attack)
  gradient = spec.get("gradient", "danskin")
  kwargs = dict(eps=attack["eps"], step_size=attack["step_size"], num_steps=int(attack["num_steps"]),
                bounds=tuple(attack.get("bounds", (0.0, 1.0))))
  if gradient == "danskin":
    return adv.pgd_perturbation(norm=attack.get("norm", "linf"), **kwargs)
  if gradient == "implicit":
    barrier = adv.BarrierConfig(**dict(spec.get("barrier", {}) or {}))
    return adv.implicit_perturbation(config=barrier, **kwargs)
  raise ValueError(f"method gradient must be 'danskin' or 'implicit', got {gradient!r}.")


def make_program(config: ml_collections.ConfigDict, method: str, data=None):
  from jaxfair import training  # pylint: disable=g-import-not-at-top
  spec = dict(config.method_specs[method])
  data = load_data(config) if data is None else data
  num_classes = data.num_classes
  input_shape = tuple(data.x_train.shape[1:])
  model = build_lib.build(config.model, input_shape=input_shape, num_outputs=num_classes)
  model = sharding_lib.shard_model_inputs(model)
  ctx = dict(model=model, num_classes=num_classes, input_shape=input_shape, data=data)
  loss = build_lib.build(config.loss, **ctx)
  weighting = build_lib.build(spec.get("weighting"), **ctx)
  perturb = make_perturbation(config, spec)
  grid_names = sorted(dict(config.get("grid", {}) or {}))
  optimizer = train_lib.optimizer_factory(config.optimizer, grid_names)
  evaluate = make_evaluate(model, num_classes, dict(config.eval_attack))
  return training.make_train(model=model, loss=loss, optimizer=optimizer, data=data,
                             batch_size=int(config.batch_size), weighting=weighting, perturb=perturb,
                             evaluate=evaluate)


_SCALARS = ("test_sa", "test_ra", "test_ra_tail30")


def summarize(results: dict[str, dict[str, np.ndarray]], methods: list[str]) -> dict[str, Any]:
  """Mean and 95% CI over seeds per method, and paired differences (method - first method) per seed."""
  base = methods[0]
  out = {"methods": {}, "paired_vs_" + base: {}}
  for m in methods:
    out["methods"][m] = {k: mean_ci(results[m][k]) for k in _SCALARS}
    out["methods"][m]["per_class_robust"] = np.mean(results[m]["test_per_class_robust"], axis=0).tolist()
    out["methods"][m]["per_seed"] = {k: np.asarray(results[m][k]).tolist() for k in _SCALARS}
    if m != base:
      out["paired_vs_" + base][m] = {k: mean_ci(np.asarray(results[m][k]) - np.asarray(results[base][k]))
                                     for k in _SCALARS}
  return out


def format_table(summary: dict[str, Any], methods: list[str], title: str = "") -> str:
  base = methods[0]
  n = summary["methods"][base]["test_sa"]["n"]
  lines = ([f"**{title}**", ""] if title else []) + [
      f"| method | SA | RA-PGD | RA-Tail-30 | RA-Tail-30 − {base} (paired) |",
      "|---|---|---|---|---|"]
  for m in methods:
    s = summary["methods"][m]
    cells = [f"{100 * s[k]['mean']:.1f} ± {100 * s[k]['ci']:.1f}" for k in _SCALARS]
    diff = "—" if m == base else (lambda d: f"{100 * d['mean']:+.1f} ± {100 * d['ci']:.1f}")(
        summary["paired_vs_" + base][m]["test_ra_tail30"])
    lines.append(f"| {m} | " + " | ".join(cells) + f" | {diff} |")
  lines.append("")
  lines.append(f"Accuracies in %, mean ± half-width of the 95% t-interval over {n} seeds.")
  return "\n".join(lines)


def plot(workdir: pathlib.Path, results, summary, methods, title: str) -> list[pathlib.Path]:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from experiments import plot as plot_lib  # pylint: disable=g-import-not-at-top
  paths = []
  # Per-class robust accuracy.
  fig, ax = plt.subplots(figsize=(7, 3.6))
  num_classes = np.asarray(results[methods[0]]["test_per_class_robust"]).shape[-1]
  width = 0.8 / len(methods)
  for j, m in enumerate(methods):
    v = np.asarray(results[m]["test_per_class_robust"])
    mean = v.mean(0)
    half = np.array([mean_ci(v[:, c])["ci"] for c in range(num_classes)]) if v.shape[0] > 1 else None
    ax.bar(np.arange(num_classes) + (j - (len(methods) - 1) / 2) * width, 100 * mean, width, label=m,
           yerr=None if half is None else 100 * half, capsize=2)
  ax.set_xlabel("class")
  ax.set_ylabel("robust accuracy (%)")
  ax.set_xticks(np.arange(num_classes))
  ax.set_title(f"{title}: per-class PGD robust accuracy (95% CI over seeds)")
  ax.legend(fontsize=8, ncol=len(methods))
  fig.tight_layout()
  paths.append(workdir / "per_class_robust.png")
  fig.savefig(paths[-1], dpi=120)
  plt.close(fig)
  # Weight diagnostics over training.
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
  for m in methods:
    records = plot_lib.read_metrics(workdir / m)
    for ax, name, label in ((axes[0], "weight_max_n", "N · max weight"), (axes[1], "ess_fraction",
                                                                          "ESS / N")):
      curves = plot_lib.collect(records, name, kind="train")
      for _, (steps, values) in curves.items():
        ax.plot(steps, values.mean(0), label=m)
        ax.fill_between(steps, values.min(0), values.max(0), alpha=0.2)
      ax.set_xlabel("step")
      ax.set_ylabel(label)
  axes[0].set_title("largest weight (1 = uniform)")
  axes[1].set_title("effective sample size fraction")
  axes[1].legend(fontsize=8)
  fig.suptitle(f"{title}: weight diagnostics (mean, min-max over seeds)")
  fig.tight_layout()
  paths.append(workdir / "weights.png")
  fig.savefig(paths[-1], dpi=120)
  plt.close(fig)
  # RA-Tail-30 per seed.
  fig, ax = plt.subplots(figsize=(5, 3.2))
  for j, m in enumerate(methods):
    v = 100 * np.asarray(results[m]["test_ra_tail30"])
    s = summary["methods"][m]["test_ra_tail30"]
    ax.errorbar([j], [100 * s["mean"]], yerr=[100 * s["ci"]] if np.isfinite(s["ci"]) else None, fmt="o",
                capsize=4, color="k")
    ax.scatter(np.full(v.shape, j) + 0.12, v, s=10, alpha=0.6)
  ax.set_xticks(range(len(methods)))
  ax.set_xticklabels(methods, fontsize=8)
  ax.set_ylabel("RA-Tail-30 (%)")
  ax.set_title(f"{title}: RA-Tail-30 (mean, 95% CI; dots = seeds)", fontsize=9)
  fig.tight_layout()
  paths.append(workdir / "ra_tail.png")
  fig.savefig(paths[-1], dpi=120)
  plt.close(fig)
  return paths


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains every method's seed sweep, evaluates SA / RA-PGD / RA-Tail-30, writes tables and plots."""
  workdir = pathlib.Path(workdir)
  methods = list(config.methods)
  data = load_data(config)
  counts = np.bincount(np.asarray(data.y_train), minlength=data.num_classes)
  logging.info("training split class counts: %s", counts.tolist())
  runs = runner_lib.make_runs(tuple(config.seeds), dict(config.get("grid", {}) or {}))
  options = train_lib.runner_options(config)
  results = {}
  for m in methods:
    program = make_program(config, m, data)
    res = runner_lib.run_sweep(program, runs, workdir / m, options, config=config.to_dict(),
                               name=f"{config.get('name', 'adversarial')}/{m}")
    if not res.completed:
      print(f"{m}: stopped after {res.steps_done} steps; run the same command again to resume.")
      return {}
    results[m] = {k: np.asarray(v) for k, v in res.final_eval.items()}
  summary = summarize(results, methods)
  summary["class_counts_train"] = counts.tolist()
  title = config.get("name", "adversarial")
  table = format_table(summary, methods, title)
  (workdir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
  (workdir / "results.md").write_text(table + "\n")
  if config.runner.get("plots", True):
    plot(workdir, results, summary, methods, title)
  print(table)
  return summary


# ------------------------------------------------------------------------------------------------------------
# Helpers named by configs.


def sgd_weight_decay(learning_rate, momentum: float = 0.9, weight_decay: float = 5e-4, nesterov: bool = False):
  """SGD with momentum and L2 weight decay added to the gradient (the AT standard: lr 0.1, m 0.9, wd 5e-4)."""
  import optax  # pylint: disable=g-import-not-at-top
  return optax.chain(optax.add_decayed_weights(weight_decay),
                     optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov))


def piecewise_schedule(init_value: float, total_steps: int, decay_at: tuple[float, ...] = (0.5, 0.75),
                       factor: float = 0.1):
  """Piecewise-constant learning rate: `init_value`, times `factor` at each fraction `decay_at` of training."""
  import optax  # pylint: disable=g-import-not-at-top
  return optax.piecewise_constant_schedule(init_value, {int(f * total_steps): factor for f in decay_at})


def fake_cifar10(num_train: int = 128, num_test: int = 64, seed: int = 0):
  """Random 32x32x3 images in [0, 1] with CIFAR-10's shapes: a stand-in for smoke tests without the data."""
  from jaxfair.data import Dataset  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  y_tr = (np.arange(num_train) % 10).astype(np.int32)
  y_te = (np.arange(num_test) % 10).astype(np.int32)
  means = rng.uniform(0.2, 0.8, (10, 1, 1, 3)).astype(np.float32)
  x_tr = np.clip(means[y_tr] + 0.2 * rng.standard_normal((num_train, 32, 32, 3)), 0, 1).astype(np.float32)
  x_te = np.clip(means[y_te] + 0.2 * rng.standard_normal((num_test, 32, 32, 3)), 0, 1).astype(np.float32)
  return Dataset(x_tr, y_tr, x_te, y_te, 10, "fake_cifar10")

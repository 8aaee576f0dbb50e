"""Classification with group imbalance and label noise: average and worst-group test accuracy per weighting.

Datasets (both offline):
* "gaussian_mixture": `jaxfair.data.gaussian_mixture`, 2 classes x 2 groups (a 90% majority and a 10%
  minority group with its own cluster means), a fraction of training labels flipped; the test split has the
  clean labels. Groups for the worst-group metric: (class, group), 4 of them.
* "digits_lt": scikit-learn's 8x8 digits made long-tailed (`jaxfair.data.long_tailed`, class c keeps a share
  ratio^(-c/9)), a fraction of training labels replaced by a random other class; the test split is balanced
  and clean. Groups: the 10 classes (worst-group accuracy = worst-class accuracy).

For each method, one compiled program trains every (seed, learning rate) pair (`jaxfair.training.make_train`,
vmapped), evaluating after every chunk. Methods are named in `config.methods` (see
`experiments.reweighting_common.make_rule`).
"""
from __future__ import annotations

import json
import pathlib
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import reweighting_common as common
from experiments.runner import check_same_config, write_text_atomic
from jaxfair import losses, models, training
from jaxfair.data import gaussian_mixture, load_digits, long_tailed


class Task(NamedTuple):
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  test_groups: np.ndarray  # group id of each test example
  group_names: list[str]
  train_group_counts: list[int]
  noisy_fraction: float


def _flip_labels(y: np.ndarray, num_classes: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
  flip = rng.random(y.shape[0]) < fraction
  other = (y + rng.integers(1, num_classes, y.shape[0])) % num_classes
  return np.where(flip, other, y).astype(np.int32)


def load_task(name: str, settings) -> Task:
  s = settings
  if name == "gaussian_mixture":
    n_train, n_test = int(s.num_train), int(s.num_test)
    fractions = tuple(s.group_fractions)
    g = jax.device_get(gaussian_mixture(jax.random.key(int(s.data_seed)), n_train + n_test, int(s.dim),
                                        num_classes=2, group_fractions=fractions, separation=float(s.separation),
                                        label_noise=float(s.label_noise)))
    groups = np.asarray(g.y_clean) * len(fractions) + np.asarray(g.group)
    names = [f"class{c}/group{k}" for c in range(2) for k in range(len(fractions))]
    y_train = np.asarray(g.y[:n_train])
    return Task(np.asarray(g.x[:n_train], np.float32), y_train, np.asarray(g.x[n_train:], np.float32),
                np.asarray(g.y_clean[n_train:]), 2, groups[n_train:],
                names, np.bincount(groups[:n_train], minlength=len(names)).tolist(),
                float(np.mean(y_train != np.asarray(g.y_clean[:n_train]))))
  if name == "digits_lt":
    data = long_tailed(load_digits(seed=int(s.data_seed)), float(s.imbalance_ratio), seed=int(s.data_seed))
    rng = np.random.default_rng(int(s.data_seed))
    y_train = _flip_labels(data.y_train, data.num_classes, float(s.label_noise), rng)
    return Task(data.x_train, y_train, data.x_test, data.y_test, data.num_classes, data.y_test,
                [f"digit{c}" for c in range(data.num_classes)],
                np.bincount(data.y_train, minlength=data.num_classes).tolist(),
                float(np.mean(y_train != data.y_train)))
  raise ValueError(f"unknown dataset {name!r}; choose 'gaussian_mixture' or 'digits_lt'.")


def make_evaluate(model, task: Task):
  """(state, data) -> test accuracy, worst-group accuracy, per-group accuracy (groups fixed by the task)."""
  groups = jax.nn.one_hot(jnp.asarray(task.test_groups), len(task.group_names))  # (N, G), a small constant

  def evaluate(state, data):
    logits, _ = model.apply(state.params, state.model_state, data.x_test, train=False)
    correct = (jnp.argmax(logits, -1) == data.y_test).astype(jnp.float32)
    per_group = (groups.T @ correct) / jnp.maximum(groups.sum(0), 1.0)
    return {"test_accuracy": correct.mean(), "worst_group_accuracy": per_group.min(),
            "group_accuracy": per_group,
            "test_loss": losses.softmax_cross_entropy(logits, data.y_test).mean()}

  return evaluate


def run_methods(task: Task, methods, settings, dataset_settings):
  """Trains every (method, seed, lr) run in ONE compiled program (the method is a switch index per run)."""
  model = models.mlp(task.x_train.shape[1:], task.num_classes, width=int(settings.width), depth=int(settings.depth))
  rule = common.switch_rule([common.make_rule(m, settings) for m in methods])
  program = training.make_train(
      model=model, loss=losses.softmax_cross_entropy, data=task, batch_size=int(dataset_settings.batch_size),
      optimizer=lambda h: optax.inject_hyperparams(optax.adam)(learning_rate=h["learning_rate"]),
      weighting=rule, evaluate=make_evaluate(model, task))
  runs = [(m, s, lr) for m in range(len(methods)) for s in settings.seeds for lr in dataset_settings.learning_rates]
  keys = jax.vmap(jax.random.key)(jnp.asarray([s for _, s, _ in runs]))
  hparams = {"learning_rate": jnp.asarray([lr for _, _, lr in runs], jnp.float32)}
  init = jax.jit(jax.vmap(program.init))
  chunk = jax.jit(jax.vmap(program.run_chunk, in_axes=(0, 0, None, None)), static_argnums=3)
  evaluate = jax.jit(jax.vmap(program.evaluate, in_axes=(0, None)))
  states = common.with_rule_index(init(keys, hparams), jnp.asarray([m for m, _, _ in runs], jnp.int32))
  num_steps, eval_every = int(dataset_settings.num_steps), int(dataset_settings.eval_every)
  history = []
  for c in range(num_steps // eval_every):
    states, metrics = chunk(states, hparams, program.data, eval_every)
    evals = jax.device_get(evaluate(states, program.data))
    metrics = jax.device_get(metrics)
    history.append({"step": (c + 1) * eval_every,
                    "train_loss": np.asarray(metrics["loss"]).mean(1),
                    "weight_max_n": np.asarray(metrics["weight_max_n"]).mean(1),
                    "ess_fraction": np.asarray(metrics["ess_fraction"]).mean(1),
                    **{k: np.asarray(v) for k, v in evals.items()}})
  return runs, history


def run(config, workdir: str):
  """Trains every dataset's program, writes metrics.jsonl, summary.json and plots; returns the summary.

  Each finished dataset is saved to `datasets/<name>.json`; the same command run again in the workdir of an
  interrupted run (no summary.json yet) reuses those and trains only the rest, reproducing the uninterrupted
  run's log and summary. A finished run is trained afresh.
  """
  workdir = pathlib.Path(workdir)
  (workdir / "datasets").mkdir(parents=True, exist_ok=True)
  check_same_config(workdir / "config.json", common.config_json(config), ignore=frozenset({"plots"}))
  if (workdir / "summary.json").exists():  # finished: start over (new code may give new numbers)
    for saved in (workdir / "datasets").glob("*.json"):
      saved.unlink()
    (workdir / "summary.json").unlink()
  common.write_config(workdir, config)
  log = common.JsonLines(workdir)
  summary = {}
  for dataset in config.datasets:
    saved = workdir / "datasets" / f"{dataset}.json"
    if saved.exists():
      done = json.loads(saved.read_text())
      summary[dataset] = done["summary"]
      for record in done["records"]:
        log.write(record)
      print(f"{dataset}: loaded from {saved}", flush=True)
      continue
    records = []
    ds = config[dataset]
    task = load_task(dataset, ds)
    print(f"{dataset}: {task.x_train.shape[0]} train / {task.x_test.shape[0]} test examples, train group counts "
          f"{task.train_group_counts}, {task.noisy_fraction:.1%} noisy training labels", flush=True)
    summary[dataset] = {"train_group_counts": task.train_group_counts, "group_names": task.group_names,
                        "noisy_fraction": task.noisy_fraction, "methods": {}}
    start = time.time()
    methods = list(config.methods)
    all_runs, all_history = run_methods(task, methods, config, ds)
    print(f"  {len(all_runs)} runs ({len(methods)} methods x {len(config.seeds)} seeds x "
          f"{len(ds.learning_rates)} lrs) in one program: {time.time() - start:.1f}s", flush=True)
    for mi, method in enumerate(methods):
      sel = [i for i, r in enumerate(all_runs) if r[0] == mi]
      runs = [all_runs[i][1:] for i in sel]
      history = [{k: (v if k == "step" else np.asarray(v)[sel]) for k, v in h.items()} for h in all_history]
      for h in history:
        for i, (seed, lr) in enumerate(runs):
          records.append({"kind": "eval", "step": int(h["step"]), "run": sel[i], "seed": int(seed),
                          "hparams": {"dataset": dataset, "method": method, "learning_rate": float(lr)},
                          "metrics": {k: (np.asarray(v[i]).tolist() if np.ndim(v[i]) else
                                          common.finite_or_none(v[i])) for k, v in h.items() if k != "step"}})
          log.write(records[-1])
      final = history[-1]
      label = common.method_label(method, config)
      by_lr = {}
      for lr in ds.learning_rates:
        idx = [i for i, (_, l) in enumerate(runs) if l == lr]
        by_lr[f"{lr:g}"] = {
            k: {"mean": float(np.mean(final[k][idx])), "std": float(np.std(final[k][idx]))}
            for k in ("test_accuracy", "worst_group_accuracy", "weight_max_n", "ess_fraction")}
        by_lr[f"{lr:g}"]["group_accuracy_mean"] = np.mean(final["group_accuracy"][idx], 0).tolist()
      summary[dataset]["methods"][method] = {"label": label, "by_lr": by_lr,
                                             "curves": {"step": [int(h["step"]) for h in history],
                                                        "worst_group_accuracy": [
                                                            np.asarray(h["worst_group_accuracy"]).tolist()
                                                            for h in history],
                                                        "test_accuracy": [np.asarray(h["test_accuracy"]).tolist()
                                                                          for h in history]}}
      first = by_lr[f"{ds.learning_rates[0]:g}"]
      print(f"  {label:22s} test acc {first['test_accuracy']['mean']:.4f} ± {first['test_accuracy']['std']:.4f}  "
            f"worst-group {first['worst_group_accuracy']['mean']:.4f} ± {first['worst_group_accuracy']['std']:.4f}  "
            f"(lr={ds.learning_rates[0]:g}, {len(config.seeds)} seeds)", flush=True)
    write_text_atomic(saved, json.dumps({"summary": summary[dataset], "records": records}))
  log.close()
  (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
  print(format_table(summary))
  if config.get("plots", True):
    plot(summary, config, workdir / "plots")
  return summary


def format_table(summary) -> str:
  lines = []
  for dataset, d in summary.items():
    lines.append(f"{dataset} (train group counts {d['train_group_counts']}, {d['noisy_fraction']:.1%} noisy labels)")
    lines.append(f"  {'method':22s} {'lr':>7s} {'test accuracy':>17s} {'worst-group acc':>17s} {'N w_max':>8s} "
                 f"{'ESS/N':>6s}")
    for m in d["methods"].values():
      for lr, v in m["by_lr"].items():
        lines.append(f"  {m['label']:22s} {lr:>7s} {v['test_accuracy']['mean']:.4f} ± {v['test_accuracy']['std']:.4f} "
                     f"{v['worst_group_accuracy']['mean']:.4f} ± {v['worst_group_accuracy']['std']:.4f} "
                     f"{v['weight_max_n']['mean']:8.2f} {v['ess_fraction']['mean']:6.2f}")
  return "\n".join(lines)


def plot(summary, config, out: pathlib.Path) -> None:
  plt = common.plt()
  out.mkdir(parents=True, exist_ok=True)
  datasets = list(summary)
  fig, axes = plt.subplots(2, len(datasets), figsize=(7 * len(datasets), 8), squeeze=False)
  for j, dataset in enumerate(datasets):
    methods = summary[dataset]["methods"]
    lr = next(iter(next(iter(methods.values()))["by_lr"]))
    labels = [m["label"] for m in methods.values()]
    avg = [m["by_lr"][lr]["test_accuracy"] for m in methods.values()]
    worst = [m["by_lr"][lr]["worst_group_accuracy"] for m in methods.values()]
    pos = np.arange(len(labels))
    ax = axes[0, j]
    ax.bar(pos - 0.2, [a["mean"] for a in avg], 0.4, yerr=[a["std"] for a in avg], label="average")
    ax.bar(pos + 0.2, [w["mean"] for w in worst], 0.4, yerr=[w["std"] for w in worst], label="worst group")
    ax.set_xticks(pos, labels, rotation=30, ha="right", fontsize=8)
    lo = min(w["mean"] - w["std"] for w in worst)
    ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{dataset}: final accuracy (mean ± std over {len(config.seeds)} seeds, lr={lr})")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax = axes[1, j]
    for m in methods.values():
      curves = np.asarray(m["curves"]["worst_group_accuracy"])  # (T, runs)
      ax.plot(m["curves"]["step"], curves.mean(1), label=m["label"])
    ax.set_xlabel("step")
    ax.set_ylabel("worst-group test accuracy (mean over runs)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out / "reweighting_classification.png", dpi=110)
  plt.close(fig)

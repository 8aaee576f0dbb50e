r"""EnsLoss vs fixed CC losses with the paper's comparison protocol (Dai, ICML 2025, Sec. 5).

For every model and every loss (EnsLoss, BCE, hinge, exponential with grad-norm clipping at 10), ALL
(problem, trial) runs -- the 45 one-vs-one pairs x trials, or the tabular datasets x trials -- train in ONE
compiled program: `jit(vmap(train))` over a leading run axis, each run with its own data split, initial
parameters and data order. The same (problem, trial) uses the same split, initialisation and batch order for
every loss, so the comparison is paired. The accuracy reported is the test accuracy at the LAST evaluation.

Significance (the paper's table): for each problem and baseline, the trial-wise paired differences
d = acc(EnsLoss) - acc(baseline) get a one-sided one-sample t-test (H1: mean d > 0 for "better", mean d < 0
for "worse") at p < 0.05; the counts (better, no difference, worse) over problems are reported with the mean
accuracies over problems x trials.

Workdir: `config.json`, `results/<model>__<loss>.npz` (final accuracies (P, T), eval curves; a finished pair
is skipped when an interrupted run's command is run again), `results.json`, `tables.md` and `plots/*.png`.

Data sources (`config.dataset`):
  digits_pairs   scikit-learn's 8x8 digits, the 45 one-vs-one pairs; split seed = trial (75/25). All
                 (pair, trial) train/test sets are trimmed to the smallest size so they stack (a few examples).
  tabular        `config.tabular` offline names (e.g. "breast_cancer") plus any CSV/ARFF in
                 `config.data_files` (binary label in the last column unless `config.label_column`); drop
                 NaN rows, 70/30 split with seed = trial, standardised on train (the paper's protocol).
  cifar10_pairs  CIFAR-10 python pickles in `config.data_dir`; the 45 pairs; the fixed train/test split;
                 trial = initialisation/data-order seed.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import pathlib
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from scipy import stats

from experiments.runner import check_same_config, sync_processes, write_text_atomic
from jaxfair import ensloss as ensloss_lib
from jaxfair import losses as losses_lib
from jaxfair import models as models_lib
from jaxfair import training
from jaxfair.data import batching

LOSSES = ("ensloss", "logistic", "hinge", "exponential")


# ---------------------------------------------------------------------------------------------------- data

def _stack(problems: list[list[Any]], names: list[str]) -> tuple[training.TrainData, list[str], dict[str, int]]:
  """(P problems) x (T trials) datasets -> one TrainData with a leading run axis P*T (problem-major),
  trimmed to the smallest train / test sizes."""
  flat = [d for trials in problems for d in trials]
  for d in flat:
    if d.num_classes != 2:
      raise ValueError(f"{d.name}: EnsLoss is binary; this dataset has {d.num_classes} classes.")
  n_tr = min(d.x_train.shape[0] for d in flat)
  n_te = min(d.x_test.shape[0] for d in flat)
  data = training.TrainData(
      x_train=np.stack([d.x_train[:n_tr] for d in flat]).astype(np.float32),
      y_train=np.stack([d.y_train[:n_tr] for d in flat]).astype(np.int32),
      x_test=np.stack([d.x_test[:n_te] for d in flat]).astype(np.float32),
      y_test=np.stack([d.y_test[:n_te] for d in flat]).astype(np.int32))
  dropped = {"train": int(sum(d.x_train.shape[0] for d in flat) - n_tr * len(flat)),
             "test": int(sum(d.x_test.shape[0] for d in flat) - n_te * len(flat)),
             "n_train": n_tr, "n_test": n_te}
  return data, names, dropped


def load_problems(config: ml_collections.ConfigDict, *, image: bool):
  """Returns (TrainData with a run axis of P*T, problem names, trimming info)."""
  from jaxfair import data as data_lib  # pylint: disable=g-import-not-at-top
  trials = list(range(int(config.trials)))
  kind = config.dataset
  if kind in ("digits_pairs", "cifar10_pairs"):
    pairs = list(itertools.combinations(range(10), 2))
    if config.get("max_pairs"):
      pairs = pairs[:int(config.max_pairs)]
    if kind == "digits_pairs":
      full = {t: data_lib.load_digits(seed=t, test_fraction=0.25, image=image) for t in trials}
    else:
      if not config.get("data_dir"):
        raise ValueError("dataset='cifar10_pairs' needs --config.data_dir=PATH with the CIFAR-10 python pickles "
                         "(data_batch_1..5, test_batch).")
      base = data_lib.load_cifar10(config.data_dir)
      if not image:
        base = base._replace(x_train=base.x_train.reshape(len(base.x_train), -1),
                             x_test=base.x_test.reshape(len(base.x_test), -1))
      full = {t: base for t in trials}
    problems = [[data_lib.select_classes(full[t], p) for t in trials] for p in pairs]
    names = [f"{a}v{b}" for a, b in pairs]
  elif kind == "tabular":
    problems, names = [], []
    for name in config.get("tabular", ()) or ():
      problems.append([data_lib.load(name, seed=t, test_fraction=0.3) for t in trials])
      names.append(name)
    for path in config.get("data_files", ()) or ():
      problems.append([data_lib.load_table(path, label_column=config.get("label_column", -1), seed=t,
                                           test_fraction=0.3) for t in trials])
      names.append(pathlib.Path(path).stem)
    if not problems:
      raise ValueError("dataset='tabular' needs config.tabular (e.g. ('breast_cancer',)) or "
                       "--config.data_files='(\"/path/a.arff\",)'.")
    if image:
      raise ValueError("tabular data has no image shape; use MLP models.")
    # Different tables have different widths: each table is its own program (see `run`).
  else:
    raise ValueError(f"config.dataset must be 'digits_pairs', 'tabular' or 'cifar10_pairs', got {kind!r}.")
  return problems, names


# ------------------------------------------------------------------------------------------------ program

def make_optimizer(opt: ml_collections.ConfigDict, total_steps: int, *, clip_norm: float | None):
  """SGD with momentum, decoupled-into-gradient weight decay and a cosine schedule (the paper's recipe);
  an optional global grad-norm clip first (the exponential loss)."""
  schedule = (optax.cosine_decay_schedule(opt.learning_rate, total_steps) if opt.get("cosine", True)
              else opt.learning_rate)
  if opt.get("name", "sgd") == "adam":
    base = optax.adam(schedule)
  else:
    base = optax.sgd(schedule, momentum=opt.get("momentum", 0.9))
  parts = [optax.add_decayed_weights(opt.weight_decay)] if opt.get("weight_decay", 0.0) else []
  if clip_norm:
    parts.insert(0, optax.clip_by_global_norm(clip_norm))
  return optax.chain(*parts, base)


def make_loss(name: str, ens_kwargs: dict[str, Any], steps_per_epoch: int = 1):
  """The training loss; `ens_kwargs` are `ensloss_loss`'s, with `lam_period_epochs` (0 = off) for the
  reference's lambda ~ U(-1, 1) re-drawn every P epochs."""
  if name == "ensloss":
    kwargs = dict(ens_kwargs)
    period = int(kwargs.pop("lam_period_epochs", 0) or 0)
    if period:
      kwargs["lam_period_steps"] = period * steps_per_epoch
    return ensloss_lib.ensloss_loss(**kwargs)
  if name not in losses_lib.BINARY_LOSSES:
    raise ValueError(f"unknown loss {name!r}; choose from {('ensloss',) + tuple(losses_lib.BINARY_LOSSES)}.")
  return losses_lib.BINARY_LOSSES[name]


def make_model(spec: ml_collections.ConfigDict, input_shape: tuple[int, ...]) -> models_lib.PureModel:
  kind = spec.kind
  if kind == "mlp":
    return models_lib.mlp(input_shape, 1, width=spec.width, depth=spec.depth, norm=spec.get("norm", "batch"),
                          norm_position=spec.get("norm_position", "pre_activation"))
  if kind == "cnn":
    return models_lib.cnn(input_shape, 1, channels=tuple(spec.channels))
  raise ValueError(f"model kind must be 'mlp' or 'cnn', got {kind!r}.")


def train_runs(model, loss_name: str, config, data: training.TrainData, seeds: np.ndarray):
  """Trains all runs (leading axis of `data` and `seeds`) with one compiled program; returns final test
  accuracy (R,), the eval curve (R, E) and the monitored training loss per eval (R, E)."""
  n_train = data.x_train.shape[1]
  steps_per_epoch = batching.num_batches(n_train, config.batch_size)
  total = int(config.epochs) * steps_per_epoch
  num_evals = max(1, int(config.num_evals))
  chunk = math.ceil(total / num_evals)
  clip = config.exp_clip_norm if loss_name == "exponential" else None
  program = training.make_train(
      model=model, loss=make_loss(loss_name, dict(config.ensloss), steps_per_epoch),
      monitor_loss=losses_lib.logistic,
      data=jax.tree.map(lambda a: a[0], data), batch_size=int(config.batch_size),
      optimizer=make_optimizer(config.optimizer, total, clip_norm=clip), num_classes=2,
      eval_batch_size=int(config.get("eval_batch_size", 512)))

  init = jax.jit(jax.vmap(lambda k: program.init(k, {})))
  map_batch = int(config.get("map_batch", 0) or 0)
  if map_batch:
    # `lax.map` over the run axis in vmapped blocks of `map_batch` runs (still one compiled program): on CPU a
    # vmapped convolution becomes a grouped convolution, which XLA:CPU runs far slower than a loop of plain ones.
    def run_chunk_fn(s, d, n):
      return jax.lax.map(lambda sd: program.run_chunk(sd[0], {}, sd[1], n), (s, d), batch_size=map_batch)

    def evaluate_fn(s, d):
      return jax.lax.map(lambda sd: program.evaluate(*sd), (s, d), batch_size=map_batch)
  else:
    run_chunk_fn = jax.vmap(lambda s, d, n: program.run_chunk(s, {}, d, n), in_axes=(0, 0, None))
    evaluate_fn = jax.vmap(program.evaluate)
  run_chunk = jax.jit(run_chunk_fn, static_argnums=2, donate_argnums=0)
  evaluate = jax.jit(evaluate_fn)
  # Runs are processed in groups of `runs_per_program` (all of them by default): one compile per group size.
  group = int(config.get("runs_per_program") or len(seeds))
  accs, curves, train_losses = [], [], []
  for start in range(0, len(seeds), group):
    sl = slice(start, start + group)
    d = jax.tree.map(lambda a: jnp.asarray(a[sl]), data)
    state = init(jax.vmap(jax.random.key)(jnp.asarray(seeds[sl])))
    done, curve, tl = 0, [], []
    while done < total:
      n = min(chunk, total - done)
      state, metrics = run_chunk(state, d, n)
      done += n
      curve.append(np.asarray(evaluate(state, d)["test_accuracy"]))
      tl.append(np.asarray(metrics["loss"][:, -steps_per_epoch:].mean(axis=1)))
    accs.append(curve[-1])
    curves.append(np.stack(curve, axis=1))
    train_losses.append(np.stack(tl, axis=1))
  return np.concatenate(accs), np.concatenate(curves), np.concatenate(train_losses), total


# ---------------------------------------------------------------------------------------------- statistics

def paired_test(ens: np.ndarray, base: np.ndarray, alpha: float = 0.05) -> tuple[str, float, float]:
  """One-sided one-sample t-tests on trial-wise differences d = ens - base: ('better'|'same'|'worse',
  p_greater, p_less). Zero-variance differences: any nonzero constant difference is decisive."""
  d = np.asarray(ens, np.float64) - np.asarray(base, np.float64)
  if np.allclose(d, d[0]):
    if d[0] > 0:
      return "better", 0.0, 1.0
    if d[0] < 0:
      return "worse", 1.0, 0.0
    return "same", 1.0, 1.0
  p_gt = float(stats.ttest_1samp(d, 0.0, alternative="greater").pvalue)
  p_lt = float(stats.ttest_1samp(d, 0.0, alternative="less").pvalue)
  return ("better" if p_gt < alpha else "worse" if p_lt < alpha else "same"), p_gt, p_lt


def compare(acc: dict[str, dict[str, np.ndarray]], alpha: float = 0.05) -> dict[str, Any]:
  """acc[model][loss] (P, T) -> per model: mean accuracies and EnsLoss-vs-baseline counts."""
  out = {}
  for model, by_loss in acc.items():
    entry = {"mean_accuracy": {l: float(np.mean(a)) for l, a in by_loss.items()}, "vs": {}}
    if "ensloss" in by_loss:
      for base, a in by_loss.items():
        if base == "ensloss":
          continue
        verdicts = [paired_test(by_loss["ensloss"][p], a[p], alpha)[0] for p in range(a.shape[0])]
        entry["vs"][base] = {k: verdicts.count(k) for k in ("better", "same", "worse")}
        entry["vs"][base]["per_problem"] = verdicts
    out[model] = entry
  return out


def format_tables(comparison: dict[str, Any], losses: list[str], title: str) -> str:
  baselines = [l for l in losses if l != "ensloss"]
  lines = [f"### {title}", "", "EnsLoss vs baseline: better / no difference / worse "
           "(one-sided paired t-test over trials, p < 0.05)", "",
           "| model | " + " | ".join(f"vs {b}" for b in baselines) + " |",
           "|---|" + "---|" * len(baselines)]
  for model, e in comparison.items():
    cells = [f"{e['vs'][b]['better']}/{e['vs'][b]['same']}/{e['vs'][b]['worse']}" if b in e["vs"] else "-"
             for b in baselines]
    lines.append(f"| {model} | " + " | ".join(cells) + " |")
  lines += ["", "Mean test accuracy at the last evaluation (over problems x trials)", "",
            "| model | " + " | ".join(losses) + " |", "|---|" + "---|" * len(losses)]
  for model, e in comparison.items():
    accs = e["mean_accuracy"]
    best = max(accs.values())
    cells = [(f"**{accs[l]:.4f}**" if accs[l] == best else f"{accs[l]:.4f}") if l in accs else "-" for l in losses]
    lines.append(f"| {model} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------- plots

def make_plots(workdir: pathlib.Path, acc, curves, losses: list[str], names: list[str], title: str) -> list[str]:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  out_dir = workdir / "plots"
  out_dir.mkdir(parents=True, exist_ok=True)
  models = list(acc)
  paths = []
  # 1. Mean accuracy per model and loss (with the std over problems of the trial means).
  fig, ax = plt.subplots(figsize=(1.6 + 1.6 * len(models), 3.4))
  w = 0.8 / len(losses)
  for j, l in enumerate(losses):
    means = [np.mean(acc[m][l]) for m in models]
    sds = [np.std(np.mean(acc[m][l], axis=1)) for m in models]
    ax.bar(np.arange(len(models)) + (j - (len(losses) - 1) / 2) * w, means, w, yerr=sds, label=l, capsize=2)
  lo = min(np.mean(acc[m][l]) - 2 * np.std(np.mean(acc[m][l], axis=1)) for m in models for l in losses)
  ax.set_ylim(max(0.0, lo), 1.0)
  ax.set_xticks(range(len(models)), models)
  ax.set_ylabel("test accuracy (last eval)")
  ax.set_title(title)
  ax.legend(fontsize=7, ncol=len(losses))
  fig.tight_layout()
  paths.append(str(out_dir / "mean_accuracy.png"))
  fig.savefig(paths[-1], dpi=110)
  plt.close(fig)
  # 2. Per-problem EnsLoss vs each baseline (trial means), one panel per model.
  if "ensloss" in losses and len(names) > 1:
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 3.2), squeeze=False)
    for ax, m in zip(axes[0], models):
      e = acc[m]["ensloss"].mean(axis=1)
      for l in losses:
        if l != "ensloss":
          ax.scatter(acc[m][l].mean(axis=1), e, s=10, label=l)
      lo = min(np.min(acc[m][l].mean(axis=1)) for l in losses)
      ax.plot([lo, 1], [lo, 1], "k--", lw=0.8)
      ax.set_title(m, fontsize=9)
      ax.set_xlabel("baseline accuracy")
      ax.set_ylabel("EnsLoss accuracy")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{title}: per problem (above the diagonal = EnsLoss better)", fontsize=9)
    fig.tight_layout()
    paths.append(str(out_dir / "per_problem.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
  # 3. Mean test-accuracy curves.
  fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 3.0), squeeze=False)
  for ax, m in zip(axes[0], models):
    for l in losses:
      c = curves[m][l]
      ax.plot(np.arange(1, c.shape[-1] + 1) / c.shape[-1], c.reshape(-1, c.shape[-1]).mean(axis=0), label=l)
    ax.set_title(m, fontsize=9)
    ax.set_xlabel("fraction of training")
    ax.set_ylabel("mean test accuracy")
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  paths.append(str(out_dir / "curves.png"))
  fig.savefig(paths[-1], dpi=110)
  plt.close(fig)
  return paths


# ------------------------------------------------------------------------------------------------------ run

def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs every (model, loss) program, writes results, tables and plots; returns the comparison.

  An interrupted run (no results.json yet) run again in the same workdir with the same config (memory and plot
  settings may change) resumes: the (model, loss) programs whose results/*.npz were saved are loaded, not
  retrained. A finished run is trained afresh.
  """
  workdir = pathlib.Path(workdir)
  (workdir / "results").mkdir(parents=True, exist_ok=True)
  config_text = config.to_json(indent=2)
  check_same_config(workdir / "config.json", config_text,
                    ignore=frozenset({"plots", "runs_per_program", "map_batch"}))
  finished = (workdir / "results.json").exists()
  # Decided once, before any process writes: every process must run the same programs.
  reusable = set() if finished else {p.name for p in (workdir / "results").glob("*.npz")}
  sync_processes("ensloss: workdir checked")  # every process has read the workdir before process 0 changes it
  if jax.process_index() == 0:
    if finished:  # start over (new code may give new numbers)
      for saved in [*(workdir / "results").glob("*.npz"), workdir / "results.json"]:
        saved.unlink()
    write_text_atomic(workdir / "config.json", config_text)
  losses = list(config.losses)
  unknown = set(losses) - set(("ensloss",) + tuple(losses_lib.BINARY_LOSSES))
  if unknown:
    raise ValueError(f"unknown losses {sorted(unknown)} in config.losses.")
  trials = int(config.trials)
  acc: dict[str, dict[str, np.ndarray]] = {}
  curves: dict[str, dict[str, np.ndarray]] = {}
  timing: dict[str, float] = {}
  names: list[str] = []
  info: dict[str, Any] = {}
  for mname, mspec in config.models.items():
    image = mspec.kind == "cnn"
    problems, names = load_problems(config, image=image)
    # Tables of different widths cannot share a program: group problems by their input shape.
    # Pairs are trimmed to a common size; tables are grouped by their exact shapes (never trimmed).
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, p in enumerate(problems):
      key = ((p[0].x_train.shape[1:],) if config.dataset.endswith("_pairs")
             else (p[0].x_train.shape, p[0].x_test.shape))
      groups.setdefault(key, []).append(i)
    acc[mname], curves[mname] = {}, {}
    for lname in losses:
      path = workdir / "results" / f"{mname}__{lname}.npz"
      if path.name in reusable:
        saved = np.load(path)
        acc[mname][lname], curves[mname][lname] = saved["acc"], saved["curves"]
        timing[f"{mname}/{lname}"] = float(saved["seconds"])
        info.update(json.loads(str(saved["trimmed"])))
        logging.info("%s / %s: loaded %s", mname, lname, path)
        continue
      a = np.zeros((len(problems), trials))
      c = None
      t0 = time.time()
      trimmed = {}
      for gkey, idx in groups.items():
        data, _, dropped = _stack([problems[i] for i in idx], [names[i] for i in idx])
        trimmed[f"{mname}/{'+'.join(names[i] for i in idx) if len(idx) < 4 else len(idx)}"] = dropped
        seeds = np.tile(np.arange(trials), len(idx))  # trial t: init and data-order seed t
        model = make_model(mspec, tuple(data.x_train.shape[2:]))
        fa, fc, _, steps = train_runs(model, lname, config, data, seeds)
        a[idx] = fa.reshape(len(idx), trials)
        if c is None:
          c = np.zeros((len(problems), trials, fc.shape[-1]))
        c[idx] = fc.reshape(len(idx), trials, -1)
      timing[f"{mname}/{lname}"] = time.time() - t0
      info.update(trimmed)
      acc[mname][lname], curves[mname][lname] = a, c
      if jax.process_index() == 0:  # renamed when complete: a cut-off write is never mistaken for a result
        np.savez(path.with_suffix(".tmp.npz"), acc=a, curves=c, seconds=timing[f"{mname}/{lname}"],
                 trimmed=json.dumps(trimmed))
        os.replace(path.with_suffix(".tmp.npz"), path)
      print(f"{mname:>8s} {lname:>12s}: mean test accuracy {a.mean():.4f} ({len(problems)} problems x {trials} "
            f"trials, {steps} steps, {timing[f'{mname}/{lname}']:.1f}s)", flush=True)
  comparison = compare(acc, alpha=float(config.get("alpha", 0.05)))
  title = config.get("name", "ensloss")
  table = format_tables(comparison, losses, title)
  print(table)
  if jax.process_index() == 0:
    (workdir / "tables.md").write_text(table)
    (workdir / "results.json").write_text(json.dumps(
        {"problems": names, "losses": losses, "trials": trials, "comparison": comparison,
         "accuracy": {m: {l: a.tolist() for l, a in d.items()} for m, d in acc.items()},
         "seconds": timing, "trimmed": {k: v for k, v in info.items()}}, indent=1))
    if config.get("plots", True):
      make_plots(workdir, acc, curves, losses, names, title)
  return comparison

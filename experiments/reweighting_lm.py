r"""Loss-based sample reweighting (Sow et al., ICLR 2025) for a small character-level causal LM.

Uniform (plain mean loss) vs the `linupper` / `quadratic` / `extremes` strategies at the reference
temperatures (r = 0.4 and r = 1.0), several seeds, ALL in one compiled program: each run's weighting method
and temperature are data (a `lax.switch` index and a scalar in the weighting rule's state, set from the run's
hyperparameters at init), so the whole methods x seeds sweep is one `jit(vmap(...))` with a `lax.scan` inner
loop (`experiments.runner.run_sweep`: metrics.jsonl, checkpoints, resume, NaN guard).

Per sequence b of a batch, the loss is its mean token cross-entropy l_b (`jaxfair.lm.sequence_cross_entropy`);
the update is sum_b stop_gradient(w_b) grad l_b with w = softmax(f(h(l)) / r)
(`jaxfair.reweighting.loss_based_weights`). Logged per step: the uniform mean loss ("loss", comparable across
methods), the weighted objective, and the weight diagnostics ESS / N ("ess_fraction"), N * w_max
("weight_max_n") and the entropy of w ("weight_entropy", log N = uniform). Evaluated every few chunks on the
validation windows: mean sequence loss, bits per character, the mean of the worst 10% of sequences
("test_loss_tail") and the median.

Outputs in the workdir: the runner's files, `results.json` (final validation metrics per method: mean, std
and per-seed values), and comparison plots `plots/reweighting_lm_*.png` (also copied to
`config.figures_dir` when set).

Launch: see experiments/configs/reweighting_lm.py.
"""
from __future__ import annotations

import json
import math
import pathlib
import shutil
from typing import Any, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import plot as plot_lib
from experiments import runner as runner_lib
from jaxfair import lm
from jaxfair import reweighting
from jaxfair.data import text
from jaxfair.training import TrainProgram, make_train
from jaxfair.training.components import WeightingRule, masked_uniform

Array = jax.Array

# Method index 0 is uniform; the others index `reweighting` strategies.
METHODS = ("uniform", "linupper", "quadratic", "extremes", "linear")
DIAGNOSTICS = ("ess_fraction", "n_w_max", "entropy")


class SwitchState(NamedTuple):
  """Per-run weighting rule state: which method, its temperature, a step counter and the last diagnostics."""
  method: Array        # int32 index into METHODS
  r: Array             # float32 temperature
  step: Array          # int32 batches weighted so far
  diagnostics: dict    # weight_diagnostics of the last batch


def switch_rule(delta: float = 1.0, uniform_warmup_steps: int = 0) -> WeightingRule:
  """A weighting rule whose method (uniform or a loss-based strategy) and r are per-run DATA in its state.

  `init()` gives method 0 (uniform) and r = 1; the experiment overwrites both from each run's hyperparameters,
  so runs with different methods share one compiled program (under vmap the switch evaluates every branch on
  the (B,) loss vector, which costs nothing next to the model). Weights are those of
  `reweighting.loss_based_weights`; the first `uniform_warmup_steps` batches get uniform weights (the GPT-2
  reference warm-up).
  """
  if uniform_warmup_steps < 0:
    raise ValueError(f"`uniform_warmup_steps` must be >= 0, got {uniform_warmup_steps}.")
  zeros = {k: jnp.zeros((), jnp.float32) for k in DIAGNOSTICS}

  def init():
    return SwitchState(jnp.zeros((), jnp.int32), jnp.ones((), jnp.float32), jnp.zeros((), jnp.int32), zeros)

  def apply(losses, mask, state):
    def uniform_branch(l):
      return masked_uniform(mask, l.dtype)

    def strategy_branch(strategy):
      return lambda l: reweighting.loss_based_weights(l, strategy, state.r, delta, mask)

    branches = [uniform_branch] + [strategy_branch(s) for s in METHODS[1:]]
    w = jax.lax.switch(state.method, branches, losses)
    if uniform_warmup_steps:
      w = jnp.where(state.step < uniform_warmup_steps, masked_uniform(mask, w.dtype), w)
    diag = reweighting.weight_diagnostics(w, mask)
    diag = {k: diag[k].astype(jnp.float32) for k in DIAGNOSTICS}
    return w, SwitchState(state.method, state.r, state.step + 1, diag)

  return WeightingRule(init, apply)


def load_data(config: ml_collections.ConfigDict) -> text.TextDataset:
  """The corpus of the config, with the validation windows thinned to `config.val_windows` (evenly spaced)."""
  d = config.data
  data = text.load_stdlib_text(int(config.seq_len), stride=d.get("stride") or None,
                               val_fraction=float(d.val_fraction), seed=int(d.seed), sources=d.sources,
                               content=d.content, max_chars=d.get("max_chars") or None)
  n_val = int(config.get("val_windows") or 0)
  if n_val and n_val < data.x_test.shape[0]:
    idx = np.linspace(0, data.x_test.shape[0] - 1, n_val).round().astype(int)
    data = data._replace(x_test=data.x_test[idx], y_test=data.y_test[idx])
  return data


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Clip by global norm, then AdamW on a linear-warmup cosine schedule (decays to `final_lr_fraction`)."""
  o = config.optimizer
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, float(o.learning_rate), int(o.warmup_steps), max(int(config.num_steps), int(o.warmup_steps) + 1),
      end_value=float(o.learning_rate) * float(o.final_lr_fraction))
  return optax.chain(optax.clip_by_global_norm(float(o.clip_norm)),
                     optax.adamw(schedule, b1=float(o.b1), b2=float(o.b2), weight_decay=float(o.weight_decay)))


def make_runs(config: ml_collections.ConfigDict) -> list[runner_lib.Run]:
  """Uniform once, then every (strategy, r) of the config; seeds innermost (paired initialisations)."""
  combos = [("uniform", 1.0)] + [(s, float(r)) for s in config.strategies for r in config.temperatures]
  for name, _ in combos:
    if name not in METHODS:
      raise ValueError(f"unknown strategy {name!r} in config.strategies; choose from {METHODS[1:]}.")
  runs = []
  for h, (name, r) in enumerate(combos):
    for i, seed in enumerate(config.seeds):
      runs.append(runner_lib.Run(len(runs), i, int(seed), h,
                                 {"method": METHODS.index(name), "r": r}))
  return runs


def method_label(hparams: dict[str, Any]) -> str:
  name = METHODS[int(hparams["method"])]
  return name if name == "uniform" else f"{name} r={float(hparams['r']):g}"


def make_program(config: ml_collections.ConfigDict, data: text.TextDataset) -> TrainProgram:
  """The sweep's TrainProgram: make_train's pieces + the per-run method/r + weight diagnostics per step."""
  m = config.model
  model = lm.causal_lm(data.vocab_size, int(config.seq_len), d_model=int(m.d_model), num_heads=int(m.num_heads),
                       num_layers=int(m.num_layers), mlp_ratio=int(m.mlp_ratio))
  base = make_train(model=model, loss=lm.sequence_cross_entropy, data=data, batch_size=int(config.batch_size),
                    optimizer=make_optimizer(config),
                    weighting=switch_rule(float(config.delta), int(config.uniform_warmup_steps)),
                    evaluate=lm.make_lm_evaluate(model, batch_size=int(config.eval_batch_size)))

  def init(key, hparams):
    state = base.init(key, hparams)
    rule = state.rule_state._replace(method=jnp.asarray(hparams["method"], jnp.int32),
                                     r=jnp.asarray(hparams["r"], jnp.float32))
    return state._replace(rule_state=rule)

  def run_chunk(state, hparams, data, num_steps):
    def body(state, _):
      state, metrics = base.run_chunk(state, hparams, data, 1)
      metrics = {k: v[0] for k, v in metrics.items()}
      metrics["weight_entropy"] = state.rule_state.diagnostics["entropy"]
      return state, metrics

    return jax.lax.scan(body, state, length=num_steps)

  return TrainProgram(init, run_chunk, base.evaluate, base.data)


def _curves(records, metric, kind, labels):
  raw = plot_lib.collect(records, metric, kind)
  out = {}
  for key, (steps, values) in raw.items():
    out[labels.get(key, key)] = (steps, values)
  return dict(sorted(out.items(), key=lambda kv: (kv[0] != "uniform", kv[0])))


def write_plots(workdir: pathlib.Path, runs: list[runner_lib.Run], figures_dir: str | None) -> list[pathlib.Path]:
  """Validation-loss curves, train loss, tail loss and weight diagnostics per method (mean +- std over seeds)."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  records = plot_lib.read_metrics(workdir)
  labels = {plot_lib.hparam_label(r.hparams): method_label(r.hparams) for r in runs}
  out = workdir / "plots"
  out.mkdir(exist_ok=True)
  paths = []

  def save(fig, name):
    fig.tight_layout()
    path = out / f"reweighting_lm_{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)

  fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
  plot_lib.plot_curves(_curves(records, "test_loss", "eval", labels), title="validation loss (nats/char)",
                       ylabel="mean sequence loss", ax=axes[0])
  plot_lib.plot_curves(_curves(records, "test_loss_tail", "eval", labels),
                       title="validation loss of the worst 10% sequences", ylabel="tail loss", ax=axes[1])
  save(fig, "val_loss")

  fig, ax = plt.subplots(figsize=(6, 4.2))
  plot_lib.plot_curves(_curves(records, "loss", "train", labels), title="training loss (uniform mean of batch)",
                       ylabel="loss", ax=ax, smooth=5)
  save(fig, "train_loss")

  fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
  for ax, (metric, title) in zip(axes, (("ess_fraction", "effective sample size / N"),
                                        ("weight_max_n", "N * max weight"),
                                        ("weight_entropy", "weight entropy (nats; log N = uniform)"))):
    plot_lib.plot_curves(_curves(records, metric, "train", labels), title=title, ylabel=metric, ax=ax, smooth=5)
  save(fig, "diagnostics")

  if figures_dir:
    dest = pathlib.Path(figures_dir)
    dest.mkdir(parents=True, exist_ok=True)
    for p in paths:
      shutil.copy(p, dest / p.name)
  return paths


def summarize(runs: list[runner_lib.Run], final_eval: dict[str, np.ndarray], records) -> dict[str, Any]:
  """Final validation metrics per method (mean, std, per seed) and mean train diagnostics over training."""
  methods = {}
  for h in sorted({r.hparam_index for r in runs}):
    members = [r for r in runs if r.hparam_index == h]
    label = method_label(members[0].hparams)
    entry = {"method": METHODS[int(members[0].hparams["method"])], "r": members[0].hparams["r"],
             "seeds": [r.seed for r in members], "final": {}, "train_diagnostics_mean": {}}
    for k, v in final_eval.items():
      x = np.asarray(v)[[r.run for r in members]].astype(float)
      entry["final"][k] = {"mean": float(x.mean()), "std": float(x.std()), "per_seed": x.tolist()}
    for k in ("ess_fraction", "weight_max_n", "weight_entropy"):
      vals = [float(rec["metrics"][k]) for rec in records if rec["kind"] == "train"
              and rec["hparam_index"] == h and k in rec["metrics"]]
      if vals:
        entry["train_diagnostics_mean"][k] = float(np.mean(vals))
    methods[label] = entry
  return methods


def format_table(methods: dict[str, Any], batch_size: int) -> str:
  lines = ["| method | val loss (nats/char) | val bits/char | worst-10% val loss | median val loss | "
           f"mean ESS/N | mean N*w_max | mean entropy (log {batch_size} = {math.log(batch_size):.3f}) |",
           "|---|---|---|---|---|---|---|---|"]
  for label, e in methods.items():
    f, d = e["final"], e["train_diagnostics_mean"]

    def ms(k):
      return f"{f[k]['mean']:.4f} ± {f[k]['std']:.4f}" if k in f else "-"

    lines.append(f"| {label} | {ms('test_loss')} | {ms('test_bits_per_char')} | {ms('test_loss_tail')} | "
                 f"{ms('test_loss_median')} | {d.get('ess_fraction', float('nan')):.3f} | "
                 f"{d.get('weight_max_n', float('nan')):.2f} | {d.get('weight_entropy', float('nan')):.3f} |")
  return "\n".join(lines)


def format_paired_table(methods: dict[str, Any]) -> str:
  """Per method: final validation metric minus uniform's, paired by seed (same init and data order)."""
  base = methods.get("uniform")
  if base is None:
    return ""
  lines = ["| method | val loss - uniform (paired by seed) | worst-10% val loss - uniform |", "|---|---|---|"]
  for label, e in methods.items():
    if label == "uniform":
      continue
    cells = []
    for k in ("test_loss", "test_loss_tail"):
      diff = np.asarray(e["final"][k]["per_seed"]) - np.asarray(base["final"][k]["per_seed"])
      cells.append(f"{diff.mean():+.4f} ± {diff.std():.4f} ({int((diff < 0).sum())}/{diff.size} seeds lower)")
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def run(config: ml_collections.ConfigDict, workdir: str) -> runner_lib.SweepResult:
  data = load_data(config)
  logging.info("corpus %s (fingerprint %s): %d train / %d validation windows of %d chars, vocab %d",
               data.name, data.fingerprint, data.x_train.shape[0], data.x_test.shape[0], data.seq_len,
               data.vocab_size)
  program = make_program(config, data)
  runs = make_runs(config)
  n_params = lm.num_params(jax.eval_shape(program.init, jax.random.key(0), {"method": 0, "r": 1.0}).params)
  print(f"{config.name}: corpus {data.name} [{data.fingerprint}] {data.num_chars[0]:,} train / "
        f"{data.num_chars[1]:,} validation chars; {data.x_train.shape[0]} train windows, {data.x_test.shape[0]} "
        f"validation windows (T={data.seq_len}); model {n_params:,} params; {len(runs)} runs in one program",
        flush=True)
  options = runner_lib.RunnerOptions(num_steps=int(config.num_steps), **dict(config.runner))
  cfg = config.to_dict()
  result = runner_lib.run_sweep(program, runs, workdir, options, config=cfg, name=config.name)
  if not result.completed:
    print(f"stopped after {result.steps_done} steps; run the same command again to resume.")
    return result
  wd = pathlib.Path(workdir)
  records = plot_lib.read_metrics(wd)
  methods = summarize(runs, result.final_eval, records)
  if jax.process_index() == 0:
    payload = {"corpus": {"name": data.name, "fingerprint": data.fingerprint, "num_chars": list(data.num_chars),
                          "num_documents": list(data.num_documents), "train_windows": int(data.x_train.shape[0]),
                          "val_windows": int(data.x_test.shape[0]), "seq_len": data.seq_len},
               "num_params": n_params, "steps": result.steps_done, "methods": methods}
    (wd / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    paths = write_plots(wd, runs, config.get("figures_dir") or None)
    for p in paths:
      print(p)
  print(format_table(methods, int(config.batch_size)))
  print(format_paired_table(methods))
  return result


if __name__ == "__main__":
  # Reprints the tables of a finished workdir: python -m experiments.reweighting_lm workdirs/reweighting_lm
  import sys  # pylint: disable=g-import-not-at-top
  saved = json.loads((pathlib.Path(sys.argv[1]) / "results.json").read_text())
  print(format_table(saved["methods"], json.loads((pathlib.Path(sys.argv[1]) / "config.json").read_text())
                     ["batch_size"]))
  print(format_paired_table(saved["methods"]))

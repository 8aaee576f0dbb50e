"""The generic supervised experiment: dataset, model, per-example loss, weighting, perturbation, optimizer.

Everything is named by import path in the config (see `experiments/build.py`), so a method engineer writes a
config, not code::

  config.experiment = "train"
  config.data       = dict(fn="jaxfair.data.load_digits", kwargs=dict(seed=0))
  config.model      = dict(fn="jaxfair.models.mlp", kwargs=dict(width=128))  # gets input_shape, num_outputs
  config.loss       = "jaxfair.losses.softmax_cross_entropy"                 # (outputs, labels) -> (B,)
  config.weighting  = dict(fn="jaxfair.training.uniform")                    # a WeightingRule (None = uniform)
  config.perturb    = None                                                   # a Perturbation (None = identity)
  config.optimizer  = dict(fn="optax.adam", kwargs=dict(b1=0.9))             # wrapped in inject_hyperparams
  config.grid       = dict(learning_rate=(1e-3, 3e-3))                       # vmapped hyperparameters
  config.seeds      = (0, 1, 2)
  config.evaluate   = None            # or dict(fn="my.evaluator_factory") -> (state, data) -> metrics
  config.train_kwargs = dict(eval_train=False)                               # extra make_train arguments

Hyperparameters in `config.grid` are optimizer arguments (``learning_rate``, ``b1``, ``weight_decay``, ...):
each run gets its own values through `optax.inject_hyperparams`, so the whole seeds x grid sweep is ONE
compiled program. Non-optimizer settings (a weighting temperature, an attack radius) are static: sweep them
with one config or workdir per value and compare with `python -m experiments.plot --workdir=A --workdir=B`.

Injected arguments (passed when the component's signature accepts them): model gets ``input_shape`` and
``num_outputs``; weighting, perturb, loss and evaluate factories get ``model``, ``num_classes``,
``input_shape`` and ``data``.
"""
from __future__ import annotations

import inspect
from typing import Any

from absl import logging
import ml_collections
import optax

from experiments import build as build_lib
from experiments import runner as runner_lib
from jaxfair.training import sharding as sharding_lib


def optimizer_factory(spec: Any, grid_names: list[str]):
  """`hparams -> optax.GradientTransformation` from an optimizer spec; grid names become injected hparams.

  `spec` is a spec whose "fn" returns an optax transformation (``optax.adam``, ``jaxfair.optim.adamp``...).
  Names in `grid_names` must be arguments of that function.
  """
  spec = build_lib._to_python(spec)  # pylint: disable=protected-access
  if isinstance(spec, str):
    spec = {"fn": spec}
  if not build_lib.is_spec(spec):
    raise ValueError(f"`config.optimizer` must be dict(fn='optax.adam', kwargs=dict(...)) or an import path, "
                     f"got {spec!r}.")
  fn = build_lib.resolve(spec["fn"])
  kwargs = {k: (build_lib.build(v) if build_lib.is_spec(v) else v) for k, v in (spec.get("kwargs") or {}).items()}
  try:
    params = inspect.signature(fn).parameters
  except (TypeError, ValueError):
    params = {}
  for name in grid_names:
    if params and name not in params and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
      raise ValueError(f"hyperparameter `{name}` in config.grid is not an argument of the optimizer "
                       f"{spec['fn']} (its arguments: {sorted(params)}). The grid holds optimizer "
                       "hyperparameters; set other settings in the config itself.")
    if name in kwargs:
      raise ValueError(f"`{name}` is both in config.grid and config.optimizer.kwargs; keep it in one place.")

  def make(hparams):
    # Only the grid's hyperparameters are injected (traced); fixed kwargs stay static, so integer and boolean
    # settings such as `channel_axis` or `nesterov` keep their Python values.
    return optax.inject_hyperparams(fn, static_args=tuple(kwargs))(**kwargs, **{n: hparams[n] for n in grid_names})

  return make


def runner_options(config: ml_collections.ConfigDict) -> runner_lib.RunnerOptions:
  opts = dict(config.get("runner", {}) or {})
  opts["num_steps"] = int(config.num_steps)
  known = {f for f in runner_lib.RunnerOptions.__dataclass_fields__}
  unknown = set(opts) - known
  if unknown:
    raise ValueError(f"unknown config.runner options {sorted(unknown)}; known: {sorted(known)}.")
  return runner_lib.RunnerOptions(**opts)


def make_program(config: ml_collections.ConfigDict):
  """Builds the `TrainProgram` of a config (no training)."""
  from jaxfair import training  # pylint: disable=g-import-not-at-top
  data = build_lib.build(config.data)
  if data is None:
    raise ValueError("`config.data` must name a dataset, e.g. dict(fn='jaxfair.data.load_digits').")
  num_classes = getattr(data, "num_classes", None)
  input_shape = tuple(data.x_train.shape[1:])
  model = build_lib.build(config.model, input_shape=input_shape, num_outputs=num_classes)
  if model is None:
    raise ValueError("`config.model` must name a model, e.g. dict(fn='jaxfair.models.mlp').")
  # Split the batch axis over the "batch" mesh axis when there is one (a no-op otherwise).
  model = sharding_lib.shard_model_inputs(model)
  ctx = dict(model=model, num_classes=num_classes, input_shape=input_shape, data=data)
  loss = build_lib.build(config.loss, **ctx)
  if loss is None:
    raise ValueError("`config.loss` must name a per-example loss, e.g. 'jaxfair.losses.softmax_cross_entropy'.")
  weighting = build_lib.build(config.get("weighting"), **ctx)
  perturb = build_lib.build(config.get("perturb"), **ctx)
  evaluate = build_lib.build(config.get("evaluate"), **ctx)
  extra = {}
  for k, v in dict(config.get("train_kwargs", {}) or {}).items():
    if build_lib.is_spec(build_lib._to_python(v)):  # pylint: disable=protected-access
      v = build_lib.build(v, **ctx)
    elif k == "monitor_loss" and isinstance(v, str):  # a function named by its import path
      v = build_lib.resolve(v)
    extra[k] = v
  grid_names = sorted(dict(config.get("grid", {}) or {}))
  optimizer = optimizer_factory(config.optimizer, grid_names)
  if evaluate is not None:
    extra["evaluate"] = evaluate
  # Evaluation batches are split over the batch mesh axis too: round their size up to a multiple of it.
  shards = int(dict(config.get("runner", {}) or {}).get("batch_shards", 1) or 1)
  eval_batch_size = int(extra.get("eval_batch_size", 512))
  extra["eval_batch_size"] = -(-eval_batch_size // shards) * shards
  return training.make_train(model=model, loss=loss, optimizer=optimizer, data=data,
                             batch_size=int(config.batch_size), weighting=weighting, perturb=perturb, **extra)


def run(config: ml_collections.ConfigDict, workdir: str) -> runner_lib.SweepResult:
  """Trains the config's sweep in `workdir` (resuming if it holds a checkpoint) and prints the summary."""
  program = make_program(config)
  runs = runner_lib.make_runs(tuple(config.seeds), dict(config.get("grid", {}) or {}))
  options = runner_options(config)
  logging.info("%s: %d runs (%d seeds x %d hparam combinations), %d steps", config.get("name", "train"),
               len(runs), len(config.seeds), len(runs) // len(config.seeds), options.num_steps)
  result = runner_lib.run_sweep(program, runs, workdir, options, config=config.to_dict(),
                                name=config.get("name", "train"))
  if result.completed:
    print(f"{config.get('name', 'train')}: final metrics after {result.steps_done} steps (mean ± std over "
          "seeds):")
    print(runner_lib.format_summary(result.summary))
    report = config.get("report_metric", "test_accuracy")
    for g in result.summary.get("by_hparams", []):
      if report in g["metrics"]:
        hp = runner_lib.format_summary({"by_hparams": [g]}).split("]")[0].strip(" [")
        print(f"final {report} [{hp}]: {g['metrics'][report]['mean']:.4f}")
  else:
    print(f"stopped after {result.steps_done} steps; run the same command again to resume.")
  return result

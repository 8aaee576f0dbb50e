"""Runs a `TrainProgram` over seeds x a hyperparameter grid as ONE compiled program, with logs and checkpoints.

The R = (#hparam combinations) x (#seeds) runs are flattened into one leading "run" axis (seeds innermost:
``run = hparam_index * num_seeds + seed_index``), and

    init_all     = jit(vmap(program.init))                  keys (R,), hparams {name: (R,)}
    chunk_all    = jit(vmap(program.run_chunk), donate state)   lax.scan over `chunk_steps` steps inside
    evaluate_all = jit(vmap(program.evaluate))

are each compiled once. The host loop only runs chunks, writes their metrics and checkpoints: there is no host
round trip per step. Run r starts from ``jax.random.key(seeds[seed_index])``, so every hparam combination sees
the same initialisations (paired comparisons).

Workdir layout (written by process 0)::

  config.json       the experiment config (a resumed run must have the same one)
  metrics.jsonl     one JSON object per logged step per run:
                    {"kind": "train"|"eval", "step", "run", "seed_index", "seed", "hparam_index", "hparams",
                     "metrics": {name: float or list}}
  summary.json      final eval metrics per run and mean/std over seeds per hparam combination
  checkpoints/      orbax checkpoints of the whole batched state (every `checkpoint_every` chunks + the end)
  plots/            learning curves and final-metric plots (`python -m experiments.plot --workdir=...`)
  tensorboard/      if `tensorboard=True` and tensorboardX is installed

Resume: starting the same command again restores the latest checkpoint, truncates metrics.jsonl to what had
been written when that checkpoint was taken (its byte length is stored in the checkpoint), and continues; the
result is bit-identical on CPU to an uninterrupted run, with no lost or duplicated log lines.

NaN guard: after each chunk, every float metric is checked; a non-finite value stops the run with
`NonFiniteError` naming the step, the run (seed, hparams) and that run's last finite metrics. Nothing past
the last checkpoint is saved, and the log keeps the lines before the bad step.

Sharding: `run_shards` splits the run axis, `batch_shards` the batch axis (the program calls
`jaxfair.training.sharding.constrain_batch` on its batch), over a `jax.make_mesh` mesh set with
`jax.set_mesh`. Multi-host: call `jax.distributed.initialize()` first; every process runs this same loop.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import pathlib
import time
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from jaxfair.training import checkpoint as checkpoint_lib
from jaxfair.training import progress as progress_lib
from jaxfair.training import sharding as sharding_lib

PyTree = Any


class NonFiniteError(FloatingPointError):
  """A metric became NaN or Inf; the message names the step, the run and its last finite metrics."""


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a sweep: a seed and a point of the hyperparameter grid."""
  run: int
  seed_index: int
  seed: int
  hparam_index: int
  hparams: dict[str, float]

  def describe(self) -> str:
    return (f"run {self.run} (seed index {self.seed_index}, seed {self.seed}, hparams "
            f"{_jsonable(self.hparams)})")


def make_runs(seeds: Sequence[int], grid: Mapping[str, Sequence[float]]) -> list[Run]:
  """Flattens seeds x the cartesian product of `grid` (dict name -> list of values), seeds innermost."""
  seeds = [int(s) for s in seeds]
  if any(s < 0 or s >= 2**32 for s in seeds):
    raise ValueError(f"`seeds` must be integers in [0, 2**32), got {seeds}.")
  if not seeds:
    raise ValueError("`seeds` must list at least one seed, e.g. seeds=(0, 1, 2).")
  if len(set(seeds)) != len(seeds):
    raise ValueError(f"`seeds` must be distinct, got {seeds}.")
  names = sorted(grid)
  values = []
  for name in names:
    v = grid[name]
    v = list(v) if isinstance(v, (list, tuple, np.ndarray)) else [v]
    if not v:
      raise ValueError(f"hyperparameter grid entry `{name}` is empty; give at least one value.")
    for x in v:
      if not np.isscalar(x) or isinstance(x, (str, bytes)):
        raise ValueError(f"hyperparameter grid entry `{name}` must hold numbers, got {x!r}; put non-numeric "
                         "settings in the config instead of the grid.")
    values.append(v)
  runs = []
  for h, combo in enumerate(itertools.product(*values)):
    hp = {n: _py(x) for n, x in zip(names, combo)}
    for i, s in enumerate(seeds):
      runs.append(Run(len(runs), i, s, h, hp))
  return runs


def _py(x: Any) -> Any:
  return x.item() if hasattr(x, "item") else x


def _jsonable(x: Any) -> Any:
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.ndarray):
    return _jsonable(x.tolist())
  if isinstance(x, (np.generic,)):
    return x.item()
  if isinstance(x, float) and not np.isfinite(x):
    return repr(x)  # "nan"/"inf": JSON has no NaN
  if x is None or isinstance(x, (bool, int, float, str)):
    return x
  return str(x)


@dataclasses.dataclass
class RunnerOptions:
  """How the host loop runs.

  Attributes:
    num_steps: training steps per run.
    chunk_steps: steps per compiled chunk (one `lax.scan`); the last chunk may be shorter.
    log_every: log a train line every this many steps (the last step of the run is always logged).
    checkpoint_every: checkpoint every this many chunks (and always at the end); 0 = only at the end.
    eval_every: evaluate every this many chunks (and always at the end); 0 = only at the end.
    max_to_keep: checkpoints kept.
    run_shards: devices along the run axis (1 = no run sharding; None = all devices / batch_shards).
    batch_shards: devices along the batch axis.
    progress: "auto", "bar", "log" or "none".
    log_every_s: seconds between progress lines when not on a terminal.
    tensorboard: also write TensorBoard events with tensorboardX (skipped with a warning if not installed).
    plots: write plots at the end.
    stop_after_chunks: stop (as if killed) after this many chunks in this process; for tests of resume.
  """
  num_steps: int
  chunk_steps: int = 100
  log_every: int = 1
  checkpoint_every: int = 1
  eval_every: int = 0
  max_to_keep: int = 2
  run_shards: int | None = 1
  batch_shards: int = 1
  progress: str = "auto"
  log_every_s: float = 30.0
  tensorboard: bool = False
  plots: bool = True
  stop_after_chunks: int | None = None

  def validate(self) -> None:
    for name in ("num_steps", "chunk_steps", "log_every", "max_to_keep", "batch_shards"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"runner option `{name}` must be >= 1, got {getattr(self, name)}.")
    for name in ("checkpoint_every", "eval_every"):
      if int(getattr(self, name)) < 0:
        raise ValueError(f"runner option `{name}` must be >= 0 (0 = only at the end), got "
                         f"{getattr(self, name)}.")


@dataclasses.dataclass
class SweepResult:
  """What `run_sweep` returns. `final_eval` maps metric name -> (R, ...) array; `state` is the batched state."""
  runs: list[Run]
  state: PyTree
  final_eval: dict[str, np.ndarray]
  steps_done: int
  completed: bool
  summary: dict[str, Any]


def _is_primary() -> bool:
  return jax.process_index() == 0


def _chunk_plan(num_steps: int, chunk_steps: int) -> list[int]:
  full, rest = divmod(num_steps, chunk_steps)
  return [chunk_steps] * full + ([rest] if rest else [])


class _Log:
  """metrics.jsonl appender (process 0 only) that knows its byte length for checkpoints."""

  def __init__(self, path: pathlib.Path, truncate_to: int | None):
    self.path = path
    self.primary = _is_primary()
    if not self.primary:
      self._f = None
      return
    if truncate_to is None:
      self._f = open(path, "w", encoding="utf-8")
    else:
      size = path.stat().st_size if path.exists() else 0
      if size < truncate_to:
        raise RuntimeError(f"{path} has {size} bytes but the checkpoint was taken at {truncate_to}: the log was "
                           "modified or lost after the checkpoint. Start a fresh --workdir.")
      self._f = open(path, "r+", encoding="utf-8")
      self._f.truncate(truncate_to)
      self._f.seek(truncate_to)

  def write(self, records: list[dict[str, Any]]) -> None:
    if self._f is None or not records:
      return
    self._f.write("".join(json.dumps(r, allow_nan=False) + "\n" for r in records))
    self._f.flush()

  def tell(self) -> int:
    if self._f is None:
      return 0
    self._f.flush()
    os.fsync(self._f.fileno())
    return self._f.tell()

  def close(self) -> None:
    if self._f is not None:
      self._f.close()
      self._f = None


class _TensorBoard:

  def __init__(self, logdir: pathlib.Path, purge_step: int | None):
    self._writer = None
    if not _is_primary():
      return
    try:
      import tensorboardX  # pylint: disable=g-import-not-at-top
    except ImportError:
      logging.warning("tensorboard=True but tensorboardX is not installed (pip install tensorboardX); "
                      "skipping TensorBoard output.")
      return
    self._writer = tensorboardX.SummaryWriter(str(logdir), purge_step=purge_step)

  def write(self, records: list[dict[str, Any]]) -> None:
    if self._writer is None:
      return
    for r in records:
      for name, v in r["metrics"].items():
        if isinstance(v, (int, float)) and name != "step":
          self._writer.add_scalar(f"{r['kind']}/{name}/run{r['run']:03d}", v, r["step"])
    self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


def _runs_signature(runs: list[Run]) -> list:
  """What identifies a sweep's runs in its checkpoints: (seed, hparams) per run, JSON-able."""
  return [[r.seed, _jsonable(r.hparams)] for r in runs]


def _float_metric(x: np.ndarray) -> bool:
  return jnp.issubdtype(x.dtype, jnp.inexact)  # includes bfloat16 (NumPy's issubdtype does not)


def _value(x: np.ndarray) -> Any:
  return x.item() if x.ndim == 0 else x.tolist()


def _nonfinite_to_json(v: Any) -> Any:
  if isinstance(v, float) and not np.isfinite(v):
    return repr(v)
  if isinstance(v, list):
    return [_nonfinite_to_json(u) for u in v]
  return v


def _train_records(runs: list[Run], metrics: dict[str, np.ndarray], steps_before: int, log_every: int,
                   num_steps: int, upto: int | None = None) -> list[dict[str, Any]]:
  """Records for the chunk's steps t (optionally only t < upto), step-major then run order."""
  n = next(iter(metrics.values())).shape[1] if metrics else 0
  out = []
  for t in range(n if upto is None else upto):
    done = steps_before + t + 1
    if done % log_every and done != num_steps:
      continue
    for run in runs:
      m = {k: _value(v[run.run, t]) for k, v in metrics.items() if k != "step"}
      step = int(metrics["step"][run.run, t]) if "step" in metrics else done
      out.append(_record("train", step, run, m))
  return out


def _record(kind: str, step: int, run: Run, metrics: dict[str, Any]) -> dict[str, Any]:
  return {"kind": kind, "step": int(step), "run": run.run, "seed_index": run.seed_index, "seed": run.seed,
          "hparam_index": run.hparam_index, "hparams": _jsonable(run.hparams),
          "metrics": {k: _nonfinite_to_json(v) for k, v in metrics.items()}}


def _first_nonfinite(metrics: dict[str, np.ndarray], per_step: bool) -> tuple[int, int, str] | None:
  """First (t, run, metric) with a non-finite float value, steps in order; t = -1 for eval metrics (R, ...).

  Train metrics are (R, T, ...) arrays, eval metrics (R, ...). None if everything is finite.
  """
  lead = 2 if per_step else 1
  # Eval vectors (per-class accuracy) may hold NaN legitimately (a class absent from the test split), so only
  # scalar eval metrics are guarded; every float train metric is.
  floats = {k: v for k, v in metrics.items() if _float_metric(v) and (per_step or v.ndim == 1)}
  if not floats:
    return None
  bad = {k: ~np.isfinite(v.reshape(v.shape[:lead] + (-1,))).all(axis=-1) for k, v in floats.items()}
  bad_any = np.logical_or.reduce(list(bad.values()))
  if not bad_any.any():
    return None
  if not per_step:
    r = int(np.argmax(bad_any))
    return -1, r, next(k for k, b in bad.items() if b[r])
  t = int(np.argmax(bad_any.any(axis=0)))
  r = int(np.argmax(bad_any[:, t]))
  return t, r, next(k for k, b in bad.items() if b[r, t])


def _step_of(metrics: dict[str, np.ndarray], r: int, t: int, default: int) -> int:
  return int(metrics["step"][r, t]) if "step" in metrics else default


def _nonfinite_message(kind: str, step: int, run: Run, name: str,
                       last: tuple[int, dict[str, Any]] | None) -> str:
  msg = f"non-finite {kind} metric `{name}` at step {step} in {run.describe()}. "
  if last is None:
    msg += "No finite metrics were recorded for this run before it. "
  else:
    msg += f"Last finite metrics of that run (step {last[0]}): {json.dumps(_jsonable(last[1]))}. "
  msg += ("The log keeps the lines before this step and the last checkpoint is untouched. Typical fixes: a "
          "smaller learning rate, gradient clipping, or a bounded loss/weighting temperature.")
  return msg


_COMPILED: dict[tuple[Any, ...], tuple[Any, Callable, Callable, dict[int, Callable]]] = {}


class Sweep:
  """The compiled functions of a sweep over `runs` for one `program`, and their placement on devices."""

  def __init__(self, program: Any, runs: list[Run], *, run_shards: int | None = 1, batch_shards: int = 1,
               devices: Any = None):
    self.program = program
    self.runs = runs
    self.num_runs = len(runs)
    n_dev = len(jax.devices() if devices is None else devices)
    effective_run_shards = run_shards if run_shards is not None else n_dev // max(batch_shards, 1)
    use_mesh = effective_run_shards > 1 or batch_shards > 1 or jax.process_count() > 1
    self.mesh = (sharding_lib.make_sweep_mesh(run_shards, batch_shards, devices) if use_mesh else None)
    if self.mesh is not None:
      num = sharding_lib.axis_size(self.mesh, sharding_lib.RUNS)
      if self.num_runs % num:
        raise ValueError(f"{self.num_runs} runs (seeds x hparam combinations) cannot be split over "
                         f"{num} devices of the run axis; use a multiple of {num} runs or change `run_shards`.")
    spmd = sharding_lib.RUNS if self.mesh is not None else None
    out_sh = sharding_lib.runs_sharding(self.mesh) if self.mesh is not None else None
    names = sorted(runs[0].hparams)
    self.hparam_names = names
    seeds = np.asarray([r.seed for r in runs], dtype=np.uint32)
    hparams = {n: np.asarray([r.hparams[n] for r in runs]) for n in names}
    hparams = {n: (v.astype(jnp.zeros((), float).dtype) if np.issubdtype(v.dtype, np.floating) else
                   v.astype(jnp.zeros((), int).dtype)) for n, v in hparams.items()}
    with self._mesh_ctx():
      self.seeds = sharding_lib.put_runs(seeds, self.mesh)
      self.hparams = sharding_lib.put_runs(hparams, self.mesh)

    # The dataset is an explicit, non-vmapped argument (`program.data`), replicated on the mesh.
    with self._mesh_ctx():
      self.data = sharding_lib.put_replicated(program.data, self.mesh)

    def init_one(seed, hp):
      return program.init(jax.random.key(seed), hp)

    def evaluate_one(s, data):
      return program.evaluate(s, data)

    # The jitted functions are cached per (program, placement), so running the same program object again in
    # this process (a resumed run in a notebook or a test) reuses the compiled executables.
    cache_key = (id(program), spmd, out_sh)
    cached = _COMPILED.get(cache_key)
    if cached is None or cached[0] is not program:
      cached = (program, jax.jit(jax.vmap(init_one, spmd_axis_name=spmd), out_shardings=out_sh),
                jax.jit(jax.vmap(evaluate_one, in_axes=(0, None), spmd_axis_name=spmd), out_shardings=out_sh), {})
      if len(_COMPILED) >= 8:
        _COMPILED.pop(next(iter(_COMPILED)))
      _COMPILED[cache_key] = cached
    _, self._init, self._evaluate, self._chunks = cached
    self._spmd, self._out_sh = spmd, out_sh

  def _mesh_ctx(self):
    if self.mesh is None:
      import contextlib  # pylint: disable=g-import-not-at-top
      return contextlib.nullcontext()
    return jax.set_mesh(self.mesh)

  def init(self) -> PyTree:
    with self._mesh_ctx():
      return self._init(self.seeds, self.hparams)

  def abstract_state(self) -> PyTree:
    with self._mesh_ctx():
      shapes = jax.eval_shape(self._init, self.seeds, self.hparams)
    if self._out_sh is None:
      return shapes
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self._out_sh), shapes)

  def run_chunk(self, state: PyTree, num_steps: int) -> tuple[PyTree, dict[str, jax.Array]]:
    if num_steps not in self._chunks:
      program = self.program

      def chunk_one(s, hp, data):
        return program.run_chunk(s, hp, data, num_steps)

      self._chunks[num_steps] = jax.jit(jax.vmap(chunk_one, in_axes=(0, 0, None), spmd_axis_name=self._spmd),
                                        out_shardings=self._out_sh, donate_argnums=0)
    with self._mesh_ctx():
      return self._chunks[num_steps](state, self.hparams, self.data)

  def evaluate(self, state: PyTree) -> dict[str, jax.Array]:
    with self._mesh_ctx():
      return self._evaluate(state, self.data)

  def check_evaluate(self, state: PyTree) -> None:
    """Traces the evaluation (no compute), so a config error in it surfaces before any training."""
    with self._mesh_ctx():
      jax.eval_shape(self._evaluate, state, self.data)


def summarize(runs: list[Run], final_eval: dict[str, np.ndarray]) -> dict[str, Any]:
  """Per run final eval metrics and, per hparam combination, mean/std/min/max over seeds of scalar metrics."""
  per_run = [{"run": r.run, "seed_index": r.seed_index, "seed": r.seed, "hparam_index": r.hparam_index,
              "hparams": _jsonable(r.hparams),
              "metrics": {k: _nonfinite_to_json(_value(np.asarray(v[r.run]))) for k, v in final_eval.items()}}
             for r in runs]
  groups = []
  for h in sorted({r.hparam_index for r in runs}):
    members = [r.run for r in runs if r.hparam_index == h]
    stats = {}
    for k, v in final_eval.items():
      v = np.asarray(v)
      if v.ndim == 1 and _float_metric(v.astype(float)):
        x = v[members].astype(float)
        stats[k] = {"mean": float(np.mean(x)), "std": float(np.std(x)), "min": float(np.min(x)),
                    "max": float(np.max(x))}
    groups.append({"hparam_index": h, "hparams": _jsonable(runs[members[0]].hparams), "num_seeds": len(members),
                   "metrics": {k: {s: _nonfinite_to_json(x) for s, x in d.items()} for k, d in stats.items()}})
  return {"runs": per_run, "by_hparams": groups}


def format_summary(summary: dict[str, Any], metrics: Sequence[str] | None = None) -> str:
  """A small text table: one line per hparam combination, mean +- std over seeds of each scalar metric."""
  lines = []
  for g in summary["by_hparams"]:
    names = metrics or sorted(g["metrics"])
    cells = []
    for k in names:
      if k in g["metrics"]:
        s = g["metrics"][k]
        cells.append(f"{k}={s['mean']:.4f}" + (f"±{s['std']:.4f}" if g["num_seeds"] > 1 else ""))
    hp = ", ".join(f"{k}={v}" for k, v in g["hparams"].items()) or "(no grid)"
    lines.append(f"  [{hp}] over {g['num_seeds']} seed(s): " + " ".join(cells))
  return "\n".join(lines)


# Runner settings that may change between a run and its resumption (they do not affect the results).
RESUMABLE_CHANGES = frozenset({"progress", "log_every_s", "plots", "tensorboard", "stop_after_chunks",
                               "max_to_keep"})


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
  config = dict(config)
  if isinstance(config.get("runner"), dict):
    config["runner"] = {k: v for k, v in config["runner"].items() if k not in RESUMABLE_CHANGES}
  return config


def check_same_config(config_path: pathlib.Path, config_text: str, *,
                      ignore: frozenset[str] = frozenset()) -> None:
  """Raises if `config_path` exists and holds another config than the JSON `config_text` (written the same way;
  top-level keys in `ignore`, settings that do not change results, may differ): a workdir's results are reused
  only by the config that made them."""
  if not config_path.exists():
    return
  old, new = (_comparable(json.loads(text)) for text in (config_path.read_text(), config_text))
  diff = sorted(k for k in set(old) | set(new) if k not in ignore and old.get(k) != new.get(k))
  if diff:
    raise ValueError(f"{config_path.parent} holds results of a different config (differs in: {diff}). Resume "
                     "with the same config, or use a fresh --workdir.")


def write_text_atomic(path: pathlib.Path, text: str) -> None:
  """Writes `text` through a temporary file and a rename, so a reader or a kill never leaves a partial file."""
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text, encoding="utf-8")
  os.replace(tmp, path)


def sync_processes(name: str) -> None:
  """A barrier across processes (a no-op in a single process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def run_sweep(program: Any, runs: list[Run], workdir: str | os.PathLike, options: RunnerOptions, *,
              config: Mapping[str, Any] | None = None, name: str = "train",
              devices: Any = None) -> SweepResult:
  """Trains every run of `runs` with `program` in one compiled program; logs, checkpoints, resumes.

  Args:
    program: a `TrainProgram` (init(key, hparams), run_chunk(state, hparams, data, num_steps),
      evaluate(state, data), data).
    runs: from `make_runs(seeds, grid)`.
    workdir: output folder; if it holds a checkpoint of the same config, the run resumes from it.
    options: `RunnerOptions`.
    config: the experiment config (JSON-able dict) written to config.json and compared on resume.
    name: label for progress lines.
    devices: devices for the mesh (default all).

  Returns:
    A `SweepResult` (final batched state, final eval metrics per run, summary).

  Raises:
    NonFiniteError: a metric became NaN/Inf (the message names step, run and the last finite metrics).
  """
  options.validate()
  workdir = pathlib.Path(workdir)
  primary = _is_primary()
  if primary:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "plots").mkdir(exist_ok=True)
  config_text = json.dumps(_jsonable(dict(config or {})), indent=2, sort_keys=True) + "\n"
  config_path = workdir / "config.json"

  sweep = Sweep(program, runs, run_shards=options.run_shards, batch_shards=options.batch_shards,
                devices=devices)
  ckpt = checkpoint_lib.Checkpointer(workdir / "checkpoints", max_to_keep=options.max_to_keep)
  plan = _chunk_plan(options.num_steps, options.chunk_steps)
  latest = ckpt.latest_step()
  if latest is not None:
    check_same_config(config_path, config_text)
    state, meta = ckpt.restore(latest, sweep.abstract_state())
    chunks_done = int(meta["chunks_done"])
    steps_done = int(meta["steps_done"])
    signature = _runs_signature(runs)  # checkpoints from before session 6 carry only num_runs
    same_runs = meta.get("num_runs") == len(runs) and meta.get("runs", signature) == signature
    if not same_runs or steps_done != sum(plan[:chunks_done]):
      raise ValueError(f"checkpoint in {workdir} was written with a different sweep (seeds, hyperparameters or "
                       "chunk size); use a fresh --workdir.")
    last_finite = {int(k): tuple(v) for k, v in meta.get("last_finite", {}).items()}
    log = _Log(workdir / "metrics.jsonl", truncate_to=int(meta["log_bytes"]))
    logging.info("resuming %s from checkpoint step %d (%d/%d chunks)", workdir, steps_done, chunks_done,
                 len(plan))
  else:
    state = sweep.init()
    chunks_done, steps_done = 0, 0
    last_finite = {}
    log = _Log(workdir / "metrics.jsonl", truncate_to=None)
  sweep.check_evaluate(state)
  if primary:
    config_path.write_text(config_text)
  tb = _TensorBoard(workdir / "tensorboard", purge_step=steps_done if latest is not None else None) \
      if options.tensorboard else None

  def save(state, chunks_done, steps_done):
    ckpt.save(steps_done, state, meta={"chunks_done": chunks_done, "steps_done": steps_done,
                                       "num_runs": len(runs), "runs": _runs_signature(runs),
                                       "log_bytes": log.tell(),
                                       "last_finite": {str(k): list(v) for k, v in last_finite.items()}})

  def evaluate_and_log(state, step):
    ev = sharding_lib.gather(sweep.evaluate(state))
    bad = _first_nonfinite(ev, per_step=False)
    if bad is not None:
      _, r, metric = bad
      raise NonFiniteError(_nonfinite_message("eval", step, runs[r], metric, last_finite.get(r)))
    recs = [_record("eval", step, run, {k: _value(v[run.run]) for k, v in ev.items()}) for run in runs]
    log.write(recs)
    if tb is not None:
      tb.write(recs)
    return ev

  progress = progress_lib.Progress(options.num_steps, initial=steps_done, desc=name, mode=options.progress,
                                   log_every_s=options.log_every_s,
                                   printer=lambda line: print(line, flush=True))
  final_eval = None
  completed = chunks_done == len(plan)
  chunks_this_process = 0
  try:
    while chunks_done < len(plan):
      if options.stop_after_chunks is not None and chunks_this_process >= options.stop_after_chunks:
        break
      n = plan[chunks_done]
      state, metrics = sweep.run_chunk(state, n)
      metrics = sharding_lib.gather(metrics)
      bad = _first_nonfinite(metrics, per_step=True)
      if bad is not None:
        t, r, metric = bad
        log.write(_train_records(runs, metrics, steps_done, options.log_every, options.num_steps, upto=t))
        if t > 0:
          last_finite[r] = (_step_of(metrics, r, t - 1, steps_done + t),
                            {k: _value(v[r, t - 1]) for k, v in metrics.items() if k != "step"})
        step = _step_of(metrics, r, t, steps_done + t + 1)
        raise NonFiniteError(_nonfinite_message("train", step, runs[r], metric, last_finite.get(r)))
      recs = _train_records(runs, metrics, steps_done, options.log_every, options.num_steps)
      log.write(recs)
      if tb is not None:
        tb.write(recs)
      for run in runs:
        last_finite[run.run] = (_step_of(metrics, run.run, n - 1, steps_done + n),
                                {k: _value(v[run.run, n - 1]) for k, v in metrics.items() if k != "step"})
      steps_done += n
      chunks_done += 1
      chunks_this_process += 1
      is_last = chunks_done == len(plan)
      if is_last or (options.eval_every and chunks_done % options.eval_every == 0):
        final_eval = evaluate_and_log(state, steps_done)
      if is_last or (options.checkpoint_every and chunks_done % options.checkpoint_every == 0):
        save(state, chunks_done, steps_done)
      scalars = {k: float(np.mean(v[:, -1])) for k, v in metrics.items()
                 if k != "step" and v.ndim == 2 and _float_metric(v)}
      shown = sorted(scalars, key=lambda k: (k not in ("loss", "objective"), k))[:3]  # the loss first
      progress.update(n, **{k: scalars[k] for k in shown})
    completed = chunks_done == len(plan)
  finally:
    progress.close()
    log.close()
    if tb is not None:
      tb.close()
    ckpt.close()

  if completed and final_eval is None:  # resumed a finished run: evaluate without logging again
    final_eval = sharding_lib.gather(sweep.evaluate(state))
  summary = summarize(runs, final_eval) if final_eval is not None else {}
  if primary and completed:
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if options.plots:
      from experiments import plot as plot_lib  # pylint: disable=g-import-not-at-top
      plot_lib.make_plots(workdir)
  return SweepResult(runs=runs, state=state, final_eval=final_eval or {}, steps_done=steps_done,
                     completed=completed, summary=summary)

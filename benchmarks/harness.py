"""Timing harness: warm-up, `block_until_ready`, interleaved repetitions, medians and spread, JSON results.

Candidates are timed round-robin (A, B, C, A, B, C, ...) so slow drifts of the machine hit them all alike,
and ratios are taken between medians of the same run.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import platform
import shlex
import statistics
import sys
import time
from typing import Any, Callable

import jax

RESULTS_DIR = pathlib.Path(__file__).parent / "results"


@dataclasses.dataclass
class Timing:
  name: str
  times_s: list[float]

  @property
  def median(self) -> float:
    return statistics.median(self.times_s)

  @property
  def iqr(self) -> tuple[float, float]:
    qs = statistics.quantiles(self.times_s, n=4) if len(self.times_s) > 1 else [self.times_s[0]] * 3
    return qs[0], qs[2]

  def summary(self) -> dict[str, Any]:
    lo, hi = self.iqr
    return {"median_s": self.median, "q25_s": lo, "q75_s": hi, "min_s": min(self.times_s),
            "reps": len(self.times_s)}


def time_interleaved(candidates: dict[str, Callable[[], Any]], *, reps: int = 20, warmup: int = 2,
                     inner: int = 1) -> dict[str, Timing]:
  """Times zero-argument callables round-robin; each call's outputs are blocked on.

  Args:
    candidates: name -> thunk running the jitted work once (compile happens in warm-up).
    reps: timed repetitions per candidate.
    warmup: untimed calls per candidate first (compilation, caches).
    inner: calls per repetition (the time recorded is per call).
  """
  for fn in candidates.values():
    for _ in range(warmup):
      jax.block_until_ready(fn())
  timings = {name: Timing(name, []) for name in candidates}
  for _ in range(reps):
    for name, fn in candidates.items():
      start = time.perf_counter()
      for _ in range(inner):
        out = fn()
      jax.block_until_ready(out)
      timings[name].times_s.append((time.perf_counter() - start) / inner)
  return timings


def machine_info() -> dict[str, Any]:
  return {"jax": jax.__version__, "backend": jax.default_backend(),
          "devices": [str(d) for d in jax.devices()], "cpu_count": os.cpu_count(),
          "platform": platform.platform(), "python": platform.python_version()}


def _command() -> str:
  """This process's command line, as `python -m benchmarks.X ...` when run that way."""
  script = pathlib.Path(sys.argv[0])
  module = f"benchmarks.{script.stem}" if script.parent.name == "benchmarks" else str(script)
  return shlex.join(["python", "-m", module, *sys.argv[1:]])


def write_results(name: str, timings: dict[str, Timing], extra: dict[str, Any] | None = None,
                  results_dir: pathlib.Path = RESULTS_DIR) -> pathlib.Path:
  """Writes `results_dir/NAME.json` (timings, ratios in `extra`, machine facts) and prints a table."""
  results_dir.mkdir(parents=True, exist_ok=True)
  payload = {"benchmark": name,
             "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "machine": machine_info(),
             "timings": {k: t.summary() for k, t in timings.items()},
             "command": _command(),
             **(extra or {})}
  path = results_dir / f"{name}.json"
  path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
  print(format_table(name, timings, extra))
  print(f"wrote {path}")
  return path


def format_table(name: str, timings: dict[str, Timing], extra: dict[str, Any] | None = None) -> str:
  width = max(len(k) for k in timings)
  lines = [f"{name}:", f"  {'candidate'.ljust(width)}  median (ms)   IQR (ms)"]
  for k, t in timings.items():
    lo, hi = t.iqr
    lines.append(f"  {k.ljust(width)}  {t.median * 1e3:11.3f}   {lo * 1e3:.3f}-{hi * 1e3:.3f}")
  for k, v in (extra or {}).get("ratios", {}).items():
    lines.append(f"  ratio {k}: {v:.3f}")
  return "\n".join(lines)


def scanned_steps_thunk(step_fn: Callable, optimizer: Any, state: Any, batches: Any) -> Callable[[], Any]:
  """A thunk that runs `step_fn(optimizer, state, batch)` over the stacked `batches` in one jitted `lax.scan`.

  The state is donated and carried from call to call (as in a real run); the thunk returns the per-step
  "loss" metric, which `time_interleaved` blocks on.
  """
  def run(state, batches):
    def body(s, b):
      s, metrics = step_fn(optimizer, s, b)
      return s, metrics["loss"]
    return jax.lax.scan(body, state, batches)

  fn = jax.jit(run, donate_argnums=0)
  box = {"state": state}

  def thunk():
    box["state"], out = fn(box["state"], batches)
    return out

  return thunk

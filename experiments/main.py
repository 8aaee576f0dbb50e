r"""Thin absl entry point for every experiment.

  python -m experiments.main --config=experiments/configs/erm.py --workdir=workdirs/digits_mlp
  python -m experiments.main --config=experiments/configs/erm.py:quick --workdir=/tmp/w --config.num_steps=50

`--config=PATH[:ARG]` is an ml_collections config file whose `get_config(ARG)` returns a ConfigDict with
`config.experiment = NAME`; this script imports `experiments/NAME.py` and calls its `run(config, workdir)`.
Any config field can be overridden on the command line (`--config.grid.learning_rate=(0.01,0.03)`).
Starting the same command again in the same workdir resumes from the last checkpoint.

Multi-host: pass `--multihost` on every host; it calls `jax.distributed.initialize()` (which reads the
coordinator from the cluster environment: SLURM, Open MPI, Cloud TPU, or the JAX_COORDINATOR_ADDRESS /
JAX_NUM_PROCESSES / JAX_PROCESS_ID variables; or pass --coordinator_address / --num_processes / --process_id).
"""
from __future__ import annotations

import importlib
import os
from typing import Sequence

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. experiments/configs/erm.py or erm.py:quick.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (metrics, checkpoints, plots); resumes if it "
                               "holds a checkpoint.")
_MULTIHOST = flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() before anything else.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host only; "
                                   "default: from the environment).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host only).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-host only).")


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """`jax.distributed.initialize` with only the arguments that were given (the rest come from the env)."""
  kwargs = {k: v for k, v in dict(coordinator_address=coordinator_address, num_processes=num_processes,
                                  process_id=process_id).items() if v is not None}
  jax.distributed.initialize(**kwargs)
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def load_config(spec: str, overrides: Sequence[str] = ()):
  """Loads `path/to/config.py[:arg]` like `--config` does, then applies `field.sub=value` overrides.

  For tests and notebooks; the command line goes through `config_flags` instead.
  """
  import ast  # pylint: disable=g-import-not-at-top
  import importlib.util  # pylint: disable=g-import-not-at-top
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise FileNotFoundError(f"config file {path!r} does not exist.")
  module_spec = importlib.util.spec_from_file_location(f"_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg) if arg else module.get_config()
  for item in overrides:
    key, _, value = item.partition("=")
    current = config
    *parents, leaf = key.split(".")
    for p in parents:
      current = current[p]
    old = current[leaf]
    if isinstance(old, str) or old is None:
      parsed = value
    elif isinstance(old, bool):
      parsed = value.lower() in ("1", "true", "yes")
    else:
      parsed = ast.literal_eval(value)
      if isinstance(old, float) and isinstance(parsed, int):
        parsed = float(parsed)
      if isinstance(old, tuple) and not isinstance(parsed, tuple):
        parsed = tuple(parsed) if isinstance(parsed, list) else (parsed,)
    current[leaf] = parsed
  return config


def run_experiment(config, workdir: str):
  """Dispatches to `experiments/<config.experiment>.py`'s `run(config, workdir)`."""
  name = config.get("experiment")
  if not name:
    raise ValueError("the config must set `config.experiment` to the name of a module in experiments/ "
                     "(e.g. 'train').")
  try:
    module = importlib.import_module(f"experiments.{name}")
  except ModuleNotFoundError as e:
    if e.name == f"experiments.{name}":
      raise ValueError(f"config.experiment={name!r} but there is no experiments/{name}.py.") from e
    raise
  if not hasattr(module, "run"):
    raise ValueError(f"experiments/{name}.py must define run(config, workdir).")
  return module.run(config, workdir)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _MULTIHOST.value:
    initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if _CONFIG.value is None:
    raise app.UsageError("pass --config=experiments/configs/NAME.py[:ARG].")
  if not _WORKDIR.value:
    raise app.UsageError("pass --workdir=PATH (outputs go there; the same workdir resumes).")
  run_experiment(_CONFIG.value, os.path.expanduser(_WORKDIR.value))


if __name__ == "__main__":
  app.run(main)

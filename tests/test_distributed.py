"""A two-process `jax.distributed` sweep on localhost (CPU, 2 devices each) equals the one-process sweep.

The test starts this file as a script twice (process 0 and 1); each calls `jax.distributed.initialize` through
`experiments.main.initialize_distributed`, runs the same ERM quick sweep over a mesh spanning both processes'
devices (the run axis split 4 ways), and process 0 saves the gathered final parameters. The reference is the
same sweep in one process with 4 local devices.
"""
from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The same sweep as tests/test_sharding.py's 4 x 1 (run-sharded) case, which serves as the reference.
from test_sharding import OVERRIDES as _SHARDING_OVERRIDES  # noqa: E402  pylint: disable=g-import-not-at-top

OVERRIDES = _SHARDING_OVERRIDES + ["runner.run_shards=4", "runner.batch_shards=1"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _worker(process_id: int, num_processes: int, port: int, workdir: str, out: str) -> None:
  """Runs in a subprocess: distributed init, the sweep, and (process 0) the gathered final params to `out`."""
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_platforms", "cpu")
  jax.config.update("jax_num_cpu_devices", 4 // num_processes)
  if num_processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    from experiments import main as main_lib  # pylint: disable=g-import-not-at-top
    main_lib.initialize_distributed(f"localhost:{port}", num_processes, process_id)
  import numpy as np  # pylint: disable=g-import-not-at-top
  from experiments import main as main_lib  # pylint: disable=g-import-not-at-top
  from experiments import train  # pylint: disable=g-import-not-at-top
  from jaxfair.training import sharding  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 4 and jax.process_count() == num_processes, jax.devices()
  config = main_lib.load_config(str(ROOT / "experiments/configs/erm.py") + ":quick", OVERRIDES)
  result = train.run(config, workdir)
  params = sharding.gather(result.state.params)
  if jax.process_index() == 0:
    leaves = {f"p{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(params))}
    np.savez(out, **leaves, test_accuracy=np.asarray(result.final_eval["test_accuracy"]))


def _launch(num_processes: int, tmp_path: pathlib.Path, name: str) -> tuple[pathlib.Path, list[str]]:
  port = _free_port()
  out = tmp_path / f"{name}.npz"
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  procs = [subprocess.Popen([sys.executable, __file__, str(i), str(num_processes), str(port),
                             str(tmp_path / name), str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(num_processes)]
  logs = []
  for p in procs:
    try:
      logs.append(p.communicate(timeout=240)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-4000:]
  return out, logs


def test_two_process_run_equals_one_process(tmp_path, tmp_path_factory):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from test_sharding import sharded_run  # pylint: disable=g-import-not-at-top
  two, _ = _launch(2, tmp_path, "two")
  # The reference: one process with 4 (fake, from conftest) devices, the same 4 x 1 mesh.
  assert jax.device_count() == 4
  one, one_dir = sharded_run(tmp_path_factory, 4, 1)
  b = np.load(two)
  leaves = [np.asarray(x) for x in jax.tree.leaves(one.state.params)]
  assert len(b.files) == len(leaves) + 1
  for i, x in enumerate(leaves):
    np.testing.assert_allclose(x, b[f"p{i}"], rtol=1e-5, atol=1e-6, err_msg=f"param leaf {i}")
  np.testing.assert_allclose(np.asarray(one.final_eval["test_accuracy"]), b["test_accuracy"], rtol=1e-6)
  # Process 0 wrote the same log as the single process; the other process wrote nothing.
  assert (tmp_path / "two" / "metrics.jsonl").read_text() == (one_dir / "metrics.jsonl").read_text()
  assert (tmp_path / "two" / "checkpoints" / "12").is_dir()


if __name__ == "__main__":
  _worker(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])

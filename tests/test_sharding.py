"""On 4 fake CPU devices, seed-sharded and batch-sharded sweeps equal the unsharded sweep (float tolerance)."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from experiments import main as main_lib
from experiments import runner
from experiments import train
from jaxfair.training import sharding

OVERRIDES = ["num_steps=12", "runner.chunk_steps=6", "runner.eval_every=0", "runner.checkpoint_every=0",
             "runner.plots=false", "runner.progress=none", "seeds=(0,1,2,3)", "batch_size=32",
             "model.kwargs.width=16"]


_CACHE = {}


def sharded_run(tmp_path_factory, run_shards: int, batch_shards: int):
  """The ERM quick sweep (4 seeds) on a (run_shards, batch_shards) mesh; cached per session (the distributed
  test reuses the 4 x 1 run as its one-process reference). Returns (result, workdir)."""
  key = (run_shards, batch_shards)
  if key not in _CACHE:
    workdir = tmp_path_factory.mktemp(f"sweep_{run_shards}x{batch_shards}")
    config = main_lib.load_config("experiments/configs/erm.py:quick",
                                  OVERRIDES + [f"runner.run_shards={run_shards}", f"runner.batch_shards={batch_shards}"])
    _CACHE[key] = (train.run(config, str(workdir)), workdir)
  return _CACHE[key]


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_seed_and_batch_sharded_sweeps_equal_unsharded(tmp_path_factory):
  """The run axis over 4 devices, then the batch axis over 4 devices (the 2 x 2 mesh is compiled below)."""
  assert jax.device_count() == 4
  base, base_dir = sharded_run(tmp_path_factory, 1, 1)
  for name, run_shards, batch_shards in [("runs", 4, 1), ("batch", 1, 4)]:
    res, workdir = sharded_run(tmp_path_factory, run_shards, batch_shards)
    w = jax.tree.leaves(res.state.params)[0]
    assert len(w.sharding.device_set) == run_shards * batch_shards, name
    if run_shards > 1:  # each device holds R / run_shards runs
      assert w.sharding.shard_shape(w.shape)[0] == w.shape[0] // run_shards, name
    for a, b in zip(_leaves(base.state.params), _leaves(res.state.params)):
      np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg=name)
    for k in ("test_accuracy", "test_loss"):
      np.testing.assert_allclose(base.final_eval[k], res.final_eval[k], rtol=1e-5, atol=1e-6, err_msg=name)
    log_a = (base_dir / "metrics.jsonl").read_text().splitlines()
    log_b = (workdir / "metrics.jsonl").read_text().splitlines()
    assert len(log_a) == len(log_b)


def test_batch_sharding_inserts_gradient_all_reduce():
  config = main_lib.load_config("experiments/configs/erm.py:quick", OVERRIDES)
  program = train.make_program(config)
  runs = runner.make_runs((0, 1), {"learning_rate": [1e-3]})
  sweep = runner.Sweep(program, runs, run_shards=2, batch_shards=2)
  chunk = jax.jit(jax.vmap(lambda s, h, d: program.run_chunk(s, h, d, 3), in_axes=(0, 0, None),
                           spmd_axis_name="runs"))
  with jax.set_mesh(sweep.mesh):
    compiled = chunk.lower(sweep.abstract_state(), sweep.hparams, sweep.data).compile().as_text()
  assert "all-reduce" in compiled  # the batch is split over devices, so gradients are summed across them


def test_mesh_helpers_validate():
  mesh = sharding.make_sweep_mesh(run_shards=2, batch_shards=2)
  assert dict(mesh.shape) == {"runs": 2, "batch": 2}
  assert sharding.axis_size(mesh, "runs") == 2 and sharding.axis_size(None, "runs") == 1
  with pytest.raises(ValueError, match="devices"):
    sharding.make_sweep_mesh(run_shards=4, batch_shards=2)
  with pytest.raises(ValueError, match="divisible"):
    sharding.put_runs(np.zeros(3), sharding.make_sweep_mesh(run_shards=2))
  x = sharding.put_runs(np.arange(4.0), sharding.make_sweep_mesh(run_shards=4, batch_shards=1))
  assert x.sharding.shard_shape(x.shape) == (1,)
  np.testing.assert_array_equal(sharding.gather(x), np.arange(4.0))
  assert sharding.constrain_batch(np.ones(3)).shape == (3,)  # no mesh: identity

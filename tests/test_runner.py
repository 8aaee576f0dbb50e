"""Tests of the sweep runner: one compiled program, resume equality, NaN guard, checkpoints, progress."""
from __future__ import annotations

import io
import json
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import runner
from jaxfair.training import checkpoint as checkpoint_lib
from jaxfair.training import progress as progress_lib
from jaxfair.training import sharding


class ToyState(NamedTuple):
  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  rule_state: Any
  key: jax.Array


class ToyProgram(NamedTuple):
  init: Any
  run_chunk: Any
  evaluate: Any
  data: Any


def toy_program(n: int = 128, d: int = 6, k: int = 3, batch_size: int = 16, nan_at_step: int | None = None,
                trace_counter: dict[str, int] | None = None) -> ToyProgram:
  """A softmax-regression TrainProgram with the jaxfair.training contract (random minibatches, SGD)."""
  rng = np.random.default_rng(0)
  w_true = rng.normal(size=(d, k))
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = np.argmax(x @ w_true + 0.5 * rng.normal(size=(n, k)), axis=1).astype(np.int32)
  counter = trace_counter if trace_counter is not None else {}

  def opt(hp):
    return optax.inject_hyperparams(optax.sgd)(learning_rate=hp["learning_rate"])

  def loss_fn(params, xb, yb):
    logits = xb @ params["w"] + params["b"][None, :]
    return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

  def init(key, hp):
    counter["init"] = counter.get("init", 0) + 1
    k1, k2 = jax.random.split(key)
    params = {"w": 0.1 * jax.random.normal(k1, (d, k)), "b": jnp.zeros((k,))}
    return ToyState(jnp.zeros((), jnp.int32), params, (), opt(hp).init(params), (), k2)

  def step(state, hp, data):
    xs, ys = data
    key = jax.random.fold_in(state.key, state.step)
    idx = jax.random.choice(key, n, (batch_size,), replace=False)
    xb, yb = sharding.constrain_batch(xs[idx]), sharding.constrain_batch(ys[idx])
    loss, g = jax.value_and_grad(loss_fn)(state.params, xb, yb)
    if nan_at_step is not None:
      loss = jnp.where(state.step == nan_at_step, jnp.nan, loss)
    upd, opt_state = opt(hp).update(g, state.opt_state, state.params)
    params = optax.apply_updates(state.params, upd)
    new = state._replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new, {"loss": loss, "step": new.step}

  def run_chunk(state, hp, data, num_steps):
    counter["run_chunk"] = counter.get("run_chunk", 0) + 1
    return jax.lax.scan(lambda s, _: step(s, hp, data), state, None, length=num_steps)

  def evaluate(state, data):
    counter["evaluate"] = counter.get("evaluate", 0) + 1
    xs, ys = data
    pred = jnp.argmax(xs @ state.params["w"] + state.params["b"][None, :], -1)
    per_class = jnp.stack([jnp.sum((pred == ys) & (ys == c)) / jnp.maximum(jnp.sum(ys == c), 1)
                           for c in range(k)])
    return {"test_accuracy": jnp.mean(pred == ys), "test_loss": loss_fn(state.params, xs, ys),
            "per_class_accuracy": per_class}

  return ToyProgram(init, run_chunk, evaluate, (x, y))


OPTS = dict(num_steps=50, chunk_steps=10, eval_every=2, checkpoint_every=1, progress="none", plots=False)


def _equal_trees(a, b) -> bool:
  return all(jax.tree.leaves(jax.tree.map(lambda u, v: bool(np.array_equal(np.asarray(u), np.asarray(v))), a, b)))


def test_make_runs_order_and_errors():
  runs = runner.make_runs([3, 4], {"lr": [0.1, 0.2, 0.3], "b1": 0.9})
  assert len(runs) == 6
  assert [(r.seed, r.hparams["lr"]) for r in runs[:3]] == [(3, 0.1), (4, 0.1), (3, 0.2)]
  assert all(r.hparams["b1"] == 0.9 for r in runs)
  assert [r.run for r in runs] == list(range(6))
  with pytest.raises(ValueError, match="distinct"):
    runner.make_runs([0, 0], {})
  with pytest.raises(ValueError, match="numbers"):
    runner.make_runs([0], {"opt": ["adam"]})
  with pytest.raises(ValueError, match="empty"):
    runner.make_runs([0], {"lr": []})


def test_sweep_compiles_once_and_logs_every_step(tmp_path):
  counter = {}
  runs = runner.make_runs([0, 1], {"learning_rate": [0.1, 0.5]})
  res = runner.run_sweep(toy_program(trace_counter=counter), runs, tmp_path,
                         runner.RunnerOptions(**OPTS, tensorboard=True))
  # 5 chunks, 3 evaluations: each function traced once (vmapped over the 4 runs, not per run or per chunk).
  assert counter == {"init": 1, "run_chunk": 1, "evaluate": 1}
  recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in recs if r["kind"] == "train"]
  assert len(train) == 50 * 4
  assert sorted({r["step"] for r in train}) == list(range(1, 51))
  assert {(r["seed_index"], r["hparam_index"]) for r in train} == {(i, h) for i in range(2) for h in range(2)}
  evals = [r for r in recs if r["kind"] == "eval"]
  assert sorted({r["step"] for r in evals}) == [20, 40, 50]
  assert set(evals[0]["metrics"]) == {"test_accuracy", "test_loss", "per_class_accuracy"}
  assert res.completed and res.final_eval["test_accuracy"].shape == (4,)
  assert res.final_eval["test_accuracy"].min() > 0.6
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert len(summary["by_hparams"]) == 2 and summary["by_hparams"][0]["num_seeds"] == 2
  assert (tmp_path / "config.json").exists()
  assert runner.checkpoint_lib.Checkpointer(tmp_path / "checkpoints").latest_step() == 50
  try:
    import tensorboardX  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  except ImportError:
    assert not (tmp_path / "tensorboard").exists()


def test_tensorboard_is_optional(tmp_path, monkeypatch):
  import sys  # pylint: disable=g-import-not-at-top
  monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails as if not installed
  tb = runner._TensorBoard(tmp_path / "tb", purge_step=None)  # pylint: disable=protected-access
  tb.write([{"kind": "train", "step": 1, "run": 0, "metrics": {"loss": 1.0}}])
  tb.close()
  assert not (tmp_path / "tb").exists()


def test_resume_equals_uninterrupted(tmp_path):
  program = toy_program()
  runs = runner.make_runs([0, 1], {"learning_rate": [0.1, 0.5]})
  full = runner.run_sweep(program, runs, tmp_path / "full", runner.RunnerOptions(**OPTS), config={"a": 1})
  wd = tmp_path / "killed"
  part = runner.run_sweep(program, runs, wd, runner.RunnerOptions(**OPTS, stop_after_chunks=3), config={"a": 1})
  assert not part.completed and part.steps_done == 30
  # A run killed after its last checkpoint leaves log lines past it, maybe a torn one: they must go.
  with open(wd / "metrics.jsonl", "a") as f:
    f.write('{"kind": "train", "step": 31, "run": 0, "metrics": {}}\n{"kind": "tr')
  resumed = runner.run_sweep(toy_program(), runs, wd, runner.RunnerOptions(**OPTS), config={"a": 1})
  assert resumed.completed and resumed.steps_done == 50
  assert _equal_trees(full.state.params, resumed.state.params)
  assert _equal_trees(full.state.opt_state, resumed.state.opt_state)
  assert np.array_equal(jax.random.key_data(full.state.key), jax.random.key_data(resumed.state.key))
  assert (tmp_path / "full" / "metrics.jsonl").read_text() == (wd / "metrics.jsonl").read_text()
  # Running a finished workdir again changes nothing and reports the same final metrics.
  again = runner.run_sweep(program, runs, wd, runner.RunnerOptions(**OPTS), config={"a": 1})
  assert (tmp_path / "full" / "metrics.jsonl").read_text() == (wd / "metrics.jsonl").read_text()
  np.testing.assert_array_equal(again.final_eval["test_accuracy"], full.final_eval["test_accuracy"])
  with pytest.raises(ValueError, match="different config"):
    runner.run_sweep(program, runs, wd, runner.RunnerOptions(**OPTS), config={"a": 2})


def test_resume_refuses_other_seeds_or_hparams_without_a_config(tmp_path):
  """With no config to compare, the checkpoint's own (seed, hparams) list still identifies the sweep."""
  runs = runner.make_runs([0, 1], {"learning_rate": [0.1]})
  runner.run_sweep(toy_program(), runs, tmp_path, runner.RunnerOptions(**OPTS, stop_after_chunks=2))
  for other in (runner.make_runs([5, 6], {"learning_rate": [0.1]}), runner.make_runs([0, 1], {"learning_rate": [0.5]})):
    with pytest.raises(ValueError, match="different sweep"):
      runner.run_sweep(toy_program(), other, tmp_path, runner.RunnerOptions(**OPTS))
  assert runner.run_sweep(toy_program(), runs, tmp_path, runner.RunnerOptions(**OPTS)).completed


def test_bfloat16_metrics_are_guarded():
  metrics = {"loss": np.array([[1.0, np.nan]], dtype=jnp.bfloat16), "step": np.array([[1, 2]])}
  assert runner._first_nonfinite(metrics, per_step=True) == (1, 0, "loss")  # pylint: disable=protected-access


def test_nan_guard_names_step_run_and_last_finite(tmp_path):
  runs = runner.make_runs([0, 1], {"learning_rate": [0.1]})
  with pytest.raises(runner.NonFiniteError) as info:
    runner.run_sweep(toy_program(nan_at_step=23), runs, tmp_path, runner.RunnerOptions(**OPTS))
  msg = str(info.value)
  assert "step 24" in msg and "run 0" in msg and "seed 0" in msg and "learning_rate" in msg
  assert "Last finite metrics" in msg and "(step 23)" in msg
  recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert max(r["step"] for r in recs if r["kind"] == "train") == 23  # lines before the bad step are kept
  assert checkpoint_lib.Checkpointer(tmp_path / "checkpoints").latest_step() == 20


def test_checkpoint_roundtrip_typed_keys_and_empty_subtrees(tmp_path):
  state = ToyState(jnp.arange(3, dtype=jnp.int32), {"w": jnp.ones((3, 2)), "none": None}, (), (jnp.zeros(3),),
                   {"ema": jnp.full((3,), 0.5)}, jax.vmap(jax.random.key)(jnp.arange(3)))
  ckpt = checkpoint_lib.Checkpointer(tmp_path, max_to_keep=2)
  for step in (1, 2, 3):
    ckpt.save(step, state, meta={"log_bytes": step})
  assert ckpt.all_steps() == [2, 3]
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  restored, meta = ckpt.restore(3, abstract)
  assert meta == {"log_bytes": 3}
  assert isinstance(restored, ToyState) and restored.params["none"] is None
  assert jax.dtypes.issubdtype(restored.key.dtype, jax.dtypes.prng_key)
  assert np.array_equal(jax.random.key_data(restored.key), jax.random.key_data(state.key))
  assert _equal_trees(restored.params, state.params) and _equal_trees(restored.rule_state, state.rule_state)
  with pytest.raises(ValueError, match="config changed"):
    ckpt.restore(3, (state, jnp.zeros(1)))
  with pytest.raises(ValueError, match="max_to_keep"):
    checkpoint_lib.Checkpointer(tmp_path / "x", max_to_keep=0)


def test_progress_log_lines_and_bar():
  lines = []
  p = progress_lib.Progress(100, initial=20, desc="demo", mode="log", log_every_s=0.0, printer=lines.append)
  p.update(30, loss=0.5)
  p.update(50)
  p.close()
  assert lines[0].startswith("demo: step 50/100 (50%)") and "steps/s" in lines[0] and "loss=0.5" in lines[0]
  assert lines[-1].startswith("demo: step 100/100") and "ETA 0s" in lines[-1]
  stream = io.StringIO()
  with progress_lib.Progress(10, mode="bar", stream=stream) as bar:
    bar.update(10, loss=1.0)
  assert "10/10" in stream.getvalue()
  with pytest.raises(ValueError, match="mode"):
    progress_lib.Progress(10, mode="fancy")


def test_runner_option_validation(tmp_path):
  runs = runner.make_runs([0], {"learning_rate": [0.1]})
  with pytest.raises(ValueError, match="chunk_steps"):
    runner.run_sweep(toy_program(), runs, tmp_path, runner.RunnerOptions(num_steps=10, chunk_steps=0))
  with pytest.raises(ValueError, match="divisible|cannot be split"):
    runner.run_sweep(toy_program(), runner.make_runs([0, 1, 2], {"learning_rate": [0.1]}), tmp_path,
                     runner.RunnerOptions(num_steps=10, run_shards=2))

"""EnsLoss train step vs BCE train step, same run (target: EnsLoss median <= 1.1x BCE).

Both steps are the training core's `train_step` (jaxfair.training.make_train_step) with the same model,
batch, optimizer (SGD momentum, as in the paper) and donated state; they differ only in the per-example
loss: `jaxfair.ensloss.ensloss_loss()` (normal draws, a sort, a rank scatter, the tail rescale; the logistic
loss is still computed for monitoring) vs `jaxfair.losses.logistic`. Each timed call runs `steps` steps in
one `lax.scan` (no per-step dispatch). Two regimes:

  * mlp: the EnsLoss paper's tabular MLP shape at CPU scale (depth 3, width 256, 64 inputs, batch 128) -- the
    target applies here;
  * linear: a linear model (the step is almost nothing but the loss), where the fixed O(B log B) cost of the
    rank matching is most visible.

  python -m benchmarks.run_all --only ensloss
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import harness
from jaxfair import ensloss, losses, models
from jaxfair.data.batching import Batch
from jaxfair.training import step as step_lib
from jaxfair.training import per_example, uniform


def _program(model, loss, steps: int):
  tx = optax.sgd(1e-2, momentum=0.9)
  train_step = step_lib.make_train_step(model, loss, uniform(), monitor_loss=losses.logistic)

  def run(state, batch):
    def body(s, _):
      s, m = train_step(tx, s, batch)
      return s, m["loss"]
    return jax.lax.scan(body, state, length=steps)

  def init(key):
    params, model_state = model.init(key)
    return step_lib.TrainState(jnp.zeros((), jnp.int32), params, model_state, tx.init(params), (), key)

  return init, jax.jit(run, donate_argnums=0)


def bench(name: str, model, batch: Batch, steps: int, reps: int) -> dict:
  init_e, run_e = _program(model, ensloss.ensloss_loss(), steps)
  init_b, run_b = _program(model, per_example(losses.logistic), steps)
  states = {"ensloss": init_e(jax.random.key(0)), "bce": init_b(jax.random.key(0))}

  def thunk(which, run):
    def f():
      states[which], out = run(states[which], batch)
      return out
    return f

  timings = harness.time_interleaved({f"{name}/ensloss": thunk("ensloss", run_e),
                                      f"{name}/bce": thunk("bce", run_b)}, reps=reps, warmup=2)
  ratio = timings[f"{name}/ensloss"].median / timings[f"{name}/bce"].median
  return timings, ratio


def main(argv=()) -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--reps", type=int, default=30)
  parser.add_argument("--steps", type=int, default=20)
  args, _ = parser.parse_known_args(argv)
  rng = np.random.default_rng(0)
  b, d = 128, 64
  batch = Batch(jnp.asarray(rng.normal(size=(b, d)), jnp.float32),
                jnp.asarray((rng.random(b) < 0.5).astype(np.int32)), jnp.ones((b,), bool))
  all_timings, ratios = {}, {}
  for name, model in (("mlp", models.mlp((d,), 1, width=256, depth=3, norm="batch")),
                      ("linear", models.linear((d,), 1))):
    t, r = bench(name, model, batch, args.steps, args.reps)
    all_timings.update(t)
    ratios[f"{name}: ensloss/bce"] = r
  harness.write_results(
      "ensloss", {k: harness.Timing(k, [s / args.steps for s in v.times_s]) for k, v in all_timings.items()},
      extra={"ratios": ratios, "target": {"mlp: ensloss/bce": 1.1},
             "meets_target": bool(ratios["mlp: ensloss/bce"] <= 1.1),
             "notes": f"times are per train step (median over {args.reps} reps of a {args.steps}-step lax.scan, "
                      "EnsLoss and BCE interleaved in the same run); batch 128, SGD momentum 0.9, donated state."})


if __name__ == "__main__":
  import sys
  main(sys.argv[1:])

"""Train-step time of an MLP with each instance-weighting rule vs uniform weighting, in the same run.

  python -m benchmarks.run_all --only reweighting       # writes benchmarks/results/reweighting.json
  python -m benchmarks.reweighting --reps 30 --steps 20  # options

One timed call = `--steps` full training steps (forward, per-example cross-entropy, weights, backward, Adam)
of `jaxfair.training.make_train_step` inside one jitted `lax.scan`, with the train state donated, on fixed
pre-generated batches. Two sizes: "large" (784-512-512-10, batch 256: matmul-bound) and "small"
(64-128-128-10, batch 64: a few microseconds of math per step, so any per-step overhead shows). The weighting
overhead is median(rule) / median(uniform) - 1 of the same run, candidates interleaved (the ratio of minima is
reported too, and the weighting alone — `steps` rule.apply calls on loss vectors in one jitted scan, minus the
same loop with uniform weights — as a fraction of the uniform step: the low-noise estimate on a shared
machine). Target (issue 6): <= 5% for every rule.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax

from benchmarks import harness
from jaxfair import losses, models
from jaxfair import reweighting as rw
from jaxfair.data.batching import Batch
from jaxfair.training import components
from jaxfair.training.step import TrainState, make_train_step

SIZES = {"large": dict(features=784, width=512, batch=256), "small": dict(features=64, width=128, batch=64)}


def rules() -> dict[str, components.WeightingRule]:
  return {
      "uniform": components.uniform(),
      "linupper": rw.loss_based_rule("linupper", 0.4),
      "quadratic": rw.loss_based_rule("quadratic", 1.0),
      "extremes": rw.loss_based_rule("extremes", 0.4),
      "kl_dro": rw.kl_dro_rule(1.0),
      "ema_kl_dro": rw.ema_kl_dro_rule(1.0, 0.01),
      "cvar": rw.cvar_rule(0.2),
  }


def make_thunks(size: str, steps: int) -> dict[str, callable]:
  cfg = SIZES[size]
  model = models.mlp((cfg["features"],), 10, width=cfg["width"], depth=2)
  key = jax.random.key(0)
  kx, ky, kp = jax.random.split(key, 3)
  xs = jax.random.normal(kx, (steps, cfg["batch"], cfg["features"]))
  ys = jax.random.randint(ky, (steps, cfg["batch"]), 0, 10)
  mask = jnp.ones((steps, cfg["batch"]), bool)
  batches = Batch(xs, ys, mask)
  tx = optax.adam(1e-3)
  loss = components.per_example(losses.softmax_cross_entropy)
  thunks = {}
  for name, rule in rules().items():
    step_fn = make_train_step(model, loss, rule)
    params, model_state = model.init(kp)
    state = TrainState(jnp.zeros((), jnp.int32), params, model_state, tx.init(params), rule.init(), jax.random.key(1))
    thunks[name] = harness.scanned_steps_thunk(step_fn, tx, state, batches)
  return thunks


def make_isolated_thunks(size: str, steps: int) -> dict[str, callable]:
  """The weighting alone: `steps` rule.apply calls on batch-size loss vectors in one jitted scan."""
  cfg = SIZES[size]
  ls = jax.random.gamma(jax.random.key(2), 2.0, (steps, cfg["batch"]))
  mask = jnp.ones((cfg["batch"],), bool)
  thunks = {}
  for name, rule in rules().items():
    def run(ls, rule=rule):
      def body(s, l):
        w, s = rule.apply(l, mask, s)
        return s, w[0]
      return jax.lax.scan(body, rule.init(), ls)[1]
    fn = jax.jit(run)
    thunks[name] = lambda fn=fn: fn(ls)
  return thunks


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--reps", type=int, default=25)
  parser.add_argument("--steps", type=int, default=20, help="train steps per timed call (one lax.scan)")
  parser.add_argument("--sizes", nargs="*", default=list(SIZES))
  parser.add_argument("--name", default="reweighting")
  args = parser.parse_args(argv)
  all_timings, ratios, ratios_min, targets, per_step_ms, isolated = {}, {}, {}, {}, {}, {}
  for size in args.sizes:
    thunks = make_thunks(size, args.steps)
    timings = harness.time_interleaved(thunks, reps=args.reps, warmup=3)
    base = timings["uniform"].median
    for name, t in timings.items():
      all_timings[f"{size}/{name}"] = t
      per_step_ms[f"{size}/{name}"] = t.median / args.steps * 1e3
      if name != "uniform":
        ratios[f"{size}/{name} / uniform"] = t.median / base
        ratios_min[f"{size}/{name} / uniform"] = min(t.times_s) / min(timings["uniform"].times_s)
        targets[f"{size}/{name} overhead <= 5%"] = t.median / base <= 1.05
    # The weighting alone (same batch size), as a fraction of the uniform train step: a low-noise estimate
    # of the overhead when the machine is shared.
    alone = harness.time_interleaved(make_isolated_thunks(size, args.steps), reps=args.reps, warmup=3)
    for name, t in alone.items():
      if name != "uniform":
        isolated[f"{size}/{name}"] = {"weighting_ms_per_step": t.median / args.steps * 1e3,
                                      "fraction_of_uniform_step": (t.median - alone["uniform"].median) / base}
  extra = {"ratios": ratios, "ratios_of_min_times": ratios_min, "targets_met": targets,
           "weighting_alone": isolated, "per_step_ms": per_step_ms, "steps_per_call": args.steps,
           "sizes": {k: SIZES[k] for k in args.sizes}}
  harness.write_results(args.name, all_timings, extra)
  for k, v in targets.items():
    print(f"  target {k}: {'met' if v else 'NOT met'} (ratio of medians {ratios[k.split(' ')[0] + ' / uniform']:.3f}, "
          f"of minima {ratios_min[k.split(' ')[0] + ' / uniform']:.3f})")
  for k, v in isolated.items():
    print(f"  {k} alone: {v['weighting_ms_per_step'] * 1e3:.1f} us/step = "
          f"{100 * v['fraction_of_uniform_step']:.2f}% of the uniform train step")


if __name__ == "__main__":
  main()

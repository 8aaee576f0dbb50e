"""Train-step time of the char-level causal LM with each loss-based weighting rule vs uniform, same run.

  python -m benchmarks.run_all --only reweighting_lm       # writes benchmarks/results/reweighting_lm.json
  python -m benchmarks.reweighting_lm --reps 15 --steps 4   # options

One timed call = `--steps` full training steps of `jaxfair.training.make_train_step` (forward of the
217k-parameter transformer of `jaxfair.lm.causal_lm` on a (32, 64) token batch, per-sequence cross-entropy,
the weights, backward, AdamW) inside one jitted `lax.scan` with the train state donated, on fixed
pre-generated token batches. Candidates: uniform, the three strategies at their reference temperatures, and
the experiment's `switch_rule` (method and r as data; timed here with an unbatched state, where `lax.switch`
runs the selected branch only, while under the experiment's vmap every branch runs), timed round-robin. The
weighting overhead is median(rule) / median(uniform) - 1 of the same run. Target (issue 6): <= 5%.
On a busy machine those medians are noisy, so the JSON also records each rule's `apply` timed ALONE on a
(32,) loss vector (2000 applications in one jitted scan) and that cost as a fraction of a uniform step.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax

from benchmarks import harness
from jaxfair import lm
from jaxfair import reweighting as rw
from jaxfair.data import text
from jaxfair.data.batching import Batch
from jaxfair.training import components
from jaxfair.training.step import TrainState, make_train_step

MODEL = dict(d_model=64, num_heads=4, num_layers=4, mlp_ratio=4)
BATCH, SEQ_LEN = 32, 64


def rules() -> dict[str, tuple[components.WeightingRule, dict]]:
  from experiments import reweighting_lm as exp  # pylint: disable=g-import-not-at-top
  switch = exp.switch_rule()
  return {
      "uniform": (components.uniform(), {}),
      "linupper_r0.4": (rw.loss_based_rule("linupper", 0.4), {}),
      "quadratic_r1": (rw.loss_based_rule("quadratic", 1.0), {}),
      "extremes_r0.4": (rw.loss_based_rule("extremes", 0.4), {}),
      "switch_rule(linupper,0.4)": (switch, {"method": exp.METHODS.index("linupper"), "r": 0.4}),
  }


def make_thunks(steps: int, batch: int = BATCH, seq_len: int = SEQ_LEN) -> dict[str, callable]:
  model = lm.causal_lm(text.VOCAB_SIZE, seq_len, **MODEL)
  kx, kp = jax.random.split(jax.random.key(0))
  tokens = jax.random.randint(kx, (steps, batch, seq_len + 1), 0, text.VOCAB_SIZE, jnp.int32)
  batches = Batch(tokens[..., :-1], tokens[..., 1:], jnp.ones((steps, batch), bool))
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3, weight_decay=0.01))
  thunks = {}
  for name, (rule, overrides) in rules().items():
    step_fn = make_train_step(model, lm.sequence_cross_entropy, rule)
    params, model_state = model.init(kp)
    rule_state = rule.init()
    if overrides:
      rule_state = rule_state._replace(method=jnp.asarray(overrides["method"], jnp.int32),
                                       r=jnp.asarray(overrides["r"], jnp.float32))
    state = TrainState(jnp.zeros((), jnp.int32), params, model_state, tx.init(params), rule_state,
                       jax.random.key(1))
    thunks[name] = harness.scanned_steps_thunk(step_fn, tx, state, batches)
  return thunks


def isolated_weight_cost_s(batch: int = BATCH, repeats: int = 2000) -> dict[str, float]:
  """Seconds per application of each rule's `apply` alone on a (batch,) loss vector (a scan of `repeats`
  applications in one jitted call, min of 5): a noise-free bound on what the weights can add to a step."""
  import time  # pylint: disable=g-import-not-at-top
  losses = jax.random.gamma(jax.random.key(2), 2.0, (repeats, batch))
  mask = jnp.ones((batch,), bool)
  out = {}
  for name, (rule, overrides) in rules().items():
    state = rule.init()
    if overrides:
      state = state._replace(method=jnp.asarray(overrides["method"], jnp.int32),
                             r=jnp.asarray(overrides["r"], jnp.float32))

    @jax.jit
    def many(state, losses, rule=rule):
      def body(s, l):
        w, s = rule.apply(l, mask, s)
        return s, w[0]
      return jax.lax.scan(body, state, losses)

    jax.block_until_ready(many(state, losses))
    best = float("inf")
    for _ in range(5):
      start = time.perf_counter()
      jax.block_until_ready(many(state, losses))
      best = min(best, (time.perf_counter() - start) / repeats)
    out[name] = best
  return out


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--reps", type=int, default=15)
  parser.add_argument("--steps", type=int, default=4, help="train steps per timed call (one lax.scan)")
  parser.add_argument("--name", default="reweighting_lm")
  args = parser.parse_args(argv)
  thunks = make_thunks(args.steps)
  timings = harness.time_interleaved(thunks, reps=args.reps, warmup=2)
  base = timings["uniform"].median
  ratios, targets, per_step_ms = {}, {}, {}
  for name, t in timings.items():
    per_step_ms[name] = t.median / args.steps * 1e3
    if name != "uniform":
      ratios[f"{name} / uniform"] = t.median / base
      targets[f"{name} overhead <= 5%"] = t.median / base <= 1.05
  isolated = isolated_weight_cost_s()
  step_s = base / args.steps
  extra = {"ratios": ratios,
           "isolated_weight_cost_us": {k: v * 1e6 for k, v in isolated.items()},
           "isolated_cost_fraction_of_uniform_step": {k: v / step_s for k, v in isolated.items()
                                                       if k != "uniform"}, "targets_met": targets, "per_step_ms": per_step_ms, "steps_per_call": args.steps,
           "model": dict(MODEL, vocab_size=text.VOCAB_SIZE, max_len=SEQ_LEN,
                         num_params=lm.num_params(jax.eval_shape(
                             lm.causal_lm(text.VOCAB_SIZE, SEQ_LEN, **MODEL).init, jax.random.key(0))[0])),
           "batch": [BATCH, SEQ_LEN]}
  harness.write_results(args.name, timings, extra)
  for k, v in targets.items():
    print(f"  target {k}: {'met' if v else 'NOT met'}")
  for k, v in isolated.items():
    print(f"  weights alone, {k}: {v * 1e6:.1f} us per batch ({v / step_s:.2e} of a uniform step)")


if __name__ == "__main__":
  main()

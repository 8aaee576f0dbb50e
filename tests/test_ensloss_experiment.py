"""The EnsLoss experiment: the comparison protocol's statistics (paired one-sided t-tests, counts, tables) and
its loss options (no training)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from experiments import ensloss as ex


def test_paired_test_matches_scipy_one_sided():
  rng = np.random.default_rng(0)
  base = rng.uniform(0.8, 0.9, 5)
  better = base + np.array([0.02, 0.03, 0.025, 0.02, 0.035])
  verdict, p_gt, p_lt = ex.paired_test(better, base)
  assert verdict == "better"
  np.testing.assert_allclose(p_gt, stats.ttest_1samp(better - base, 0, alternative="greater").pvalue)
  assert ex.paired_test(base, better)[0] == "worse"
  noisy = base + np.array([0.01, -0.01, 0.02, -0.015, 0.0])
  assert ex.paired_test(noisy, base)[0] == "same"
  # Zero-variance differences: a constant nonzero difference is decisive, zero is no difference.
  assert ex.paired_test(base + 0.01, base)[0] == "better"
  assert ex.paired_test(base, base)[0] == "same"


def test_compare_counts_and_tables():
  rng = np.random.default_rng(1)
  p, t = 6, 5
  base = rng.uniform(0.8, 0.9, (p, t))
  ens = base.copy()
  ens[:3] += 0.05 + rng.normal(0, 0.005, (3, t))   # 3 clearly better
  ens[3] -= 0.05 + rng.normal(0, 0.005, t)           # 1 clearly worse
  ens[4:] += rng.normal(0, 0.02, (2, t)) * [[1], [1]] * 0  # 2 identical
  acc = {"mlp": {"ensloss": ens, "logistic": base}}
  comp = ex.compare(acc)
  vs = comp["mlp"]["vs"]["logistic"]
  assert (vs["better"], vs["same"], vs["worse"]) == (3, 2, 1)
  np.testing.assert_allclose(comp["mlp"]["mean_accuracy"]["ensloss"], ens.mean())
  table = ex.format_tables(comp, ["ensloss", "logistic"], "toy")
  assert "| mlp | 3/2/1 |" in table and f"{ens.mean():.4f}" in table


def test_lam_period_epochs_becomes_a_step_period():
  kw = dict(lam=0.0, clip=-1.0, tail="inverse", shift=1e-6, lam_redraw=False, lam_period_epochs=2)
  loss = ex.make_loss("ensloss", kw, steps_per_epoch=5)  # lambda re-drawn every 10 steps
  logits, labels = jnp.linspace(-2.0, 2.0, 16), jnp.arange(16) % 2
  out = [np.asarray(loss(logits, labels, key=jax.random.key(0), mask=jnp.ones(16, bool), step=jnp.int32(s),
                         run_key=jax.random.key(1))) for s in (0, 9, 10)]
  np.testing.assert_array_equal(out[0], out[1])
  assert not np.array_equal(out[1], out[2])

r"""Long-tailed adversarial training on digits: the training split subsampled to n_c ∝ 10^(-c/9) (class 0
keeps all ~135 examples, class 9 about 14); the test split stays balanced. AT vs DONE (per-batch, EMA) vs
loss-reweighted AT, as in experiments/configs/adversarial_digits.py (same model, attack and seeds).

Launch:

  python -m experiments.main --config=experiments/configs/adversarial_digits_lt.py --workdir=workdirs/adv_digits_lt

Smoke test:

  python -m experiments.main --config=experiments/configs/adversarial_digits_lt.py:quick --workdir=/tmp/adv_lt_quick

Expected result (measured, 8 seeds; docs/adversarial.md): SA ~93-94%, RA-PGD20 45-48%, RA-Tail-30 13-14%
for every method (AT 13.4 ± 1.8, DONE 13.1 ± 1.2, DONE-EMA 13.8 ± 1.4); the two rarest classes stay near 0-5%
robust accuracy whatever the weighting.
"""
from __future__ import annotations

import ml_collections

from experiments.configs import adversarial_digits


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "", "quick"):
    raise ValueError(f"adversarial_digits_lt.py takes no argument or ':quick', got {arg!r}.")
  c = adversarial_digits.base_config(arg == "quick")
  c.name = "adv_digits_lt"
  c.long_tail = 10.0
  if arg == "quick":
    c.methods = ("done",)  # the balanced :quick already covers AT; keep the CI smoke test short
  return c

"""Optimizers as optax gradient transformations: AdamP and SGDP (Heo et al., ICLR 2021), EXAdam (Adly, 2024).

Each has a `scale_by_*` transform and a user-facing alias built with `optax.chain`; all accept learning-rate
schedules and work inside `optax.inject_hyperparams`.
"""
from __future__ import annotations

from jaxfair.optim._common import project
from jaxfair.optim.adamp import (ScaleByAdamPState, ScaleBySGDPState, adamp, scale_by_adamp, scale_by_sgdp,
                                 sgdp)
from jaxfair.optim.exadam import ScaleByExAdamState, dynamic_step_factor, exadam, scale_by_exadam

__all__ = ["scale_by_adamp", "adamp", "scale_by_sgdp", "sgdp", "scale_by_exadam", "exadam", "project",
           "ScaleByAdamPState", "ScaleBySGDPState", "ScaleByExAdamState", "dynamic_step_factor"]

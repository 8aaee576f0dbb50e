"""jaxfair: pure JAX instance reweighting, DRO, calibrated random losses, optimizers, inductive bias."""

__version__ = "0.1.0"

"""Numerical checks of the papers' identities and bounds, in float64, with margins.

Every module here defines `run(quick: bool = False) -> list[Check]`; `python -m theory_checks.run_all`
runs them all and exits non-zero when any check fails. `quick=True` is the small size the tests use.
"""

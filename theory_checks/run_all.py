"""Run every theory check: `python -m theory_checks.run_all [--quick] [--only NAME ...]`.

Prints each claim with its two sides and the margin; exits 1 if any claim fails.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import jax

import theory_checks
from theory_checks.report import format_checks

_NOT_CHECKS = {"run_all", "report"}


def check_modules() -> list[str]:
  return sorted(m.name for m in pkgutil.iter_modules(theory_checks.__path__)
                if m.name not in _NOT_CHECKS and not m.name.startswith("_"))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--quick", action="store_true", help="small sizes (what the tests run)")
  parser.add_argument("--only", nargs="*", default=None, help="module names to run")
  args = parser.parse_args(argv)
  jax.config.update("jax_enable_x64", True)
  failed = 0
  for name in check_modules():
    if args.only and name not in args.only:
      continue
    module = importlib.import_module(f"theory_checks.{name}")
    checks = module.run(quick=args.quick)
    print(format_checks(name, checks), flush=True)
    failed += sum(not c.passed for c in checks)
  print(f"{'FAILED' if failed else 'all passed'}: {failed} failing checks")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())

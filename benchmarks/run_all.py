"""Run every benchmark module (`python -m benchmarks.run_all [--only NAME ...]`)."""
from __future__ import annotations

import argparse
import importlib
import pkgutil

import benchmarks

_NOT_BENCHMARKS = {"run_all", "harness"}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--only", nargs="*", default=None)
  args, rest = parser.parse_known_args()
  for m in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda m: m.name):
    if m.name in _NOT_BENCHMARKS or m.name.startswith("_") or (args.only and m.name not in args.only):
      continue
    importlib.import_module(f"benchmarks.{m.name}").main(rest)


if __name__ == "__main__":
  main()

"""Run every benchmark module (`python -m benchmarks.run_all [--only NAME ...]`)."""
from __future__ import annotations

import argparse
import importlib
import pkgutil

import benchmarks

_NOT_BENCHMARKS = {"run_all", "harness", "xla_profile"}  # helpers, not benchmarks


def benchmark_names() -> list[str]:
  """The benchmark modules, in the order `main` runs them."""
  return sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__)
                if m.name not in _NOT_BENCHMARKS and not m.name.startswith("_"))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--only", nargs="*", default=None)
  args, rest = parser.parse_known_args()
  unknown = set(args.only or ()) - set(benchmark_names())
  if unknown:
    parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {benchmark_names()}.")
  for name in benchmark_names():
    if not args.only or name in args.only:
      importlib.import_module(f"benchmarks.{name}").main(rest)


if __name__ == "__main__":
  main()

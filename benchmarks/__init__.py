"""Timing benchmarks. Each module defines `main(argv)` and writes JSON to benchmarks/results/."""

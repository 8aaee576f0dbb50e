"""Where a jitted XLA:CPU program spends its time: per-op durations from a `jax.profiler` trace, joined with
the bytes each op reads and writes (its operands and result in the compiled HLO), summed by kind.

Kinds: "reduction" (a YNNPACK fusion whose root is a reduce), "elementwise" (an XLA loop fusion), "other".
Ops of different kinds can run at the same time on different cores, so the per-kind times add up to more
than the wall time; their GB/s say how fast each kind streams memory.
"""
from __future__ import annotations

import collections
import gzip
import json
import pathlib
import re
import tempfile
from typing import Any, Callable

import jax

_ITEMSIZE = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8,
             "f64": 8}
_SHAPE = re.compile(r"\b(" + "|".join(_ITEMSIZE) + r")\[([0-9,]*)\]")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = (.+?) (\w[\w-]*)\((.*?)\)(.*)$")


def _nbytes(shape_text: str) -> int:
  total = 0
  for dtype, dims in _SHAPE.findall(shape_text):
    n = 1
    for d in filter(None, dims.split(",")):
      n *= int(d)
    total += n * _ITEMSIZE[dtype]
  return total


def entry_ops(hlo_text: str) -> dict[str, tuple[str, int]]:
  """`name -> (kind, bytes read + written)` for the instructions of the ENTRY computation."""
  entry = hlo_text[hlo_text.index("\nENTRY"):]
  entry = entry[:entry.index("\n}")]
  result_bytes, ops = {}, {}
  for line in entry.split("\n")[1:]:
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    name, shape, opcode, operands, rest = match.groups()
    result_bytes[name] = _nbytes(shape)
    read = sum(result_bytes.get(o, 0) for o in set(re.findall(r"%([\w.\-]+)", operands)))
    if opcode == "fusion" and "__ynn_fusion" in rest and re.search(r'op_name="[^"]*reduce_\w+"', rest):
      kind = "reduction"
    elif opcode == "fusion" and "kind=kLoop" in rest:
      kind = "elementwise"
    else:
      kind = "other"
    ops[name] = (kind, read + result_bytes[name])
  return ops


def op_seconds(thunk: Callable[[], Any], names: set[str], steps: int = 10) -> dict[str, float]:
  """Mean seconds per call of each op in `names`, from a profiler trace of `steps` calls of `thunk`."""
  jax.block_until_ready(thunk())
  with tempfile.TemporaryDirectory() as logdir:
    with jax.profiler.trace(logdir):
      for _ in range(steps):
        jax.block_until_ready(thunk())
    (trace,) = pathlib.Path(logdir).rglob("*.trace.json.gz")
    events = json.load(gzip.open(trace))["traceEvents"]
  seconds = collections.Counter()
  for event in events:
    if event.get("ph") == "X" and event.get("name") in names:
      seconds[event["name"]] += event["dur"] * 1e-6 / steps
  return dict(seconds)


def by_kind(thunk: Callable[[], Any], hlo_text: str, steps: int = 10) -> dict[str, dict[str, float]]:
  """`kind -> {"ms", "MB", "GBps", "ops"}` per call, plus "all_ops" (the sum over kinds)."""
  ops = entry_ops(hlo_text)
  seconds = op_seconds(thunk, set(ops), steps)
  totals = collections.defaultdict(lambda: [0.0, 0, 0])
  for name, s in seconds.items():
    kind, nbytes = ops[name]
    for key in (kind, "all_ops"):
      totals[key][0] += s
      totals[key][1] += nbytes
      totals[key][2] += 1
  return {kind: {"ms": 1e3 * s, "MB": b / 1e6, "GBps": b / s / 1e9 if s else float("nan"), "ops": n}
          for kind, (s, b, n) in sorted(totals.items())}

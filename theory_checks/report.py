"""The result record every theory check returns, and its printing."""
from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Check:
  """One verified claim.

  `margin` is signed: >= 0 means the claim holds (e.g. rhs - lhs for `lhs <= rhs`, or tol - |error| for an
  identity). `lhs`/`rhs` are the two sides compared (worst case over the instances tried).
  """
  name: str
  lhs: float
  rhs: float
  margin: float
  detail: str = ""

  @property
  def passed(self) -> bool:
    return math.isfinite(self.margin) and self.margin >= 0


def inequality(name: str, lhs: float, rhs: float, detail: str = "") -> Check:
  """Claim `lhs <= rhs`."""
  return Check(name, float(lhs), float(rhs), float(rhs) - float(lhs), detail)


def identity(name: str, error: float, tol: float, detail: str = "") -> Check:
  """Claim `|error| <= tol` (error is a worst absolute or relative deviation)."""
  return Check(name, abs(float(error)), float(tol), float(tol) - abs(float(error)), detail)


def format_checks(module: str, checks: list[Check]) -> str:
  lines = [f"== {module}"]
  for c in checks:
    status = "ok  " if c.passed else "FAIL"
    lines.append(f"  [{status}] {c.name}: lhs={c.lhs:.6g} rhs={c.rhs:.6g} margin={c.margin:.3g}"
                 + (f"  ({c.detail})" if c.detail else ""))
  return "\n".join(lines)

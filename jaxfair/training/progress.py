"""Progress reporting for host training loops: a tqdm bar on a terminal, periodic log lines otherwise.

Example::

  with Progress(total=2000, initial=400, desc="digits_mlp") as bar:
    for ...:
      bar.update(100, loss=0.31)          # steps done since the last call, latest scalars

On a TTY it shows steps/s and ETA (tqdm); in a log file (CI, cluster jobs) it prints a line at most every
`log_every_s` seconds and at the end: ``digits_mlp: step 800/2000 (40%) 512.3 steps/s ETA 2s loss=0.31``.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, TextIO


def _format_eta(seconds: float) -> str:
  if seconds != seconds or seconds == float("inf"):
    return "?"
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _format_scalars(scalars: dict[str, Any]) -> str:
  return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in scalars.items())


class Progress:
  """Steps progress with rate and ETA.

  Args:
    total: total steps of the run.
    initial: steps already done (resumed runs); the rate counts only steps done in this process.
    desc: a label.
    mode: "auto" (bar on a TTY, log lines otherwise), "bar", "log" or "none".
    log_every_s: minimum seconds between log lines in "log" mode.
    stream: where to write (default stderr).
    printer: in "log" mode, a function taking the line (default: write to `stream`).
  """

  def __init__(self, total: int, *, initial: int = 0, desc: str = "train", mode: str = "auto",
               log_every_s: float = 30.0, stream: TextIO | None = None,
               printer: Callable[[str], None] | None = None):
    if mode not in ("auto", "bar", "log", "none"):
      raise ValueError(f"`mode` must be 'auto', 'bar', 'log' or 'none', got {mode!r}.")
    self.total, self.n, self.desc = int(total), int(initial), desc
    self._initial = int(initial)
    self._stream = stream if stream is not None else sys.stderr
    if mode == "auto":
      mode = "bar" if getattr(self._stream, "isatty", lambda: False)() else "log"
    self.mode = mode
    self._printer = printer or (lambda line: print(line, file=self._stream, flush=True))
    self._log_every_s = log_every_s
    self._start = time.perf_counter()
    self._last_log = -float("inf")
    self._bar = None
    if mode == "bar":
      from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm(total=self.total, initial=self.n, desc=desc, unit="step", file=self._stream,
                       dynamic_ncols=True, smoothing=0.1)

  @property
  def rate(self) -> float:
    """Steps per second since this process started (excludes resumed steps)."""
    elapsed = time.perf_counter() - self._start
    return (self.n - self._initial) / elapsed if elapsed > 0 else float("nan")

  def line(self, scalars: dict[str, Any] | None = None) -> str:
    rate = self.rate
    eta = (self.total - self.n) / rate if rate > 0 else float("inf")
    pct = 100.0 * self.n / max(self.total, 1)
    text = f"{self.desc}: step {self.n}/{self.total} ({pct:.0f}%) {rate:.1f} steps/s ETA {_format_eta(eta)}"
    if scalars:
      text += " " + _format_scalars(scalars)
    return text

  def update(self, steps: int, **scalars: Any) -> None:
    self.n += int(steps)
    if self._bar is not None:
      self._bar.update(int(steps))
      if scalars:
        self._bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in scalars.items()},
                              refresh=False)
    elif self.mode == "log":
      now = time.perf_counter()
      if now - self._last_log >= self._log_every_s or self.n >= self.total:
        self._last_log = now
        self._printer(self.line(scalars))

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None

  def __enter__(self) -> Progress:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

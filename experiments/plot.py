r"""Plots from `metrics.jsonl` alone: learning curves (mean and a band over seeds), final-metric comparisons.

Command line (regenerates a workdir's plots; with several workdirs also writes comparison plots)::

  python -m experiments.plot --workdir=workdirs/digits_mlp
  python -m experiments.plot --workdir=workdirs/erm --workdir=workdirs/dro --out=workdirs/compare

Reusable pieces for method engineers' experiments::

  records = read_metrics(workdir)                      # list of dicts, one per logged step per run
  curves = collect(records, "loss", kind="train")      # {label: (steps (T,), values (num_seeds, T))}
  fig = plot_curves(curves, title="loss")              # mean line + band over seeds, one line per label
  finals = final_values(records, "test_accuracy")      # {label: (num_seeds,) last eval value per seed}
  fig = plot_final(finals, title="test_accuracy")      # bars (mean) with each seed as a dot
  make_plots(workdir)                                  # everything for one workdir -> workdir/plots/*.png
  compare_workdirs({"ERM": wd1, "DRO": wd2}, metrics=["test_accuracy"], out_dir=...)  # across methods

The band is mean +- one standard deviation over seeds (`band="std"`) or min..max (`band="minmax"`).
"""
from __future__ import annotations

import collections
import json
import os
import pathlib
from typing import Any, Iterable, Mapping, Sequence
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top
import numpy as np  # noqa: E402  pylint: disable=g-import-not-at-top

Curves = dict[str, tuple[np.ndarray, np.ndarray]]


def read_metrics(workdir_or_file: str | os.PathLike) -> list[dict[str, Any]]:
  """Reads metrics.jsonl (from a workdir or the file itself); a torn last line (killed writer) is skipped."""
  path = pathlib.Path(workdir_or_file)
  if path.is_dir():
    path = path / "metrics.jsonl"
  if not path.exists():
    raise FileNotFoundError(f"no metrics log at {path}; pass the --workdir of a run (it holds metrics.jsonl).")
  records = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return records


def hparam_label(hparams: Mapping[str, Any]) -> str:
  """'lr=0.001, tau=1' (or 'default' with no grid)."""
  if not hparams:
    return "default"
  return ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(hparams.items()))


def _fmt(v: Any) -> str:
  return f"{v:.4g}" if isinstance(v, float) else str(v)


def _num(v: Any) -> float:
  if isinstance(v, str):  # "nan"/"inf" as written by the runner
    return float(v)
  return float(v)


def metric_names(records: Iterable[dict[str, Any]], kind: str = "train", scalar: bool | None = True) -> list[str]:
  """Metric names logged for `kind` ("train" or "eval"); scalar=True/False filters scalars/vectors, None all."""
  names = {}
  for r in records:
    if r.get("kind", "train") != kind:
      continue
    for k, v in r["metrics"].items():
      if k in names:
        continue
      names[k] = not isinstance(v, list)
  return sorted(k for k, s in names.items() if scalar is None or s == scalar)


def collect(records: Iterable[dict[str, Any]], metric: str, kind: str = "train",
            group: str = "hparams") -> Curves:
  """Per group label: (steps (T,), values (num_seeds, T[, K])) of `metric`, aligned on the steps every seed has.

  `group="hparams"` makes one group per hyperparameter combination; `group="run"` one per run.
  """
  data: dict[str, dict[int, dict[int, Any]]] = collections.defaultdict(lambda: collections.defaultdict(dict))
  for r in records:
    if r.get("kind", "train") != kind or metric not in r["metrics"]:
      continue
    label = hparam_label(r.get("hparams", {})) if group == "hparams" else f"run {r['run']}"
    v = r["metrics"][metric]
    data[label][r.get("seed_index", 0)][int(r["step"])] = (np.asarray([_num(u) for u in v]) if isinstance(v, list)
                                                           else _num(v))
  out = {}
  for label, seeds in data.items():
    common = sorted(set.intersection(*(set(d) for d in seeds.values())))
    if not common:
      continue
    values = np.asarray([[seeds[s][t] for t in common] for s in sorted(seeds)], dtype=float)
    out[label] = (np.asarray(common), values)
  return out


def final_values(records: Iterable[dict[str, Any]], metric: str, kind: str = "eval") -> dict[str, np.ndarray]:
  """Per hparam label: the metric at each seed's last logged step ((num_seeds,) or (num_seeds, K))."""
  return {label: values[:, -1] for label, (_, values) in collect(records, metric, kind).items()}


def _band(values: np.ndarray, band: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Mean over seeds (axis 0) and the band; all-NaN entries (a class absent from the test split) stay NaN."""
  if band not in ("std", "minmax"):
    raise ValueError(f"`band` must be 'std' or 'minmax', got {band!r}.")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    mean = np.nanmean(values, axis=0)
    if band == "minmax":
      return mean, np.nanmin(values, axis=0), np.nanmax(values, axis=0)
    std = np.nanstd(values, axis=0)
  return mean, mean - std, mean + std


def plot_curves(curves: Curves, *, title: str = "", ylabel: str | None = None, band: str = "std",
                ax: Any = None, logy: bool = False, smooth: int = 1) -> Any:
  """Mean over seeds with a band, one line per label; returns the figure.

  Args:
    curves: from `collect` (or any {label: (steps, values (num_seeds, T))}).
    band: "std" (mean +- std) or "minmax".
    smooth: moving-average window over steps (1 = none), applied per seed before averaging.
  """
  fig = None
  if ax is None:
    fig, ax = plt.subplots(figsize=(6, 4))
  for label, (steps, values) in curves.items():
    values = np.asarray(values, dtype=float)
    if values.ndim > 2:  # vector metric: plot its mean over components
      values = values.reshape(values.shape[0], values.shape[1], -1).mean(axis=-1)
    if smooth > 1 and values.shape[1] >= smooth:
      kernel = np.ones(smooth) / smooth
      values = np.stack([np.convolve(v, kernel, mode="valid") for v in values])
      steps = steps[smooth - 1:]
    mean, lo, hi = _band(values, band)
    if logy:  # mean - std can be <= 0: fall back to the smallest seed there
      lo = np.where(lo > 0, lo, np.nanmin(values, axis=0))
    (line,) = ax.plot(steps, mean, label=f"{label} (n={values.shape[0]})" if values.shape[0] > 1 else label)
    if values.shape[0] > 1:
      ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
  ax.set_xlabel("step")
  ax.set_ylabel(ylabel or title)
  if logy:
    ax.set_yscale("log")
  if title:
    ax.set_title(title)
  if len(curves) > 1 or any(v.shape[0] > 1 for _, v in curves.values()):
    ax.legend(fontsize="small")
  ax.grid(alpha=0.3)
  return fig if fig is not None else ax.figure


def plot_final(finals: Mapping[str, np.ndarray], *, title: str = "", ylabel: str | None = None,
               ax: Any = None) -> Any:
  """Final-metric comparison: a bar (mean over seeds, +- std) per label with every seed as a dot.

  Vector metrics ((num_seeds, K), e.g. per-class accuracy) are drawn as one line per label over the K
  components with a std band.
  """
  fig = None
  if ax is None:
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(finals) + 2), 4))
  labels = list(finals)
  vector = any(np.asarray(v).ndim > 1 for v in finals.values())
  if vector:
    for label in labels:
      v = np.asarray(finals[label], dtype=float)
      mean, lo, hi = _band(v, "std")
      k = np.arange(v.shape[-1])
      (line,) = ax.plot(k, mean, marker="o", label=label)
      if v.shape[0] > 1:
        ax.fill_between(k, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("component (e.g. class)")
    ax.legend(fontsize="small")
  else:
    x = np.arange(len(labels))
    means = [np.nanmean(np.asarray(finals[l], dtype=float)) for l in labels]
    stds = [np.nanstd(np.asarray(finals[l], dtype=float)) for l in labels]
    ax.bar(x, means, yerr=stds, alpha=0.6, capsize=4)
    for i, l in enumerate(labels):
      v = np.asarray(finals[l], dtype=float)
      ax.scatter(np.full(v.shape, i) + np.linspace(-0.15, 0.15, len(v)) if len(v) > 1 else [i], v,
                 color="k", s=10, zorder=3)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30 if len(labels) > 3 else 0, ha="right" if len(labels) > 3 else "center",
                       fontsize="small")
    finite = [m for m in means if np.isfinite(m)]
    if finite and min(finite) > 0.5 and max(finite) <= 1.0:  # accuracies: zoom in
      lo = min(np.nanmin(np.asarray(finals[l], dtype=float)) for l in labels)
      ax.set_ylim(max(0.0, lo - 0.05), 1.0)
  ax.set_ylabel(ylabel or title)
  if title:
    ax.set_title(title)
  ax.grid(alpha=0.3, axis="y")
  return fig if fig is not None else ax.figure


def _save(fig: Any, path: pathlib.Path) -> pathlib.Path:
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _safe(name: str) -> str:
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _log_scale(metric: str, curves: Curves) -> bool:
  """Losses and norms spanning more than a decade, all positive, read better on a log axis."""
  if not any(w in metric for w in ("loss", "objective", "norm")):
    return False
  values = np.concatenate([np.ravel(v) for _, v in curves.values()])
  values = values[np.isfinite(values)]
  return values.size > 0 and values.min() > 0 and values.max() / values.min() > 10


def make_plots(workdir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
               band: str = "std") -> list[pathlib.Path]:
  """Writes every standard plot of one workdir from its metrics.jsonl; returns the paths.

  * ``train_<metric>.png``: learning curve per hparam combination (mean + band over seeds);
  * ``eval_<metric>.png``: eval metric over steps (when evaluated more than once);
  * ``final_<metric>.png``: final eval metric per hparam combination (bars + seeds) or per component.
  """
  workdir = pathlib.Path(workdir)
  out = pathlib.Path(out_dir) if out_dir is not None else workdir / "plots"
  out.mkdir(parents=True, exist_ok=True)
  records = read_metrics(workdir)
  paths = []
  for m in metric_names(records, "train", scalar=True):
    curves = collect(records, m, "train")
    if curves:
      paths.append(_save(plot_curves(curves, title=f"train {m}", ylabel=m, band=band, logy=_log_scale(m, curves)),
                         out / f"train_{_safe(m)}.png"))
  for m in metric_names(records, "eval", scalar=None):
    curves = collect(records, m, "eval")
    if not curves:
      continue
    if max(len(s) for s, _ in curves.values()) > 1 and all(v.ndim == 2 for _, v in curves.values()):
      paths.append(_save(plot_curves(curves, title=f"eval {m}", ylabel=m, band=band), out / f"eval_{_safe(m)}.png"))
    finals = {label: values[:, -1] for label, (_, values) in curves.items()}
    paths.append(_save(plot_final(finals, title=f"final {m}", ylabel=m), out / f"final_{_safe(m)}.png"))
  return paths


def compare_workdirs(workdirs: Mapping[str, str | os.PathLike], out_dir: str | os.PathLike,
                     metrics: Sequence[str] | None = None, train_metrics: Sequence[str] | None = None,
                     band: str = "std") -> list[pathlib.Path]:
  """Comparison across methods: one label per (workdir label, hparams); final eval bars and train curves.

  Args:
    workdirs: {method label: workdir}.
    out_dir: where the PNGs go.
    metrics: eval metrics to compare (default: the scalar eval metrics all workdirs share).
    train_metrics: train metrics to overlay (default: the scalar train metrics all workdirs share).
  """
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  recs = {name: read_metrics(wd) for name, wd in workdirs.items()}

  def shared(kind):
    sets = [set(metric_names(r, kind, scalar=True)) for r in recs.values()]
    return sorted(set.intersection(*sets)) if sets else []

  paths = []
  for m in (metrics if metrics is not None else shared("eval")):
    finals = {}
    for name, r in recs.items():
      for label, v in final_values(r, m, "eval").items():
        finals[name if label == "default" else f"{name} [{label}]"] = v
    if finals:
      paths.append(_save(plot_final(finals, title=f"final {m}", ylabel=m), out / f"compare_final_{_safe(m)}.png"))
  for m in (train_metrics if train_metrics is not None else shared("train")):
    curves = {}
    for name, r in recs.items():
      for label, c in collect(r, m, "train").items():
        curves[name if label == "default" else f"{name} [{label}]"] = c
    if curves:
      paths.append(_save(plot_curves(curves, title=f"train {m}", ylabel=m, band=band),
                         out / f"compare_train_{_safe(m)}.png"))
  return paths


def main(argv: Sequence[str]) -> None:
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  fl = flags.FLAGS
  workdirs = fl.workdir
  if not workdirs:
    raise flags.ValidationError("pass --workdir=PATH (repeat it to compare several runs).")
  for wd in workdirs:
    for p in make_plots(wd, band=fl.band):
      print(p)
  if len(workdirs) > 1:
    out = fl.out or os.path.join(workdirs[0], "plots", "compare")
    labels = fl.label or [pathlib.Path(w).name for w in workdirs]
    if len(labels) != len(workdirs):
      raise flags.ValidationError(f"give one --label per --workdir ({len(workdirs)}), got {len(labels)}.")
    for p in compare_workdirs(dict(zip(labels, workdirs)), out, band=fl.band):
      print(p)


def _define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_multi_string("workdir", [], "Workdir(s) holding metrics.jsonl; repeat to compare methods.")
  flags.DEFINE_multi_string("label", [], "One label per --workdir for comparison plots (default: folder names).")
  flags.DEFINE_string("out", None, "Folder for comparison plots (default: <first workdir>/plots/compare).")
  flags.DEFINE_enum("band", "std", ["std", "minmax"], "Band over seeds: mean +- std, or min..max.")


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)

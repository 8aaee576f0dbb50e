"""Inductive-bias experiments: bits vs task dimension, vs MLP width/depth, and across hypothesis spaces.

`run(config, workdir)` loops over `config.tasks` x `config.spaces`. For each pair it samples hypothesis test
losses (GP posterior, trained MLPs, random features; each space vmapped over its hypotheses in one compiled
program), and reports I(eps) = -log P(e <= eps) in bits at every target error with three estimators:

  * ncx2      the paper's scaled non-central chi-squared MLE, with a delta-method 95% interval;
  * empirical the sample frequency with a Clopper-Pearson 95% interval (infinite when no sample reaches eps);
  * exact     (GP space only) the exact generalized chi-squared tail of the posterior-sample loss.

Target errors are a task's own `target_errors` if it names them, else `config.target_fractions` x the null
error 1/k (the MSE of predicting 0 for every one-hot output). Outputs in `workdir`: config.json,
metrics.jsonl (one record per task x space), summary.json, losses_<task>_<space>.npy (the sampled losses,
to re-estimate at other target errors), plots/*.png. The same command run again in the workdir of an
interrupted run resumes: finished (task, space) records are reused, the others sampled with the keys of the
uninterrupted run.
"""
from __future__ import annotations

import json
import math
import pathlib
import time
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from experiments.runner import check_same_config, write_text_atomic
from jaxfair import data as data_lib
from jaxfair import inductive_bias as ib
from jaxfair.training import make_sweep_mesh


# ---------------------------------------------------------------------------------------------- tasks


def _subsample(x, y, n, rng):
  if n is None or n >= len(x):
    return x, y
  idx = rng.permutation(len(x))[:n]
  return x[idx], y[idx]


def _pca(x_train, x_test, dim):
  from sklearn.decomposition import PCA  # pylint: disable=g-import-not-at-top
  if dim is None or dim >= x_train.shape[1]:
    return x_train, x_test
  pca = PCA(n_components=dim, random_state=0).fit(x_train)
  return pca.transform(x_train), pca.transform(x_test)


def make_task(spec: dict[str, Any], seed: int) -> dict[str, Any]:
  """(x_train, y_train one-hot, x_test, y_test one-hot) float32 for a task spec."""
  rng = np.random.default_rng(seed)
  kind = spec["kind"]
  if kind == "synthetic":
    # x ~ N(0, I_d); labels from a random linear teacher: argmax(x W), W ~ N(0, I).
    d, k = int(spec["dim"]), int(spec.get("num_classes", 2))
    w = rng.normal(size=(d, k))
    n, m = int(spec["n_train"]), int(spec["n_test"])
    x = rng.normal(size=(n + m, d))
    labels = np.argmax(x @ w, 1)
    xtr, xte, ytr, yte = x[:n], x[n:], labels[:n], labels[n:]
  elif kind in ("digits", "mnist", "cifar10"):
    if kind == "digits":
      ds = data_lib.load_digits(seed=seed, test_fraction=0.25)
    else:
      data_dir = spec.get("data_dir")
      if not data_dir:
        raise ValueError(f"task {spec.get('name')!r} reads {kind} files: pass --config.data_dir=DATA_DIR (the "
                         "folder with the MNIST idx files / CIFAR-10 python pickles).")
      ds = data_lib.load_mnist(data_dir) if kind == "mnist" else data_lib.load_cifar10(data_dir)
    k = ds.num_classes
    xtr, ytr = _subsample(ds.x_train.reshape(len(ds.x_train), -1), ds.y_train, spec.get("n_train"), rng)
    xte, yte = _subsample(ds.x_test.reshape(len(ds.x_test), -1), ds.y_test, spec.get("n_test"), rng)
    if kind != "digits":  # file datasets come in [0, 1]; standardise with training statistics
      xtr, xte = data_lib.standardize(xtr, xte)
    xtr, xte = _pca(xtr, xte, spec.get("dim"))
    if spec.get("dim"):  # keep the overall input scale comparable across PCA dimensions
      scale = np.sqrt(np.mean(np.sum(xtr**2, 1)) / xtr.shape[1])
      xtr, xte = xtr / scale, xte / scale
  else:
    raise ValueError(f"unknown task kind {kind!r}; use synthetic, digits, mnist or cifar10.")
  eye = np.eye(k, dtype=np.float32)
  return dict(x_train=np.asarray(xtr, np.float32), y_train=eye[ytr], x_test=np.asarray(xte, np.float32),
              y_test=eye[yte], num_classes=k, dim=int(xtr.shape[1]))


# --------------------------------------------------------------------------------------------- spaces


def _local_mesh():
  """This process's devices as a "runs" mesh (hypotheses split over them), or None with one device."""
  devices = jax.local_devices()
  return make_sweep_mesh(devices=devices) if len(devices) > 1 else None


def sample_losses(space: dict[str, Any], task: dict[str, Any], key) -> dict[str, Any]:
  """Samples hypothesis test losses for one space; returns losses, timings and (GP) the exact law."""
  kind = space["kind"]
  args = (task["x_train"], task["y_train"], task["x_test"], task["y_test"])
  out: dict[str, Any] = {}
  start = time.perf_counter()
  if kind in ("gp", "rf"):
    ls = space.get("lengthscale", "median")
    ls = ib.median_lengthscale(task["x_train"]) * float(space.get("lengthscale_factor", 1.0)) \
        if ls == "median" else float(ls)
    out["lengthscale"] = ls
    if kind == "gp":
      losses = ib.gp_posterior_losses(key, *args, num_samples=int(space["num_samples"]), lengthscale=ls,
                                      jitter=float(space.get("jitter", 1e-6)),
                                      method=space.get("method", "cholesky"),
                                      max_chunk_bytes=int(space.get("max_chunk_bytes", 1 << 27)))
      out["exact"] = ib.gp_loss_distribution(*args, lengthscale=ls, jitter=float(space.get("jitter", 1e-6)))
    else:
      losses = ib.random_feature_losses(key, *args, num_hypotheses=int(space["num_samples"]),
                                        num_features=int(space.get("num_features", 1024)), lengthscale=ls,
                                        max_chunk_bytes=int(space.get("max_chunk_bytes", 1 << 28)))
  elif kind == "nn":
    res = ib.nn_hypothesis_losses(key, args[:2], args[2:], num_hypotheses=int(space["num_samples"]),
                                  width=int(space["width"]), depth=int(space["depth"]),
                                  epochs=int(space["epochs"]), learning_rate=float(space["learning_rate"]),
                                  batch_size=space.get("batch_size"),
                                  max_chunk_bytes=space.get("max_chunk_bytes"), mesh=_local_mesh())
    losses = res.test
    train = np.asarray(res.train)
    out["train_loss_max"] = float(train.max())
    out["train_loss_median"] = float(np.median(train))
    fit_tol = space.get("fit_tolerance")
    if fit_tol is not None:  # keep only hypotheses that fit the training data
      keep = train <= float(fit_tol)
      out["fraction_fitting"] = float(keep.mean())
      losses = np.asarray(losses)[keep]
  else:
    raise ValueError(f"unknown space kind {kind!r}; use gp, nn or rf.")
  losses = np.asarray(jax.block_until_ready(losses), np.float64)
  out["seconds"] = time.perf_counter() - start
  out["losses"] = losses
  return out


def _finite(v):
  v = float(v)
  return v if math.isfinite(v) else None


def estimate(losses: np.ndarray, eps: np.ndarray, exact=None, exact_max_bits=None) -> dict[str, Any]:
  """Bits at each eps by every available estimator (JSON-ready; None for infinite)."""
  metrics: dict[str, Any] = {"_exact_max_bits": exact_max_bits}
  finite = losses[np.isfinite(losses)]
  if finite.size >= ib.fit.MIN_SAMPLES_FOR_FIT:
    r = ib.inductive_bias(finite, eps, method="ncx2")
    metrics.update(ncx2_nu=r.params["nu"], ncx2_delta=r.params["delta"], ncx2_scale=r.params["scale"])
    for name, arr in (("bits_ncx2", r.bits), ("bits_ncx2_low", r.bits_low), ("bits_ncx2_high", r.bits_high)):
      metrics[name] = [_finite(v) for v in np.atleast_1d(arr)]
  if finite.size:
    r = ib.inductive_bias(finite, eps, method="empirical")
    for name, arr in (("bits_empirical", r.bits), ("bits_empirical_low", r.bits_low),
                      ("bits_empirical_high", r.bits_high)):
      metrics[name] = [_finite(v) for v in np.atleast_1d(arr)]
  max_bits = metrics.pop("_exact_max_bits", None)
  if exact is not None and max_bits is not None and "bits_ncx2" in metrics:
    if max(b if b is not None else math.inf for b in metrics["bits_ncx2"]) > max_bits:
      exact = None  # too deep for a quick contour integral; reported as missing
      metrics["exact_skipped"] = f"ncx2 estimate above {max_bits:g} bits"
  if exact is not None:
    metrics["bits_exact"] = [_finite(v) for v in np.atleast_1d(ib.exact_inductive_bias(exact, eps).bits)]
    metrics["exact_mean"] = exact.mean
  metrics.update(loss_mean=float(finite.mean()), loss_std=float(finite.std()), loss_min=float(finite.min()),
                 num_samples=int(finite.size))
  return metrics


# ------------------------------------------------------------------------------------------------ run


def _finished_rows(workdir: pathlib.Path) -> dict[tuple[str, str], dict[str, Any]]:
  """The (task, space) records of an interrupted run in `workdir` whose losses file was saved, and rewrites
  metrics.jsonl to hold just those (dropping a line cut off by the interruption)."""
  path = workdir / "metrics.jsonl"
  rows = {}
  if path.exists():
    for line in path.read_text(encoding="utf-8").splitlines():
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        break
      if (workdir / f"losses_{row['task']}_{row['space']}.npy").exists():
        rows[(row["task"], row["space"])] = row
  write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in rows.values()))
  return rows


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs every task x space, writes metrics.jsonl, summary.json and plots; returns the summary.

  An interrupted run (no summary.json yet) run again in the same workdir with the same config resumes:
  (task, space) pairs already in metrics.jsonl are reused, the rest are sampled with the keys the
  uninterrupted run would use. A finished run is sampled afresh.
  """
  wd = pathlib.Path(workdir)
  wd.mkdir(parents=True, exist_ok=True)
  config_text = config.to_json(indent=2) + "\n"
  check_same_config(wd / "config.json", config_text, ignore=frozenset({"plot"}))
  if (wd / "summary.json").exists():  # finished: start over (new code may give new numbers)
    (wd / "metrics.jsonl").unlink(missing_ok=True)
    (wd / "summary.json").unlink()
  write_text_atomic(wd / "config.json", config_text)
  finished = _finished_rows(wd)
  fractions = np.asarray(config.target_fractions, np.float64)
  rows = []
  key = jax.random.key(int(config.seed))
  with open(wd / "metrics.jsonl", "a", encoding="utf-8") as log:
    for ti, tspec in enumerate(config.tasks):
      tspec = dict(tspec)
      if all((tspec["name"], s["name"]) in finished for s in config.spaces):
        rows.extend(finished[(tspec["name"], s["name"])] for s in config.spaces)
        print(f"{tspec['name']:>16s}: all spaces loaded from {wd / 'metrics.jsonl'}", flush=True)
        continue
      if tspec["kind"] in ("mnist", "cifar10") and not tspec.get("data_dir"):
        tspec["data_dir"] = config.get("data_dir")
      task = make_task(tspec, int(config.seed) + ti)
      eps = (np.asarray(tspec["target_errors"], np.float64) if tspec.get("target_errors")
             else fractions / task["num_classes"])
      for si, sspec in enumerate(config.spaces):
        sspec = dict(sspec)
        if (tspec["name"], sspec["name"]) in finished:
          rows.append(finished[(tspec["name"], sspec["name"])])
          continue
        sampled = sample_losses(sspec, task, jax.random.fold_in(key, 1000 * ti + si))
        np.save(wd / f"losses_{tspec['name']}_{sspec['name']}.npy", sampled["losses"])
        metrics = estimate(sampled["losses"], eps, sampled.get("exact"), sspec.get("exact_max_bits"))
        metrics.update({k: v for k, v in sampled.items() if k not in ("losses", "exact")})
        metrics["target_errors"] = eps.tolist()
        row = dict(kind="eval", step=len(rows), task=tspec["name"], space=sspec["name"], dim=task["dim"],
                   n_train=int(len(task["x_train"])), n_test=int(len(task["x_test"])),
                   space_params={k: v for k, v in sspec.items() if k != "name"},
                   task_params=tspec, metrics=metrics)
        rows.append(row)
        log.write(json.dumps(row) + "\n")
        log.flush()
        logging.info("%s / %s: %s", tspec["name"], sspec["name"], _fmt_row(metrics))
        print(f"{tspec['name']:>16s} {sspec['name']:>14s} d={task['dim']:<4d} {_fmt_row(metrics)}", flush=True)
  summary = dict(name=config.name, target_fractions=fractions.tolist(), rows=rows)
  (wd / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
  if config.get("plot"):
    make_plots(summary, wd / "plots", dict(config.plot))
  return summary


def _fmt_row(m: dict[str, Any]) -> str:
  def f(name):
    v = m.get(name)
    return "-" if v is None else "[" + ", ".join("inf" if x is None else f"{x:.1f}" for x in v) + "]"
  return (f"mean loss {m['loss_mean']:.4f}  bits ncx2 {f('bits_ncx2')} emp {f('bits_empirical')} "
          f"exact {f('bits_exact')}  ({m['seconds']:.1f}s)")


# ---------------------------------------------------------------------------------------------- plots


def make_plots(summary: dict[str, Any], out_dir: pathlib.Path, plot: dict[str, Any]) -> list[pathlib.Path]:
  """bits vs `plot['x']` ("dim", "width" or "depth"), one line per `plot['series']`, one panel per
  `plot['panel']`, one figure per target error; error bars are the ncx2 95% intervals, dashed = exact."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  out_dir.mkdir(parents=True, exist_ok=True)
  rows = summary["rows"]
  xkey, series_key, panel_key = plot.get("x", "dim"), plot.get("series", "space"), plot.get("panel", "family")

  def get(row, key):
    if key == "dim":
      return row["dim"]
    if key in ("width", "depth"):
      return row["space_params"].get(key)
    if key == "family":
      return row["task_params"].get("family", row["task_params"]["kind"])
    return row.get(key)

  paths = []
  num_eps = len(rows[0]["metrics"]["target_errors"])
  if xkey == "space":
    for ei in range(num_eps):
      fig, ax = plt.subplots(figsize=(1.3 * len(rows) + 2, 4.0))
      for i, r in enumerate(rows):
        m = r["metrics"]
        val = lambda name: np.nan if m.get(name) is None or m[name][ei] is None else m[name][ei]
        y, lo, hi = val("bits_ncx2"), val("bits_ncx2_low"), val("bits_ncx2_high")
        ax.bar(i, y, color=f"C{i}", alpha=0.7)
        ax.errorbar(i, y, yerr=[[max(y - lo, 0)], [max(hi - y, 0)]], color="k", capsize=4)
        if np.isfinite(val("bits_exact")):
          ax.plot([i - 0.4, i + 0.4], [val("bits_exact")] * 2, "k--", lw=1.5)
        if np.isfinite(val("bits_empirical")):
          ax.plot(i, val("bits_empirical"), "kx")
      ax.set_xticks(range(len(rows)), [f"{r['task']}\n{r['space']}" for r in rows], fontsize=7)
      ax.set_yscale(plot.get("yscale", "linear"))
      ax.set_ylabel("inductive bias (bits)")
      ax.set_title(f"eps = {rows[0]['metrics']['target_errors'][ei]:.4g}: ncx2 fit (bar, 95% CI), exact (--), "
                   "empirical (x)", fontsize=8)
      ax.grid(alpha=0.3, axis="y")
      fig.tight_layout()
      path = out_dir / f"bits_by_space_eps{ei}.png"
      fig.savefig(path, dpi=110)
      plt.close(fig)
      paths.append(path)
    return paths
  for ei in range(num_eps):
    panels = sorted({str(get(r, panel_key)) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    for ax, panel in zip(axes[0], panels):
      prow = [r for r in rows if str(get(r, panel_key)) == panel]
      for si, series in enumerate(sorted({str(get(r, series_key)) for r in prow})):
        srow = sorted((r for r in prow if str(get(r, series_key)) == series), key=lambda r: get(r, xkey))
        xs = np.array([get(r, xkey) for r in srow], float)
        m = lambda name: np.array([np.nan if r["metrics"].get(name) is None or r["metrics"][name][ei] is None
                                   else r["metrics"][name][ei] for r in srow], float)
        y, lo, hi = m("bits_ncx2"), m("bits_ncx2_low"), m("bits_ncx2_high")
        color = f"C{si}"
        series = series if series_key == "space" else f"{series_key} {series}"
        ax.errorbar(xs, y, yerr=[np.maximum(y - lo, 0), np.maximum(hi - y, 0)], marker="o", capsize=3,
                    color=color, label=f"{series} (ncx2 fit)")
        ye = m("bits_exact")
        if np.any(np.isfinite(ye)):
          ax.plot(xs, ye, "--", marker="x", color=color, label=f"{series} (exact)")
        yem = m("bits_empirical")
        if np.any(np.isfinite(yem)):
          ax.plot(xs, yem, ":", marker=".", color=color, alpha=0.7, label=f"{series} (empirical)")
      if xkey in ("dim", "width"):
        ax.set_xscale("log", base=2)
      ax.set_yscale(plot.get("yscale", "linear"))
      ax.set_xlabel(xkey)
      ax.set_ylabel("inductive bias (bits)")
      ax.set_title(f"{panel}: eps = {prow[0]['metrics']['target_errors'][ei]:.4g}")
      ax.grid(alpha=0.3)
      ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / f"bits_vs_{xkey}_eps{ei}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
  return paths


def markdown_table(summary: dict[str, Any]) -> str:
  """One row per task x space: bits (ncx2 fit [95% CI]; empirical [CI]; exact) at each target error."""
  def cell(m, name, i):
    v = m.get(name)
    return None if v is None else v[i]

  def fmt(v):
    return "inf" if v is None else (f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}")

  lines = ["| task | space | d | mean test MSE | eps | bits: ncx2 fit [95% CI] | bits: empirical [95% CI] | bits: exact |",
           "|---|---|---|---|---|---|---|---|"]
  for r in summary["rows"]:
    m = r["metrics"]
    for i, e in enumerate(m["target_errors"]):
      ncx2 = (f"{fmt(cell(m, 'bits_ncx2', i))} [{fmt(cell(m, 'bits_ncx2_low', i))}, "
              f"{fmt(cell(m, 'bits_ncx2_high', i))}]") if "bits_ncx2" in m else "-"
      emp = (f"{fmt(cell(m, 'bits_empirical', i))} [{fmt(cell(m, 'bits_empirical_low', i))}, "
             f"{fmt(cell(m, 'bits_empirical_high', i))}]")
      exact = fmt(cell(m, "bits_exact", i)) if "bits_exact" in m else "-"
      lines.append(f"| {r['task']} | {r['space']} | {r['dim']} | {m['loss_mean']:.4f} | {e:.3g} | {ncx2} | {emp} | "
                   f"{exact} |")
  return "\n".join(lines)

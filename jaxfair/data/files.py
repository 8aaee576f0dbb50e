"""Loaders for dataset files users download themselves: MNIST-style idx, CIFAR-10 pickles, CSV, ARFF.

Every loader names the offending file in its error: a missing file raises FileNotFoundError, a truncated or
malformed one raises ValueError.
"""
from __future__ import annotations

import gzip
import os
import pathlib
import pickle
from typing import Sequence

import numpy as np

from jaxfair.data.offline import Dataset, split

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
              np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def _existing(path: str | os.PathLike) -> pathlib.Path:
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"Data file not found: {path}")
  return path


def _open(path: pathlib.Path):
  return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def load_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads an idx file (the MNIST format), raw or gzipped: magic 0x0000, dtype code, ndim, big-endian dims."""
  path = _existing(path)
  try:
    with _open(path) as f:
      raw = f.read()
  except (OSError, EOFError) as e:
    raise ValueError(f"{path}: cannot read idx file ({e}).") from e
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
    raise ValueError(f"{path}: not an idx file (bad magic number {raw[:4].hex()}).")
  dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise ValueError(f"{path}: truncated idx header.")
  shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
  expected = header + int(np.prod(shape)) * dtype.itemsize
  if len(raw) != expected:
    raise ValueError(f"{path}: idx file has {len(raw)} bytes, its header {shape} implies {expected} "
                     "(truncated or corrupt).")
  return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
  """Writes `array` as an idx file (gzipped if the name ends in .gz)."""
  array = np.asarray(array)
  if array.dtype not in _IDX_CODES:
    raise ValueError(f"`array` dtype {array.dtype} has no idx code; use one of {list(_IDX_CODES)}.")
  header = bytes([0, 0, _IDX_CODES[array.dtype], array.ndim]) + b"".join(
      int(d).to_bytes(4, "big") for d in array.shape)
  body = array.astype(array.dtype.newbyteorder(">")).tobytes()
  path = pathlib.Path(path)
  opener = gzip.open if path.suffix == ".gz" else open
  with opener(path, "wb") as f:
    f.write(header + body)


def _find(data_dir: pathlib.Path, stem: str) -> pathlib.Path:
  for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
    if (data_dir / name).exists():
      return data_dir / name
  raise FileNotFoundError(f"{stem}[.gz] not found in {data_dir}")


def load_mnist(data_dir: str | os.PathLike, *, name: str = "mnist") -> Dataset:
  """MNIST or Fashion-MNIST from the four standard idx files in `data_dir`; images (N, 28, 28, 1) in [0, 1]."""
  data_dir = _existing(data_dir)
  arrays = {}
  for split_name, prefix in (("train", "train"), ("test", "t10k")):
    images = load_idx(_find(data_dir, f"{prefix}-images-idx3-ubyte"))
    labels = load_idx(_find(data_dir, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
      raise ValueError(f"{data_dir}: {prefix} images {images.shape} and labels {labels.shape} do not match.")
    if labels.size and not (labels.min() >= 0 and labels.max() <= 9):
      raise ValueError(f"{data_dir}: {prefix} labels span {labels.min()}..{labels.max()}, not MNIST's 0..9 (an "
                       "EMNIST-style set needs its own loader or `offline.split`).")
    arrays[split_name] = ((images[..., None] / 255.0).astype(np.float32), labels.astype(np.int32))
  return Dataset(*arrays["train"], *arrays["test"], num_classes=10, name=name)


def _load_pickle(path: pathlib.Path) -> dict:
  try:
    with open(path, "rb") as f:
      batch = pickle.load(f, encoding="bytes")
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
    raise ValueError(f"{path}: not a CIFAR-10 python pickle ({e}).") from e
  if not isinstance(batch, dict):
    raise ValueError(f"{path}: not a CIFAR-10 python pickle (holds a {type(batch).__name__}, not a dict).")
  batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
  if "data" not in batch or "labels" not in batch:
    raise ValueError(f"{path}: CIFAR-10 batch must hold 'data' and 'labels', found {sorted(batch)}.")
  data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"])
  if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
    raise ValueError(f"{path}: expected data (N, 3072) and N labels, got {data.shape} and {labels.shape}.")
  return {"data": data, "labels": labels}


def load_cifar10(data_dir: str | os.PathLike) -> Dataset:
  """CIFAR-10 python pickles (`data_batch_1..5`, `test_batch`, directly in `data_dir` or in its
  `cifar-10-batches-py/`); images (N, 32, 32, 3) in [0, 1]."""
  data_dir = _existing(data_dir)
  if (data_dir / "cifar-10-batches-py").is_dir():
    data_dir = data_dir / "cifar-10-batches-py"

  def read(names: Sequence[str]):
    batches = [_load_pickle(_existing(data_dir / n)) for n in names]
    x = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return (x / 255.0).astype(np.float32), np.concatenate([b["labels"] for b in batches]).astype(np.int32)

  return Dataset(*read([f"data_batch_{i}" for i in range(1, 6)]), *read(["test_batch"]), num_classes=10,
                 name="cifar10")


def load_csv(path: str | os.PathLike, *, label_column: int | str = -1, delimiter: str = ",",
             header: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Reads a numeric CSV table; returns `(x, y)` with `y` the label column (any values; `split` re-encodes).

  Rows with missing values are dropped (as in the EnsLoss protocol). `header=None` detects a header row.
  """
  path = _existing(path)
  lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
  if not lines:
    raise ValueError(f"{path}: empty CSV file.")
  rows = [ln.split(delimiter) for ln in lines]
  if header is None:
    # A header has a non-numeric feature cell, or a non-numeric label cell that no data row repeats (a string
    # label such as "setosa" recurs; a column name such as "target" does not). Missing-value markers prove
    # nothing.
    n = len(rows[0])
    label_idx = label_column % n if isinstance(label_column, int) and -n <= label_column < n else None
    first = [c.strip() for c in rows[0]]
    named_label = (label_idx is not None and not _is_number(first[label_idx]) and first[label_idx] not in _MISSING
                   and first[label_idx] not in {r[label_idx].strip() for r in rows[1:] if len(r) == n})
    header = isinstance(label_column, str) or named_label or any(
        not _is_number(c) and c not in _MISSING for j, c in enumerate(first) if j != label_idx)
  names = [c.strip() for c in rows[0]] if header else [str(i) for i in range(len(rows[0]))]
  rows = rows[1:] if header else rows
  if len(names) < 2:
    raise ValueError(f"{path}: one column when split on `delimiter` {delimiter!r}; pass the file's delimiter.")
  label_column = _column_index(path, label_column, names)
  if any(len(r) != len(names) for r in rows):
    bad = next(i for i, r in enumerate(rows) if len(r) != len(names))
    raise ValueError(f"{path}: row {bad + 1 + header} has {len(rows[bad])} fields, expected {len(names)}.")
  labels = np.array([r[label_column].strip() for r in rows])
  feats = [[c for j, c in enumerate(r) if j != label_column] for r in rows]
  x = np.array([[_to_float(c) for c in r] for r in feats], dtype=np.float64)
  keep = ~np.isnan(x).any(axis=1) & ~np.isin(labels, _MISSING)
  return x[keep], _maybe_numeric(labels[keep])


def load_arff(path: str | os.PathLike, *, label_column: int | str = -1) -> tuple[np.ndarray, np.ndarray]:
  """Reads an (OpenML) ARFF table with numeric features; nominal features are ordinal-encoded in their
  declared order.

  Returns `(x, y)`; rows with missing values are dropped.
  """
  from scipy.io import arff  # pylint: disable=g-import-not-at-top
  path = _existing(path)
  try:
    records, meta = arff.loadarff(str(path))
  except Exception as e:  # scipy raises several types for malformed files
    raise ValueError(f"{path}: cannot parse ARFF ({e}).") from e
  names = list(meta.names())
  label_name = names[_column_index(path, label_column, names)]
  columns = []
  for name in names:
    if name == label_name:
      continue
    col = records[name]
    if col.dtype.kind in "SO":  # nominal attribute
      values = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in col])
      cats = list(meta[name][1])  # the declared order, the same codes for every file with this header
      col = np.array([cats.index(v) if v in cats else np.nan for v in values], dtype=np.float64)
    columns.append(np.asarray(col, dtype=np.float64))
  x = np.stack(columns, axis=1) if columns else np.zeros((len(records), 0))
  labels = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in records[label_name]])
  keep = ~np.isnan(x).any(axis=1) & ~np.isin(labels, _MISSING)  # a missing numeric label reads "nan"
  return x[keep], _maybe_numeric(labels[keep])


def _column_index(path: pathlib.Path, label_column: int | str, names: list[str]) -> int:
  """`label_column` (a name, or an index that may be negative) as an index into `names`."""
  if isinstance(label_column, str):
    if label_column not in names:
      raise ValueError(f"{path}: `label_column` {label_column!r} is not among the columns {names}.")
    return names.index(label_column)
  if not -len(names) <= label_column < len(names):
    raise ValueError(f"{path}: `label_column` {label_column} is out of range for {len(names)} columns "
                     f"(use 0..{len(names) - 1}, or -1 for the last).")
  return label_column % len(names)


def load_table(path: str | os.PathLike, *, label_column: int | str = -1, seed: int = 0,
               test_fraction: float = 0.3) -> Dataset:
  """A CSV or ARFF file as a standardised, seeded train/test `Dataset`."""
  path = pathlib.Path(path)
  reader = load_arff if path.suffix.lower() == ".arff" else load_csv
  x, y = reader(path, label_column=label_column)
  return split(x, y, seed=seed, test_fraction=test_fraction, name=path.stem)


def _is_number(s: str) -> bool:
  try:
    float(s)
    return True
  except ValueError:
    return False


_MISSING = ("", "?", "NA", "nan", "NaN")  # missing-value markers, in features and labels


def _to_float(s: str) -> float:
  s = s.strip()
  if s in _MISSING:
    return np.nan
  try:
    return float(s)
  except ValueError as e:
    raise ValueError(f"non-numeric feature value {s!r} (only the label column may be categorical).") from e


def _maybe_numeric(labels: np.ndarray) -> np.ndarray:
  try:
    as_float = labels.astype(np.float64)
  except ValueError:
    return labels
  return as_float.astype(np.int64) if np.all(as_float == np.round(as_float)) else as_float

"""An offline character-level text corpus for small language models, with no download.

Where the text comes from. The default corpus is GENERATED at load time from text already on every machine
that runs jaxfair: the docstrings of a fixed list of pure-Python modules of the running interpreter's
standard library, read from their source files with `ast` (nothing is imported or executed). Nothing is
shipped with jaxfair and nothing is downloaded. Users can point `load_text_file` at any UTF-8 file instead.

Determinism. The corpus is a pure function of the interpreter's standard-library sources and the arguments:
files are read in a fixed order, docstrings in source order, duplicates removed (first occurrence kept), and
the train/validation assignment of each document is a SHA-256 hash of (seed, document text) — no RNG state,
no `hash()` (which is salted per process). The same Python version gives the same corpus on every machine;
`TextDataset.fingerprint` (SHA-256 of both splits) tells two corpora apart (e.g. Python 3.11 vs 3.12).

Splits never overlap: a document (one docstring) goes entirely to train or to validation, and since the
assignment hashes the document's TEXT, identical docstrings (which are deduplicated anyway) cannot land in
both. Each split's documents are joined by a blank line into one character stream, encoded with a fixed
96-symbol vocabulary (newline + printable ASCII; tabs become spaces, other characters are dropped), and cut
into fixed-length windows: `x[i] = ids[s_i : s_i + T]`, `y[i] = ids[s_i + 1 : s_i + T + 1]` (next-character
targets), `s_i = i * stride` (validation always uses stride T: disjoint windows).

The result is a `TextDataset` with `x_train / y_train / x_test / y_test` integer arrays of shape (N, T), the
fields the training core indexes (`jaxfair.training.make_train`); `x_test` is the validation split.

Example:

  data = load_stdlib_text(seq_len=64)
  data.x_train.shape, data.vocab_size      # ((N, 64), 96)
  decode(data.x_train[0])                  # the first 64 characters of the training stream
"""
from __future__ import annotations

import ast
import functools
import hashlib
import os
import pathlib
import sysconfig
from typing import NamedTuple, Sequence

import numpy as np

# Fixed vocabulary: newline then the 95 printable ASCII characters (space .. '~'). Index = token id.
VOCAB = "\n" + "".join(chr(c) for c in range(32, 127))
VOCAB_SIZE = len(VOCAB)  # 96
_CHAR_TO_ID = np.full(128, -1, np.int32)
for _i, _c in enumerate(VOCAB):
  _CHAR_TO_ID[ord(_c)] = _i

# Pure-Python, well-documented standard-library modules (files or packages, relative to the stdlib folder),
# present in CPython 3.9-3.13. A name ending in "/" means every .py file of that package, recursively, in
# sorted order, except test folders. Missing entries (another Python version) are skipped and listed in
# `TextDataset.missing`.
DEFAULT_SOURCES = (
    "_pydecimal.py", "_pyio.py", "abc.py", "argparse.py", "ast.py", "asyncio/", "base64.py", "bdb.py",
    "calendar.py", "codecs.py", "collections/", "concurrent/", "configparser.py", "contextlib.py", "copy.py",
    "csv.py", "dataclasses.py", "datetime.py", "difflib.py", "doctest.py", "email/", "enum.py", "fnmatch.py",
    "fractions.py", "ftplib.py", "functools.py", "glob.py", "gzip.py", "heapq.py", "http/", "imaplib.py",
    "importlib/", "inspect.py", "ipaddress.py", "json/", "locale.py", "logging/", "mailbox.py",
    "multiprocessing/", "numbers.py", "operator.py", "optparse.py", "os.py", "pathlib.py", "pdb.py",
    "pickle.py", "plistlib.py", "posixpath.py", "pprint.py", "pydoc.py", "random.py", "sched.py",
    "selectors.py", "shelve.py", "shutil.py", "smtplib.py", "socket.py", "socketserver.py", "sqlite3/",
    "ssl.py", "statistics.py", "string.py", "subprocess.py", "tarfile.py", "tempfile.py", "textwrap.py",
    "threading.py", "tokenize.py", "trace.py", "traceback.py", "typing.py", "unittest/", "urllib/",
    "uuid.py", "warnings.py", "weakref.py", "xml/", "zipfile.py",
)
# A handful of small files for quick runs and tests.
SMALL_SOURCES = ("textwrap.py", "string.py", "heapq.py", "fractions.py", "calendar.py", "statistics.py")


class TextDataset(NamedTuple):
  """Fixed-length next-character windows; `x_test` / `y_test` are the validation split.

  Attributes:
    x_train, y_train: (N_train, T) int32 inputs and next-character targets.
    x_test, y_test: (N_val, T) int32 validation windows (disjoint, stride T).
    vocab: the characters, index = token id (`VOCAB`).
    seq_len: T.
    name: a short description of the source.
    fingerprint: the first 16 hex digits of SHA-256 over both encoded splits (identifies the corpus).
    num_documents: (train, validation) document counts.
    num_chars: (train, validation) characters in each split's stream.
    missing: listed sources not found in this interpreter's standard library (skipped).
  """
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  vocab: str
  seq_len: int
  name: str
  fingerprint: str
  num_documents: tuple[int, int]
  num_chars: tuple[int, int]
  missing: tuple[str, ...] = ()

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  @property
  def x_val(self) -> np.ndarray:
    return self.x_test

  @property
  def y_val(self) -> np.ndarray:
    return self.y_test

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.x_train.shape[1:])


def normalize_text(text: str) -> str:
  """Maps text onto the vocabulary: CRLF/CR -> LF, tab -> 4 spaces, characters outside `VOCAB` dropped."""
  text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
  return "".join(c for c in text if c in _VOCAB_SET)


_VOCAB_SET = frozenset(VOCAB)


def encode(text: str) -> np.ndarray:
  """Characters -> int32 ids. Raises on a character outside the vocabulary (use `normalize_text` first)."""
  codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
  ids = np.where(codes < 128, _CHAR_TO_ID[np.minimum(codes, 127)], -1)
  if (ids < 0).any():
    bad = text[int(np.argmax(ids < 0))]
    raise ValueError(f"character {bad!r} is not in the vocabulary; pass the text through normalize_text().")
  return ids.astype(np.int32)


def decode(ids: Sequence[int] | np.ndarray) -> str:
  """int ids -> characters (negative ids, e.g. ignored labels, are skipped)."""
  return "".join(VOCAB[int(i)] for i in np.asarray(ids).reshape(-1) if i >= 0)


def stdlib_dir() -> pathlib.Path:
  """The running interpreter's standard-library folder (where `os.py` lives)."""
  return pathlib.Path(sysconfig.get_paths()["stdlib"])


def _source_files(sources: Sequence[str], root: pathlib.Path) -> tuple[list[pathlib.Path], list[str]]:
  files, missing = [], []
  for src in sources:
    path = root / src
    if src.endswith("/"):
      if not path.is_dir():
        missing.append(src)
        continue
      found = sorted(p for p in path.rglob("*.py")
                     if not any(part.startswith("test") for part in p.relative_to(path).parts))
      files.extend(found)
    elif path.is_file():
      files.append(path)
    else:
      missing.append(src)
  return files, missing


_DEFS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_STMT_LISTS = ("body", "handlers", "orelse", "finalbody", "cases")


def _definitions(stmts: list[ast.AST]):
  """Class / function definitions among statements, recursing through compound statements (if, try, with,
  class and function bodies...) but never into expressions: docstrings live only there."""
  for node in stmts:
    if isinstance(node, _DEFS):
      yield node
    for field in _STMT_LISTS:
      children = getattr(node, field, None)
      if isinstance(children, list):
        yield from _definitions(children)


def _file_docstrings(path: pathlib.Path) -> list[str]:
  """Docstrings of a source file (module, classes, functions) in source order, via `ast` (no import)."""
  try:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
  except (SyntaxError, UnicodeDecodeError, ValueError):
    return []
  docs = []
  for node in [tree, *_definitions(tree.body)]:
    doc = ast.get_docstring(node, clean=True)
    if doc:
      docs.append(doc)
  return docs


@functools.lru_cache(maxsize=8)
def _stdlib_documents_cached(sources: tuple[str, ...], content: str, root: str) -> tuple[tuple[str, ...],
                                                                                          tuple[str, ...]]:
  files, missing = _source_files(sources, pathlib.Path(root))
  docs = []
  for f in files:
    if content == "docstrings":
      docs.extend(_file_docstrings(f))
    else:
      try:
        docs.append(f.read_text(encoding="utf-8"))
      except UnicodeDecodeError:
        continue
  return tuple(docs), tuple(missing)


def stdlib_documents(sources: Sequence[str] = DEFAULT_SOURCES, content: str = "docstrings") -> tuple[
    list[str], list[str]]:
  """Documents from the interpreter's standard library: `(documents, missing sources)`.

  Args:
    sources: files / packages ("pkg/") relative to the stdlib folder (default `DEFAULT_SOURCES`).
    content: "docstrings" (each module / class / function docstring is one document) or "source" (each
      whole file is one document: Python code).
  """
  if content not in ("docstrings", "source"):
    raise ValueError(f"`content` must be 'docstrings' or 'source', got {content!r}.")
  if isinstance(sources, str):
    raise TypeError(f"`sources` must be a sequence of file names, got the string {sources!r}; wrap it in a "
                    "tuple.")
  docs, missing = _stdlib_documents_cached(tuple(sources), content, str(stdlib_dir()))
  return list(docs), list(missing)


def _is_validation(doc: str, seed: int, val_fraction: float) -> bool:
  digest = hashlib.sha256(f"{seed}\x00{doc}".encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "little") / 2.0**64 < val_fraction


def split_documents(documents: Sequence[str], val_fraction: float = 0.1, seed: int = 0) -> tuple[list[str],
                                                                                                   list[str]]:
  """Normalises, deduplicates (first occurrence kept, order preserved) and splits documents by a hash of
  (seed, text): a document is in validation iff its hash, read as a number in [0, 1), is < val_fraction."""
  if not 0.0 < val_fraction < 1.0:
    raise ValueError(f"`val_fraction` must be in (0, 1), got {val_fraction}.")
  seen, train, val = set(), [], []
  for doc in documents:
    doc = normalize_text(doc).strip()
    if not doc or doc in seen:
      continue
    seen.add(doc)
    (val if _is_validation(doc, seed, val_fraction) else train).append(doc)
  return train, val


def windows(ids: np.ndarray, seq_len: int, stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Next-token windows of a stream: x[i] = ids[s_i : s_i+T], y[i] = ids[s_i+1 : s_i+T+1], s_i = i*stride.

  Windows that would run past the end are dropped (so y is always defined).
  """
  if seq_len < 1:
    raise ValueError(f"`seq_len` must be >= 1, got {seq_len}.")
  stride = seq_len if stride is None else stride
  if stride < 1:
    raise ValueError(f"`stride` must be >= 1, got {stride}.")
  ids = np.asarray(ids, np.int32)
  num = (len(ids) - seq_len - 1) // stride + 1 if len(ids) > seq_len else 0
  if num <= 0:
    return np.zeros((0, seq_len), np.int32), np.zeros((0, seq_len), np.int32)
  starts = np.arange(num) * stride
  idx = starts[:, None] + np.arange(seq_len)[None, :]
  return ids[idx], ids[idx + 1]


def text_dataset(documents: Sequence[str], *, seq_len: int = 64, stride: int | None = None,
                 val_fraction: float = 0.1, seed: int = 0, max_chars: int | None = None,
                 name: str = "text", missing: Sequence[str] = ()) -> TextDataset:
  """Builds a `TextDataset` from raw documents (see the module docstring for every step).

  Args:
    documents: raw texts; each goes entirely to train or validation.
    seq_len: window length T.
    stride: step between training-window starts (default T: disjoint windows; T // 2: half overlap).
    val_fraction: expected fraction of documents in validation.
    seed: changes the document split (not the order).
    max_chars: keep only the first documents (in order) up to about this many characters in total, before
      the split (for quick runs).
    name: description stored in the dataset.
    missing: passed through to `TextDataset.missing`.
  """
  if seq_len < 1:
    raise ValueError(f"`seq_len` must be >= 1, got {seq_len}.")
  docs = list(documents)
  if max_chars is not None:
    if max_chars <= 0:
      raise ValueError(f"`max_chars` must be positive, got {max_chars}.")
    kept, total = [], 0
    for d in docs:
      if total >= max_chars:
        break
      kept.append(d)
      total += len(d)
    docs = kept
  train_docs, val_docs = split_documents(docs, val_fraction, seed)
  train_ids = encode("\n\n".join(train_docs))
  val_ids = encode("\n\n".join(val_docs))
  x_train, y_train = windows(train_ids, seq_len, stride)
  x_val, y_val = windows(val_ids, seq_len, seq_len)
  if len(x_train) == 0 or len(x_val) == 0:
    raise ValueError(f"the corpus is too small for seq_len={seq_len}: {len(train_ids)} training and "
                     f"{len(val_ids)} validation characters give {len(x_train)} / {len(x_val)} windows. Use "
                     "more text (larger `max_chars`, more sources), a larger `val_fraction` or a shorter "
                     "`seq_len`.")
  digest = hashlib.sha256(train_ids.tobytes() + b"|" + val_ids.tobytes()).hexdigest()[:16]
  return TextDataset(x_train, y_train, x_val, y_val, VOCAB, int(seq_len), name, digest,
                     (len(train_docs), len(val_docs)), (len(train_ids), len(val_ids)), tuple(missing))


def load_stdlib_text(seq_len: int = 64, *, stride: int | None = None, val_fraction: float = 0.1, seed: int = 0,
                     sources: Sequence[str] | str = "default", content: str = "docstrings",
                     max_chars: int | None = None) -> TextDataset:
  """The default offline corpus: docstrings (or sources) of standard-library modules of this interpreter.

  Args:
    seq_len: window length T.
    stride: training-window stride (default T).
    val_fraction: fraction of documents held out for validation (by content hash).
    seed: split seed.
    sources: "default" (`DEFAULT_SOURCES`, about 1.07M characters of docstrings on CPython 3.11), "small"
      (`SMALL_SOURCES`) or a sequence of stdlib-relative files / packages ("pkg/").
    content: "docstrings" (English prose with code examples) or "source" (whole files: Python code).
    max_chars: truncate the document list to about this many characters (quick runs).
  """
  if isinstance(sources, str):
    if sources not in ("default", "small"):
      raise ValueError(f"`sources` must be 'default', 'small' or a sequence of stdlib files, got {sources!r}.")
    sources = DEFAULT_SOURCES if sources == "default" else SMALL_SOURCES
  docs, missing = stdlib_documents(tuple(sources), content)
  if not docs:
    raise ValueError(f"no {content} found in {stdlib_dir()} for sources {list(sources)}; is this a CPython "
                     "with its standard-library sources installed? Use load_text_file(path) instead.")
  import platform  # pylint: disable=g-import-not-at-top
  name = f"python{platform.python_version()}-stdlib-{content}"
  return text_dataset(docs, seq_len=seq_len, stride=stride, val_fraction=val_fraction, seed=seed,
                      max_chars=max_chars, name=name, missing=missing)


def load_text_file(path: str | os.PathLike, seq_len: int = 64, *, stride: int | None = None,
                   val_fraction: float = 0.1, seed: int = 0, max_chars: int | None = None) -> TextDataset:
  """A UTF-8 text file as a corpus; documents are its paragraphs (separated by blank lines)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"text corpus file {str(path)!r} does not exist.")
  text = path.read_text(encoding="utf-8").replace("\r\n", "\n")
  docs = [p for p in text.split("\n\n") if p.strip()]
  return text_dataset(docs, seq_len=seq_len, stride=stride, val_fraction=val_fraction, seed=seed,
                      max_chars=max_chars, name=path.name)

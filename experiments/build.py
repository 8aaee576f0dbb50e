"""Build experiment components named by import path in configs, so nobody edits a registry.

A component spec is one of

* ``None``: no component (the experiment uses its default);
* ``"pkg.module.name"``: the object itself (a function, a class, a constant), not called;
* ``{"fn": "pkg.module.name", "kwargs": {...}}``: ``name(**kwargs, **injected)``, called;
* ``{"fn": ..., "kwargs": {...}, "partial": True}``: ``functools.partial(name, **kwargs)``, not called (a loss
  with a fixed parameter, say ``focal`` with ``gamma=1``).

Values inside ``kwargs`` that are themselves specs with an ``"fn"`` key are built first (nested components).
``injected`` are keyword arguments the experiment supplies (e.g. ``input_shape`` and ``num_outputs`` for a
model, ``model`` for an evaluator); each is passed only if the callable accepts it (by name or ``**kwargs``),
and an explicit entry in ``kwargs`` wins.

Example config entries::

  config.model = dict(fn="jaxfair.models.mlp", kwargs=dict(width=128, depth=2))
  config.loss = "jaxfair.losses.softmax_cross_entropy"
  config.optimizer = dict(fn="optax.adam", kwargs=dict(b1=0.9))
"""
from __future__ import annotations

import functools
import importlib
import inspect
from typing import Any, Mapping

SPEC_KEYS = frozenset({"fn", "kwargs", "partial"})


def resolve(path: str) -> Any:
  """Imports `pkg.module.attr[.attr...]` and returns the object.

  An attribute wins over a submodule of the same name (`jaxfair.optim.adamp` is the function the package
  exports, not the module `jaxfair/optim/adamp.py`); a path naming only a module returns the module.
  """
  if not isinstance(path, str) or not path or path.startswith(".") or path.endswith("."):
    raise ValueError(f"a component must be named by an import path like 'jaxfair.models.mlp', got {path!r}.")
  parts = path.split(".")
  error = None
  for i in [*range(len(parts) - 1, 0, -1), len(parts)]:
    module_name = ".".join(parts[:i])
    try:
      obj = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
      if e.name is not None and not module_name.startswith(e.name) and e.name != module_name:
        raise  # the module exists but one of its own imports is missing: show that error
      error = error or e
      continue
    for attr in parts[i:]:
      if not hasattr(obj, attr):
        error = error or ValueError(f"module {module_name!r} has no attribute path {'.'.join(parts[i:])!r}")
        break
      obj = getattr(obj, attr)
    else:
      return obj
  raise ValueError(f"cannot import or resolve {path!r} ({error}).")


def is_spec(value: Any) -> bool:
  """A dict-like with an "fn" key (and only spec keys)."""
  return _is_mapping(value) and "fn" in value and set(value.keys()) <= SPEC_KEYS


def _is_mapping(value: Any) -> bool:
  return isinstance(value, Mapping) or (hasattr(value, "keys") and hasattr(value, "__getitem__")
                                         and not isinstance(value, (str, bytes)))


def _to_python(value: Any) -> Any:
  """ConfigDicts / FrozenConfigDicts / tuples -> plain dicts, leaving specs to `build`."""
  if hasattr(value, "to_dict"):
    return value.to_dict()
  return value


def accepts(fn: Any, name: str) -> bool:
  """Whether calling `fn(name=...)` is allowed by its signature."""
  try:
    params = inspect.signature(fn).parameters
  except (TypeError, ValueError):
    return False
  return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def build(spec: Any, **injected: Any) -> Any:
  """Builds a component from its spec (see the module docstring). `injected` kwargs go where accepted."""
  spec = _to_python(spec)
  if spec is None:
    return None
  if isinstance(spec, str):
    return resolve(spec)
  if not _is_mapping(spec):
    raise TypeError(f"a component spec must be None, an import path string, or dict(fn=..., kwargs=...); "
                    f"got {type(spec).__name__}: {spec!r}.")
  unknown = set(spec.keys()) - SPEC_KEYS
  if "fn" not in spec or unknown:
    raise ValueError(f"a component spec dict needs an 'fn' import path and may have 'kwargs' and 'partial'; "
                     f"got keys {sorted(spec.keys())}.")
  fn = resolve(spec["fn"])
  kwargs = dict(_to_python(spec.get("kwargs")) or {})
  kwargs = {k: (build(v) if is_spec(_to_python(v)) else _to_python(v)) for k, v in kwargs.items()}
  kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()}
  for name, value in injected.items():
    if name not in kwargs and accepts(fn, name):
      kwargs[name] = value
  if spec.get("partial", False):
    return functools.partial(fn, **kwargs)
  if not callable(fn):
    raise TypeError(f"{spec['fn']!r} is not callable; name it as a plain string to use the object itself.")
  try:
    return fn(**kwargs)
  except TypeError as e:
    raise TypeError(f"building {spec['fn']!r} with kwargs {sorted(kwargs)} failed: {e}") from e

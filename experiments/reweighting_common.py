"""Shared pieces of the reweighting experiments: weighting rules by method name, JSON-lines logging, plots."""
from __future__ import annotations

import json
import pathlib
from typing import Any, Mapping

import numpy as np

from jaxfair import reweighting as rw
from jaxfair.training import components


def make_rule(method: str, settings: Mapping[str, Any]) -> components.WeightingRule:
  """A WeightingRule for a method name: uniform | linupper | quadratic | extremes | linear | kl_dro |
  ema_kl_dro | cvar, with temperatures from `settings` (r_<method> or r, alpha, beta)."""
  r = float(settings.get(f"r_{method}", settings.get("r", 1.0)))
  if method == "uniform":
    return components.uniform()
  if method in rw.STRATEGIES:
    return rw.loss_based_rule(method, r, float(settings.get("delta", 1.0)))
  if method == "kl_dro":
    return rw.kl_dro_rule(r)
  if method == "ema_kl_dro":
    return rw.ema_kl_dro_rule(r, float(settings.get("beta", 0.01)))
  if method == "cvar":
    return rw.cvar_rule(float(settings.get("alpha", 0.2)))
  raise ValueError(f"unknown method {method!r}; choose from uniform, {', '.join(rw.STRATEGIES)}, kl_dro, "
                   "ema_kl_dro, cvar.")


def method_label(method: str, settings: Mapping[str, Any]) -> str:
  if method == "uniform":
    return "uniform"
  if method == "cvar":
    return f"cvar(alpha={settings.get('alpha', 0.2):g})"
  r = settings.get(f"r_{method}", settings.get("r", 1.0))
  return f"{method}(r={r:g})"


def finite_or_none(v: float) -> float | None:
  return float(v) if np.isfinite(v) else None


class JsonLines:
  """Appends records to workdir/metrics.jsonl (truncating any previous run's log)."""

  def __init__(self, workdir: pathlib.Path):
    self.path = workdir / "metrics.jsonl"
    self.file = open(self.path, "w", encoding="utf-8")

  def write(self, record: dict[str, Any]) -> None:
    self.file.write(json.dumps(record) + "\n")

  def close(self) -> None:
    self.file.close()


def config_json(config) -> str:
  return json.dumps(config.to_dict(), indent=2, default=str) + "\n"


def write_config(workdir: pathlib.Path, config) -> None:
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(config_json(config))


def plt():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as pyplot  # pylint: disable=g-import-not-at-top
  return pyplot


def switch_rule(rules: list[components.WeightingRule]) -> components.WeightingRule:
  """One rule that runs `rules[index]`, with the index carried in the rule state (set per run after init).

  Lets one compiled program train several weighting methods side by side along the vmapped run axis: the
  state is `(index, (state_0, state_1, ...))`; every rule runs each step (cheap next to the model) and the
  selected weights are used. Set the index with `with_rule_index`.
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  def init():
    return (jnp.zeros((), jnp.int32), tuple(r.init() for r in rules))

  def apply(losses, mask, state):
    index, inner = state
    outs = [r.apply(losses, mask, s) for r, s in zip(rules, inner)]
    weights = jnp.stack([w for w, _ in outs])[index]
    return weights, (index, tuple(s for _, s in outs))

  return components.WeightingRule(init, apply)


def with_rule_index(train_state, index):
  """Sets the switch index of a `switch_rule` state inside a (vmapped) TrainState."""
  _, inner = train_state.rule_state
  return train_state._replace(rule_state=(index, inner))

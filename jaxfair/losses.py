"""Per-example losses: multiclass cross-entropy, squared error, and binary margin losses.

Binary losses take logits `o` of shape (B,) (or (B, 1)) and labels `t` in {0, 1}; with y = 2t - 1 and the
margin z = y * o they are functions phi(z) of the margin (Bartlett, Jordan & McAuliffe, 2006):
logistic log(1 + e^-z), hinge max(0, 1 - z), exponential e^-z, squared hinge max(0, 1 - z)^2 and focal
-(1 - sigmoid(z))^gamma log sigmoid(z) (Lin et al., 2017). All return one loss per example, shape (B,).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxfair import _checks

Array = jax.Array


def _binary_margins(logits: Array, labels: Array) -> Array:
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  if logits.ndim == 2 and logits.shape[-1] == 1:
    logits = logits[:, 0]
  if labels.ndim == 2 and labels.shape[-1] == 1:
    labels = labels[:, 0]
  _checks.check_ndim(logits, 1, "logits")
  # (B,) labels only: (B, 1) * (B,) would silently broadcast to a (B, B) loss matrix.
  _checks.check_ndim(labels, 1, "labels")
  _checks.check_same_leading(logits, labels, "logits", "labels")
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise ValueError(f"`logits` must be floating point, got dtype {logits.dtype}.")
  _checks.check_binary_labels(labels)
  y = 2.0 * labels.astype(logits.dtype) - 1.0
  return y * logits


def margins(logits: Array, labels: Array) -> Array:
  """z = (2t - 1) * o for labels t in {0, 1}."""
  return _binary_margins(logits, labels)


def logistic(logits: Array, labels: Array) -> Array:
  """Binary cross-entropy with logits, log(1 + exp(-z)), computed stably."""
  return jax.nn.softplus(-_binary_margins(logits, labels))


def hinge(logits: Array, labels: Array) -> Array:
  """max(0, 1 - z)."""
  return jax.nn.relu(1.0 - _binary_margins(logits, labels))


def exponential(logits: Array, labels: Array) -> Array:
  """exp(-z) (AdaBoost's loss; unbounded gradient — the EnsLoss protocol clips its grad norm at 10)."""
  return jnp.exp(-_binary_margins(logits, labels))


def squared_hinge(logits: Array, labels: Array) -> Array:
  """max(0, 1 - z)^2."""
  return jnp.square(jax.nn.relu(1.0 - _binary_margins(logits, labels)))


def focal(logits: Array, labels: Array, gamma: float = 2.0) -> Array:
  """-(1 - p)^gamma log p with p = sigmoid(z) (Lin et al., 2017); gamma = 0 is the logistic loss."""
  _checks.check_positive(gamma, "gamma", allow_zero=True)
  z = _binary_margins(logits, labels)
  log_p = jax.nn.log_sigmoid(z)
  return -jnp.power(-jnp.expm1(log_p), gamma) * log_p


def zero_one(logits: Array, labels: Array) -> Array:
  """0-1 error with ties counted as errors: 1[z <= 0]."""
  z = _binary_margins(logits, labels)
  return (z <= 0).astype(z.dtype)


def softmax_cross_entropy(logits: Array, labels: Array) -> Array:
  """-log softmax(logits)[label] for integer labels; logits (B, K), labels (B,)."""
  _checks.check_ndim(logits, 2, "logits")
  _checks.check_ndim(labels, 1, "labels")
  _checks.check_same_leading(logits, labels, "logits", "labels")
  _checks.check_class_labels(labels, logits.shape[-1])
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.take_along_axis(log_probs, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]


def mean_squared_error(predictions: Array, targets: Array) -> Array:
  """Mean over outputs of (prediction - target)^2, one value per example; shapes (B, K) or (B,)."""
  if predictions.shape != targets.shape:
    raise ValueError(f"`predictions` {predictions.shape} and `targets` {targets.shape} must have the same shape.")
  err = jnp.square(predictions - targets)
  return err.reshape(err.shape[0], -1).mean(axis=-1)


def one_hot_mean_squared_error(predictions: Array, labels: Array) -> Array:
  """Squared error to one-hot targets (classification regressed onto one-hot labels)."""
  _checks.check_class_labels(labels, predictions.shape[-1])
  return mean_squared_error(predictions, jax.nn.one_hot(labels, predictions.shape[-1], dtype=predictions.dtype))


BINARY_LOSSES = {"logistic": logistic, "hinge": hinge, "exponential": exponential,
                 "squared_hinge": squared_hinge, "focal": focal}

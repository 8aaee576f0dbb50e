r"""AdamP and SGDP: Adam and SGD with the radial component of the update projected out on scale-invariant
weights (Heo et al., ICLR 2021), as optax gradient transformations.

Why: for a weight followed by a normalisation layer, :math:`f(cw) = f(w)`, so :math:`w \cdot \nabla f(w) = 0`
and plain GD grows :math:`\|w\|` (:math:`\|w_{t+1}\|^2 = \|w_t\|^2 + \eta^2 \|\nabla f\|^2`); momentum adds a
positive cross term and grows it much faster, which shrinks the effective step :math:`\eta / \|w\|^2`.
AdamP/SGDP detect such weights (the gradient is nearly orthogonal to them) and remove the radial part of the
momentum update, so the norm grows no faster than under plain GD. Weight decay on those weights is scaled by
``wd_ratio``.

Both transforms follow the reference implementation (clovaai/AdamP v0.3.0 = ``timm.optim.AdamP/SGDP``); the
projection and its decay ratio depend on the raw gradient and pre-step weights, so they live inside
``scale_by_adamp``/``scale_by_sgdp`` together with the (projection-dependent) decoupled weight decay.

References:
  Heo, Chun, Oh, Han, Yun, Kim, Uh, Ha, "AdamP: Slowing Down the Slowdown for Momentum Optimizers on
  Scale-invariant Weights", ICLR 2021. https://arxiv.org/abs/2006.08217
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxfair.optim import _common

Array = jax.Array
ScalarOrSchedule = optax.ScalarOrSchedule


class ScaleByAdamPState(NamedTuple):
  """State of `scale_by_adamp`: step count and the two moment trees (param dtype)."""
  count: Array  # int32, the number of updates done
  mu: optax.Updates
  nu: optax.Updates


class ScaleBySGDPState(NamedTuple):
  """State of `scale_by_sgdp`: the momentum buffer (param dtype)."""
  momentum: optax.Updates


def _select(flag: Any, a: Array, b: Array) -> Array:
  """`a if flag else b` for a Python bool (static) or an array flag (branchless)."""
  if isinstance(flag, bool):
    return a if flag else b
  return jnp.where(jnp.asarray(flag), a, b)


def _check_projection(eps, weight_decay, delta, wd_ratio, channel_axis) -> None:
  """The hyperparameters AdamP and SGDP share."""
  for value, name in ((eps, "eps"), (weight_decay, "weight_decay"), (delta, "delta"), (wd_ratio, "wd_ratio")):
    _common.check_nonnegative(value, name)
  _common.check_channel_axis(channel_axis)


def _check_adamp(b1, b2, eps, weight_decay, delta, wd_ratio, channel_axis) -> None:
  _common.check_unit_interval(b1, "b1")
  _common.check_unit_interval(b2, "b2")
  _check_projection(eps, weight_decay, delta, wd_ratio, channel_axis)


def scale_by_adamp(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
                   delta: float = 0.1, wd_ratio: float = 0.1, nesterov: bool = False,
                   channel_axis: int = -1) -> optax.GradientTransformation:
  r"""Rescales updates by AdamP's projected Adam direction plus its projection-scaled weight decay.

  Per leaf :math:`p` with gradient :math:`g` and step :math:`t \ge 1`:

  .. math::
    m_t = \beta_1 m_{t-1} + (1-\beta_1) g, \quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g^2, \\
    \hat m_t = m_t / (1-\beta_1^t), \quad \hat v_t = v_t / (1-\beta_2^t), \\
    u = \Pi_{p,g}\big(\hat n_t / (\sqrt{\hat v_t} + \epsilon)\big) + \lambda\, r\, p,

  where :math:`\hat n_t = \hat m_t` (or :math:`(\beta_1 m_t + (1-\beta_1) g)/(1-\beta_1^t)` with ``nesterov``),
  :math:`\Pi` is the projection of `jaxfair.optim._common.project` (identity on leaves with ndim < 2) and
  :math:`r` is ``wd_ratio`` when it fired, else 1. Chained with ``scale_by_learning_rate(lr)`` this equals the
  reference update ``p <- p (1 - lr wd r); p <- p - lr/(1-b1^t) * perturb``.

  Args:
    b1: exponential decay rate of the first moment, in [0, 1).
    b2: exponential decay rate of the second moment, in [0, 1).
    eps: added to the bias-corrected root second moment, and the norm floor of the projection (>= 0).
    weight_decay: decoupled weight-decay coefficient :math:`\lambda` (>= 0; 0 is a no-op).
    delta: cosine threshold of the scale-invariance test (>= 0).
    wd_ratio: weight-decay multiplier for projected leaves (>= 0).
    nesterov: use the Nesterov first moment of the reference (not optax's NAdam form).
    channel_axis: output-channel axis of >= 2-D leaves: -1 for flax layouts, 0 for PyTorch layouts.

  Returns:
    An `optax.GradientTransformation` whose `update` needs `params`.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from jaxfair import optim
    >>> tx = optax.chain(optim.scale_by_adamp(weight_decay=1e-2), optax.scale_by_learning_rate(1e-3))
    >>> params = {"w": jnp.ones((3, 4))}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": jnp.ones((3, 4))}, state, params)

  References:
    Heo et al., "AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant Weights",
    ICLR 2021. https://arxiv.org/abs/2006.08217
  """
  _check_adamp(b1, b2, eps, weight_decay, delta, wd_ratio, channel_axis)

  def init_fn(params):
    mu = jax.tree.map(jnp.zeros_like, params)
    nu = jax.tree.map(jnp.zeros_like, params)
    return ScaleByAdamPState(count=jnp.zeros([], jnp.int32), mu=mu, nu=nu)

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("scale_by_adamp needs `params` in `update(grads, state, params)` (the projection tests "
                       "the gradient against the weights).")
    count = optax.safe_increment(state.count)

    def leaf(g, m, v, p):
      cd = _common.compute_dtype(g.dtype)
      b1_, b2_, eps_, wd_ = (_common.as_scalar(x, cd) for x in (b1, b2, eps, weight_decay))
      t = count.astype(cd)
      bc1 = 1 - b1_ ** t
      rsqrt_bc2 = jax.lax.rsqrt(1 - b2_ ** t)
      gc, pc = g.astype(cd), p.astype(cd)
      m_new = b1_ * m.astype(cd) + (1 - b1_) * gc
      v_new = b2_ * v.astype(cd) + (1 - b2_) * gc * gc

      def direction(m, v, g, b1, rsqrt_bc2, eps):
        num = _select(nesterov, b1 * m + (1 - b1) * g, m)
        return num / (jnp.sqrt(v) * rsqrt_bc2 + eps)

      inputs = (m_new, v_new, gc, b1_, rsqrt_bc2, eps_)
      perturb, ratio = _common.project(pc, gc, lambda tag: direction(*_common.fresh_copy(inputs, tag)),
                                       eps=eps_, delta=delta, wd_ratio=wd_ratio, channel_axis=channel_axis)
      u = perturb / bc1 + (wd_ * ratio) * pc
      return u.astype(g.dtype), m_new.astype(m.dtype), v_new.astype(v.dtype)

    u, mu, nu = _common.map_leaves(leaf, 3, updates, state.mu, state.nu, params)
    return u, ScaleByAdamPState(count=count, mu=mu, nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)


def adamp(learning_rate: ScalarOrSchedule = 1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
          weight_decay: float = 0.0, delta: float = 0.1, wd_ratio: float = 0.1, nesterov: bool = False,
          channel_axis: int = -1) -> optax.GradientTransformation:
  r"""AdamP: Adam whose update loses its radial component on scale-invariant weights.

  ``chain(scale_by_adamp(...), scale_by_learning_rate(learning_rate))``: the update is

  .. math::
    u_t = -\eta_t \big[\Pi_{p,g}(\hat m_t / (\sqrt{\hat v_t} + \epsilon)) + \lambda\, r\, p\big],

  with the projection :math:`\Pi` and ratio :math:`r` of `scale_by_adamp`. Matches clovaai AdamP v0.3.0 /
  ``timm.optim.AdamP`` (float64 trajectories agree to ~1e-12 relative; PyTorch layouts need
  ``channel_axis=0``). Works inside ``optax.inject_hyperparams`` (pass ``static_args="channel_axis"`` to keep
  the channel axis static and fast).

  Args:
    learning_rate: a float or an optax schedule (>= 0).
    b1, b2, eps, weight_decay, delta, wd_ratio, nesterov, channel_axis: see `scale_by_adamp`.

  Returns:
    An `optax.GradientTransformation` (its `update` needs `params`).

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from jaxfair import optim
    >>> tx = optim.adamp(optax.cosine_decay_schedule(1e-3, 1000), weight_decay=1e-2)
    >>> params = {"kernel": jnp.ones((8, 4)), "bias": jnp.zeros(4)}
    >>> state = tx.init(params)
    >>> grads = jax.tree.map(jnp.ones_like, params)
    >>> updates, state = tx.update(grads, state, params)
    >>> params = optax.apply_updates(params, updates)

  References:
    Heo et al., "AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant Weights",
    ICLR 2021. https://arxiv.org/abs/2006.08217
  """
  _common.check_learning_rate(learning_rate)
  return optax.chain(
      scale_by_adamp(b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, delta=delta, wd_ratio=wd_ratio,
                     nesterov=nesterov, channel_axis=channel_axis),
      optax.scale_by_learning_rate(learning_rate))


def _check_sgdp(momentum, dampening, eps, weight_decay, delta, wd_ratio, channel_axis) -> None:
  _common.check_unit_interval(momentum, "momentum")
  _common.check_unit_interval(dampening, "dampening", closed=True)
  _check_projection(eps, weight_decay, delta, wd_ratio, channel_axis)


def scale_by_sgdp(momentum: float = 0.0, dampening: float = 0.0, eps: float = 1e-8, weight_decay: float = 0.0,
                  delta: float = 0.1, wd_ratio: float = 0.1, nesterov: bool = False, channel_axis: int = -1,
                  project_buffer: bool = False) -> optax.GradientTransformation:
  r"""Rescales updates by SGDP's projected momentum direction plus its projection-scaled weight decay.

  Per leaf :math:`p` with gradient :math:`g`:

  .. math::
    b_t = \mu\, b_{t-1} + (1 - \tau) g \;(b_0 = 0), \quad
    d_t = g + \mu b_t \text{ (nesterov) or } b_t, \\
    u = \Pi_{p,g}(d_t) + \frac{\lambda\, r}{1 - \mu}\, p,

  with the AdamP projection :math:`\Pi` and ratio :math:`r` (``wd_ratio`` when it fired, else 1). Chained with
  ``scale_by_learning_rate(lr)``: ``p <- p (1 - lr wd r / (1 - momentum)); p <- p - lr d'``.

  Args:
    momentum: momentum :math:`\mu` in [0, 1).
    dampening: :math:`\tau` in [0, 1].
    eps: norm floor of the projection (>= 0).
    weight_decay: decoupled weight-decay coefficient :math:`\lambda` (>= 0).
    delta: cosine threshold of the scale-invariance test (>= 0).
    wd_ratio: weight-decay multiplier for projected leaves (>= 0).
    nesterov: Nesterov momentum (``d = g + momentum * b``).
    channel_axis: output-channel axis of >= 2-D leaves: -1 flax, 0 PyTorch.
    project_buffer: keep the *projected* direction as the momentum buffer when ``nesterov=False``. False (the
      default) follows the paper, timm (2026-03 on) and pytorch_optimizer: the buffer stays unprojected. True
      reproduces clovaai's sgdp.py bit for bit, where the buffer is aliased to the projected direction.

  Returns:
    An `optax.GradientTransformation` whose `update` needs `params`.

  References:
    Heo et al., "AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant Weights",
    ICLR 2021. https://arxiv.org/abs/2006.08217
  """
  _check_sgdp(momentum, dampening, eps, weight_decay, delta, wd_ratio, channel_axis)
  if not isinstance(project_buffer, bool):
    raise TypeError(f"`project_buffer` must be a Python bool, got {project_buffer!r}.")

  def init_fn(params):
    return ScaleBySGDPState(momentum=jax.tree.map(jnp.zeros_like, params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("scale_by_sgdp needs `params` in `update(grads, state, params)` (the projection tests "
                       "the gradient against the weights).")

    def leaf(g, b, p):
      cd = _common.compute_dtype(g.dtype)
      mom, damp, wd_ = (_common.as_scalar(x, cd) for x in (momentum, dampening, weight_decay))
      gc, pc = g.astype(cd), p.astype(cd)
      b_new = mom * b.astype(cd) + (1 - damp) * gc
      kw = dict(eps=eps, delta=delta, wd_ratio=wd_ratio, channel_axis=channel_axis)
      if nesterov is False:  # the direction is the momentum buffer, materialised anyway as the new state
        d, ratio = _common.project(pc, gc, b_new, **kw)
      else:
        direction = lambda g, b, mom: _select(nesterov, g + mom * b, b)  # noqa: E731
        inputs = (gc, b_new, mom)
        d, ratio = _common.project(pc, gc, lambda tag: direction(*_common.fresh_copy(inputs, tag)), **kw)
      u = d + (wd_ * ratio / (1 - mom)) * pc
      if project_buffer:
        b_new = _select(nesterov, b_new, d)
      return u.astype(g.dtype), b_new.astype(b.dtype)

    u, buf = _common.map_leaves(leaf, 2, updates, state.momentum, params)
    return u, ScaleBySGDPState(momentum=buf)

  return optax.GradientTransformation(init_fn, update_fn)


def sgdp(learning_rate: ScalarOrSchedule, momentum: float = 0.0, dampening: float = 0.0, eps: float = 1e-8,
         weight_decay: float = 0.0, delta: float = 0.1, wd_ratio: float = 0.1, nesterov: bool = False,
         channel_axis: int = -1, project_buffer: bool = False) -> optax.GradientTransformation:
  r"""SGDP: SGD with momentum whose update loses its radial component on scale-invariant weights.

  ``chain(scale_by_sgdp(...), scale_by_learning_rate(learning_rate))``:

  .. math::
    u_t = -\eta_t \big[\Pi_{p,g}(d_t) + \lambda\, r\, p / (1 - \mu)\big].

  Matches ``pytorch_optimizer.SGDP`` (and clovaai ``SGDP`` with ``project_buffer=True``) to ~1e-12 relative
  in float64 (PyTorch layouts need ``channel_axis=0``).

  Args:
    learning_rate: a float or an optax schedule (>= 0).
    momentum, dampening, eps, weight_decay, delta, wd_ratio, nesterov, channel_axis, project_buffer: see
      `scale_by_sgdp`.

  Returns:
    An `optax.GradientTransformation` (its `update` needs `params`).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxfair import optim
    >>> tx = optim.sgdp(0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    >>> state = tx.init({"w": jnp.ones((3, 4))})

  References:
    Heo et al., "AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant Weights",
    ICLR 2021. https://arxiv.org/abs/2006.08217
  """
  _common.check_learning_rate(learning_rate)
  return optax.chain(
      scale_by_sgdp(momentum=momentum, dampening=dampening, eps=eps, weight_decay=weight_decay, delta=delta,
                    wd_ratio=wd_ratio, nesterov=nesterov, channel_axis=channel_axis,
                    project_buffer=project_buffer),
      optax.scale_by_learning_rate(learning_rate))

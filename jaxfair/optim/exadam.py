r"""EXAdam: Adam with cross-moment debiasing and a gradient-acceleration term (Adly, 2024/2025), as optax
gradient transformations.

EXAdam changes three things in Adam: each moment's bias correction is enlarged by a factor that depends on
the *other* moment, the raw (debiased) gradient is added to the first moment in the numerator ("gradient
acceleration"), and -- in the paper's first version only -- the step size grows like
:math:`\ln(\sqrt{2}\sqrt{t+1})`. The second version (May 2025) and the current official code drop the dynamic
step; here it is ``dynamic_step_size=False`` by default.

For a constant gradient the step is :math:`|u_t| / \eta = d_1 (1 + 1/(1-\beta_1^t)) / \sqrt{1 + \beta_1^t}`
(about 15.95 at t=1, 3.81 at t=100), tending to 2 -- twice Adam's; EXAdam is also not invariant to the
gradient scale (for |g| = 1e-5 the first step is about 10.99 lr).

References:
  Adly, "EXAdam: The Power of Adaptive Cross-Moments", arXiv:2412.20302 (v1 Dec 2024, v2 May 2025).
  https://arxiv.org/abs/2412.20302
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxfair.optim import _common

Array = jax.Array
ScalarOrSchedule = optax.ScalarOrSchedule


class ScaleByExAdamState(NamedTuple):
  """State of `scale_by_exadam`: step count and the two moment trees (param dtype)."""
  count: Array  # int32
  mu: optax.Updates
  nu: optax.Updates


def dynamic_step_factor(t: Any) -> Array:
  r"""The paper-v1 step-size multiplier :math:`\ln(\sqrt{2}\sqrt{t+1}) = \tfrac12 \ln(2(t+1))` at step t >= 1."""
  return 0.5 * jnp.log(2.0 * (jnp.asarray(t) + 1.0))


def scale_by_exadam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                    dynamic_step_size: bool = False) -> optax.GradientTransformation:
  r"""Rescales updates by EXAdam's direction.

  Per leaf with gradient :math:`g`, step :math:`t \ge 1`:

  .. math::
    m_t = \beta_1 m_{t-1} + (1-\beta_1) g, \quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g^2, \\
    d_1 = 1 + \frac{v_t}{v_t + \epsilon} \beta_2^t, \quad d_2 = 1 + \frac{m_t^2}{m_t^2 + \epsilon} \beta_1^t, \\
    \tilde m = \frac{m_t d_1}{1-\beta_1^t}, \quad \tilde g = \frac{g d_1}{1-\beta_1^t}, \quad
    \tilde v = \frac{v_t d_2}{1-\beta_2^t}, \\
    u = s_t\, (\tilde m + \tilde g) / (\sqrt{\tilde v} + \epsilon),

  with :math:`s_t = \ln(\sqrt{2}\sqrt{t+1})` if ``dynamic_step_size`` (paper v1) else 1 (paper v2, official
  code).

  Args:
    b1: first-moment decay in [0, 1).
    b2: second-moment decay in [0, 1).
    eps: in the cross-moment factors and the denominator (>= 0).
    dynamic_step_size: multiply by the paper-v1 factor :math:`s_t` (a bool; an array flag works branchlessly).

  Returns:
    An `optax.GradientTransformation`.

  References:
    Adly, "EXAdam: The Power of Adaptive Cross-Moments", arXiv:2412.20302.
  """
  _common.check_unit_interval(b1, "b1")
  _common.check_unit_interval(b2, "b2")
  _common.check_nonnegative(eps, "eps")

  def init_fn(params):
    return ScaleByExAdamState(count=jnp.zeros([], jnp.int32), mu=jax.tree.map(jnp.zeros_like, params),
                              nu=jax.tree.map(jnp.zeros_like, params))

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_increment(state.count)

    def leaf(g, m, v):
      cd = _common.compute_dtype(g.dtype)
      b1_, b2_, eps_ = (_common.as_scalar(x, cd) for x in (b1, b2, eps))
      t = count.astype(cd)
      b1t, b2t = b1_ ** t, b2_ ** t
      gc = g.astype(cd)
      m_new = b1_ * m.astype(cd) + (1 - b1_) * gc
      v_new = b2_ * v.astype(cd) + (1 - b2_) * gc * gc
      d1 = 1 + v_new / (v_new + eps_) * b2t
      m_sq = m_new * m_new
      d2 = 1 + m_sq / (m_sq + eps_) * b1t
      # Fold the scalar factors: (m + g) d1 / bc1 * s_t and v d2 / bc2.
      scale = 1 / (1 - b1t)
      if isinstance(dynamic_step_size, bool):
        if dynamic_step_size:
          scale = scale * dynamic_step_factor(t)
      else:
        scale = scale * jnp.where(jnp.asarray(dynamic_step_size), dynamic_step_factor(t), jnp.ones((), cd))
      u = ((m_new + gc) * d1) * scale / (jnp.sqrt(v_new * d2 / (1 - b2t)) + eps_)
      return u.astype(g.dtype), m_new.astype(m.dtype), v_new.astype(v.dtype)

    u, mu, nu = _common.map_leaves(leaf, 3, updates, state.mu, state.nu)
    return u, ScaleByExAdamState(count=count, mu=mu, nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)


def exadam(learning_rate: ScalarOrSchedule = 1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
           weight_decay: float = 0.0, dynamic_step_size: bool = False) -> optax.GradientTransformation:
  r"""EXAdam with decoupled weight decay.

  ``chain(scale_by_exadam(...), add_decayed_weights(weight_decay), scale_by_learning_rate(learning_rate))``:

  .. math::
    u_t = -\eta_t \big[s_t (\tilde m + \tilde g) / (\sqrt{\tilde v} + \epsilon) + \lambda p\big],

  (weight decay with the pre-update weights and the base learning rate). Matches the official EXAdam code and
  ``pytorch_optimizer.EXAdam`` to ~1e-12 relative in float64.

  Args:
    learning_rate: a float or an optax schedule (>= 0).
    b1, b2, eps, dynamic_step_size: see `scale_by_exadam`.
    weight_decay: decoupled weight decay :math:`\lambda` (>= 0; 0 is a no-op).

  Returns:
    An `optax.GradientTransformation` whose `update` needs `params` (even at weight_decay=0, as
    `optax.add_decayed_weights` does).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxfair import optim
    >>> tx = optim.exadam(1e-3, weight_decay=1e-4)
    >>> state = tx.init({"w": jnp.ones(3)})

  References:
    Adly, "EXAdam: The Power of Adaptive Cross-Moments", arXiv:2412.20302.
  """
  _common.check_learning_rate(learning_rate)
  _common.check_nonnegative(weight_decay, "weight_decay")
  return optax.chain(
      scale_by_exadam(b1=b1, b2=b2, eps=eps, dynamic_step_size=dynamic_step_size),
      optax.add_decayed_weights(weight_decay),
      optax.scale_by_learning_rate(learning_rate))

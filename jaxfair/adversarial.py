"""Adversarial training pieces: PGD, the DONE objective (KL-DRO-reweighted adversarial losses) and robust metrics.

PGD (Madry et al., 2018). Per example, maximise the loss over the threat set
C(x) = {x' : ||x' - x||_p <= eps} ∩ [lo, hi]^D by projected (normalised) gradient ascent:

    x'_{k+1} = Proj_C(x'_k + alpha * s(grad_x' l(theta, x'_k, y))),   s = sign (L_inf) or g / ||g||_2 (L_2),

from a uniform random start in the ball (Madry et al.). Proj_C is feasible: for L_inf it clips every coordinate
to [max(x - eps, lo), min(x + eps, hi)] (the exact Euclidean projection); for L_2 it scales the perturbation
onto the ball and then clips to the box (clipping moves every coordinate towards x, so it never leaves the
ball, though near a saturated box face the result is not the Euclidean projection onto ball ∩ box). A final
rounding guard makes |x' - x| <= eps hold exactly for every example, for the difference computed in float32 or
wider (bf16/f16 inputs are tested in float32 against eps itself, not eps rounded to bf16).

DONE (Sow, Lin, Wang, Liang; ICLR 2024). Bilevel, instance-reweighted adversarial training:

    min_theta max_{w in simplex} sum_i w_i l_i(theta, delta_i*(theta)) - r KL(w || uniform)
      = min_theta Phi(theta) = r log mean_i exp(l_i(theta, delta_i*(theta)) / r),

so grad Phi = sum_i w*_i dl_i/dtheta with w* = softmax(l_adv / r) (Danskin on the closed-form inner max;
`jaxfair.reweighting.kl_dro_weights`), or with the EMA-normalised weights of `ema_kl_dro_rule` (DONE's CID /
SCGD estimator). The per-example hypergradient dl_i/dtheta has two modes:

* "danskin": the attack is held fixed (stop_gradient), dl/dtheta ~ grad_theta l(theta, x + delta) — standard AT.
* "implicit": delta*(theta) is the interior minimiser of the log-barrier lower level (L_inf ball ∩ box, written
  as per-coordinate intervals a_j <= delta_j <= b_j)

      g(delta; theta) = -l(theta, x + delta, y) + (lam / 2) ||delta||^2 - mu sum_j [log(delta_j - a_j) + log(b_j - delta_j)],

  and by the implicit function theorem
      dl/dtheta = grad_theta l + (d delta*/d theta)^T grad_delta l,
      (d delta*/d theta)^T v = -(grad^2_{theta delta} g) [grad^2_{delta delta} g]^{-1} v,
  solved matrix-free: Newton-CG for the lower level, conjugate gradient on Hessian-vector products for the
  linear system (per example: the Hessian of a batch is block diagonal, and every CG inner product is taken per
  example). The formula is exact at a stationary point of a strongly convex lower level; `lam` must dominate
  the curvature of the loss in the input for that (DONE's strong-convexity assumption), and negative
  curvature met by CG stops that example's iteration (truncated Newton) rather than diverging.

References:
  Madry, Makelov, Schmidt, Tsipras, Vladu. Towards Deep Learning Models Resistant to Adversarial Attacks.
    ICLR 2018.
  Sow, Lin, Wang, Liang. Doubly Robust Instance-Reweighted Adversarial Training. ICLR 2024, arXiv:2308.00311.
  Zhang et al. Revisiting and Advancing Fast Adversarial Training Through the Lens of Bi-Level Optimization
    (FAST-BAT). ICML 2022.
  Nocedal, Wright. Numerical Optimization, 2nd ed., ch. 5-7 and 19 (CG, Newton-CG, barrier methods).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxfair import _checks
from jaxfair import reweighting
from jaxfair.training.components import WeightingRule, uniform

Array = jax.Array
PyTree = Any
LossFn = Callable[[PyTree, Array, Array], Array]

NORMS = ("linf", "l2")
GRADIENT_MODES = ("danskin", "implicit")

__all__ = [
    "NORMS", "GRADIENT_MODES", "project", "pgd_attack", "adversarial_losses", "pgd_perturbation",
    "BarrierConfig", "barrier_objective", "barrier_residual", "solve_barrier_attack", "implicit_attack",
    "implicit_perturbation",
    "DoneConfig", "done", "done_objective", "robust_accuracy", "robust_evaluate", "tail_accuracy",
]


# ----------------------------------------------------------------------------------------------------------
# Validation and per-example helpers.


def _check_attack_args(eps, step_size, num_steps, norm, bounds) -> None:
  if norm not in NORMS:
    raise ValueError(f"`norm` must be one of {NORMS}, got {norm!r}.")
  _checks.check_positive(eps, "eps", allow_zero=True)
  _checks.check_positive(step_size, "step_size", allow_zero=True)
  if not isinstance(num_steps, (int, np.integer)) or num_steps < 0:
    raise ValueError(f"`num_steps` must be a Python int >= 0 (it fixes the loop length), got {num_steps!r}.")
  _check_bounds(bounds)


def _check_bounds(bounds) -> None:
  if bounds is not None:
    if len(bounds) != 2:
      raise ValueError(f"`bounds` must be a (low, high) pair or None, got {bounds!r}.")
    lo, hi = (_checks.concrete_value(b) for b in bounds)
    if lo is not None and hi is not None and np.any(np.asarray(lo) >= np.asarray(hi)):
      raise ValueError(f"`bounds` must satisfy low < high, got {bounds!r}.")


def _check_inputs(x, y) -> None:
  if np.ndim(x) < 1:
    raise ValueError(f"`x` must have a leading batch axis, got shape {np.shape(x)}.")
  _checks.check_same_leading(x, y, "x", "y")
  if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
    raise ValueError(f"`x` must be a floating-point array (inputs to attack), got dtype {jnp.result_type(x)}.")


def _check_in_bounds(x, bounds) -> None:
  """A concrete `x` must lie in the box (up to rounding): the projection would otherwise clip it into the box,
  far outside the eps-ball (e.g. 0..255 images with the default bounds (0, 1))."""
  if bounds is None or any(isinstance(a, jax.core.Tracer) for a in (x, *bounds)) or np.size(x) == 0:
    return
  with jax.ensure_compile_time_eval():  # concrete values, also while an enclosing function is being traced
    x = jnp.asarray(x)
    lo, hi = (jnp.asarray(b, x.dtype) for b in bounds)  # the box as the projection sees it, in x's precision
    scale = max(1.0, float(jnp.max(jnp.abs(lo))), float(jnp.max(jnp.abs(hi))))
    tol = scale * max(1e-6, 4 * float(jnp.finfo(x.dtype).eps))
    # Reduced on the device: only scalars reach the host.
    below, above = float(jnp.max(lo - x)), float(jnp.max(x - hi))
    if below <= tol and above <= tol:
      return
    vmin, vmax = float(jnp.min(x)), float(jnp.max(x))
    lo_min, hi_max = float(jnp.min(lo)), float(jnp.max(hi))
    fix = (min(math.floor(vmin), lo_min), max(math.ceil(vmax), hi_max))
    box = tuple(np.asarray(b).tolist() for b in bounds)
    raise ValueError(f"`x` must lie in `bounds` {box}; found [{vmin:g}, {vmax:g}]: scale the inputs or pass "
                     f"bounds=({fix[0]:g}, {fix[1]:g}).")


def _check_fraction(value, name: str) -> None:
  v = _checks.concrete_value(value)
  if v is not None and not np.all((v > 0) & (v <= 1)):
    raise ValueError(f"`{name}` must be in (0, 1] (a share of the classes, e.g. 0.3), got {v.tolist()}.")


def _check_barrier_config(config: BarrierConfig) -> None:
  _checks.check_positive(config.mu, "config.mu")
  _checks.check_positive(config.lam, "config.lam", allow_zero=True)


def _bcast(v: Array, x: Array) -> Array:
  return v.reshape(v.shape + (1,) * (x.ndim - 1))


def _sum_rest(x: Array) -> Array:
  """Per-example sum over all non-batch axes: (B, ...) -> (B,)."""
  return x.reshape(x.shape[0], -1).sum(axis=1)


def _l2(x: Array) -> Array:
  return jnp.sqrt(_sum_rest(jnp.square(x)))


def _unit_l2(g: Array) -> Array:
  """g / ||g||_2 per example (0 where g = 0). Scaled by max |g| first: the squares of gradients below ~1e-20
  underflow in float32 (the "unit" step would be ~1e7 long) and those of huge ones overflow (no step)."""
  m = _bcast(jnp.max(jnp.abs(g).reshape(g.shape[0], -1), axis=1), g)
  g = g / jnp.where(m > 0, m, 1.0)
  return g / _bcast(jnp.maximum(_l2(g), jnp.finfo(g.dtype).tiny), g)


def _compute_dtype(dtype) -> jnp.dtype:
  """At least float32: bf16/f16 feasibility is decided in float32, where eps and |x' - x| are exact enough."""
  return jnp.promote_types(dtype, jnp.float32)


def _interval(x: Array, eps: Array, bounds) -> tuple[Array, Array]:
  """Per-coordinate feasible interval [lower, upper] for x' (L_inf ball ∩ box), computed in x's dtype."""
  eps = jnp.asarray(eps, x.dtype)
  lower, upper = x - eps, x + eps
  if bounds is not None:
    lower = jnp.maximum(lower, jnp.asarray(bounds[0], x.dtype))
    upper = jnp.minimum(upper, jnp.asarray(bounds[1], x.dtype))
  return lower, upper


def _box(x: Array, bounds) -> Array:
  if bounds is None:
    return x
  return jnp.clip(x, jnp.asarray(bounds[0], x.dtype), jnp.asarray(bounds[1], x.dtype))


def project(x_adv: Array, x: Array, *, eps, norm: str = "linf", bounds=(0.0, 1.0), exact: bool = True) -> Array:
  """Euclidean-style projection of `x_adv` onto {x' : ||x' - x||_norm <= eps} ∩ box, per example.

  L_inf: coordinate-wise clip to [max(x - eps, lo), min(x + eps, hi)] (the exact Euclidean projection).
  L_2: scale x_adv - x onto the ball, then clip to the box (feasible; clipping towards x keeps it in the ball).
  With `exact`, a rounding guard moves any coordinate whose |x' - x| exceeds eps towards x, one ulp at a time
  (L_inf), or shrinks an example whose ||x' - x||_2 exceeds eps (L_2), so feasibility holds exactly for the
  difference computed in float32 or wider (bf16/f16 inputs: their exact difference against eps in float32;
  float32 inputs: the rounded float32 difference, which can exceed the real one by an ulp). `x` must itself
  lie in the box.
  """
  _checks.check_positive(eps, "eps", allow_zero=True)
  _check_bounds(bounds)
  _checks.check_same_shape(x_adv, x, "x_adv", "x")
  _check_in_bounds(x, bounds)
  return _project(x_adv, x, eps=eps, norm=norm, bounds=bounds, exact=exact)


def _project(x_adv: Array, x: Array, *, eps, norm: str, bounds, exact: bool) -> Array:
  """`project` without the input checks (the attacks check their arguments once)."""
  cd = _compute_dtype(x.dtype)
  eps_c = jnp.asarray(eps, cd)  # the exact guard compares against eps in float32 (or wider), not rounded to bf16
  eps = eps_c.astype(x.dtype)

  def deviation(out):
    return out.astype(cd) - x.astype(cd)

  if norm == "linf":
    if not exact:
      return jnp.clip(x_adv, *_interval(x, eps, bounds))
    # The interval in float32 (or wider), rounded inwards to x's dtype (bf16 rounds eps itself up by up to half
    # an ulp), then a guard for the rounded difference: a coordinate whose computed |x' - x| still exceeds eps
    # moves one ulp towards x.
    lower, upper = _interval(x.astype(cd), eps_c, bounds)
    lower_x, upper_x = lower.astype(x.dtype), upper.astype(x.dtype)
    lower_x = jnp.where(lower_x.astype(cd) < lower, jnp.nextafter(lower_x, upper_x), lower_x)
    upper_x = jnp.where(upper_x.astype(cd) > upper, jnp.nextafter(upper_x, lower_x), upper_x)
    out = jnp.clip(x_adv, lower_x, upper_x)
    return jnp.where(jnp.abs(deviation(out)) > eps_c, jnp.nextafter(out, x), out)
  if norm != "l2":
    raise ValueError(f"`norm` must be one of {NORMS}, got {norm!r}.")
  if not exact:
    delta = x_adv - x
    n = _l2(delta)
    scale = jnp.where(n > eps, eps / jnp.where(n > 0, n, 1.0), 1.0)
    return _box(x + delta * _bcast(scale, delta), bounds)
  # Exact: the projected point t in float32 (or wider), just inside the ball (1 - 64 ulp), then rounded to x's
  # dtype. Round-to-nearest can push the norm past eps (in bf16 by a lot when eps is small against sqrt(D) ulp),
  # so the first of these that is feasible is taken: t rounded to nearest; t shrunk towards x by 1, 4 and 16
  # ulps of x's dtype, rounded to nearest; t with every coordinate rounded TOWARDS x (feasible by
  # construction: no |x'_i - x_i| grows); x itself (never seen).
  inner = eps_c * (1.0 - 64 * jnp.finfo(cd).eps)
  ulp = float(jnp.finfo(x.dtype).eps)
  x_c = x.astype(cd)
  delta = x_adv.astype(cd) - x_c
  n = _l2(delta)
  target = _box(x_c + delta * _bcast(jnp.where(n > inner, inner / jnp.where(n > 0, n, 1.0), 1.0), delta), bounds)

  def feasible(o):
    return _bcast(_l2(deviation(o)) <= eps_c, o)

  out = x
  for factor in (0.0, ulp, 4 * ulp, 16 * ulp)[::-1]:  # the least shrunk feasible candidate wins
    candidate = _box((target - (target - x_c) * factor).astype(x.dtype), bounds)
    out = jnp.where(feasible(candidate), candidate, out)
  rounded = target.astype(x.dtype)
  towards_x = jnp.where(jnp.abs(rounded.astype(cd) - x_c) > jnp.abs(target - x_c), jnp.nextafter(rounded, x),
                        rounded)
  none_yet = ~feasible(out) | jnp.all(out == x, axis=tuple(range(1, x.ndim)), keepdims=True)
  return jnp.where(none_yet & feasible(towards_x), _box(towards_x, bounds), out)


def _random_start(key: Array, x: Array, eps: Array, norm: str) -> Array:
  eps = jnp.asarray(eps, x.dtype)
  if norm == "linf":
    return jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps
  # Uniform in the L2 ball: Gaussian direction, radius eps * U^(1/D).
  k1, k2 = jax.random.split(key)
  g = jax.random.normal(k1, x.shape, x.dtype)
  g = _unit_l2(g)
  dim = math.prod(x.shape[1:])
  radius = eps * jax.random.uniform(k2, (x.shape[0],), x.dtype) ** (1.0 / dim)
  return g * _bcast(radius, g)


# ----------------------------------------------------------------------------------------------------------
# PGD.


def pgd_attack(loss_fn: LossFn, params: PyTree, x: Array, y: Array, key: Array, *, eps, step_size,
               num_steps: int, norm: str = "linf", random_start: bool = True,
               bounds: Sequence[float] | None = (0.0, 1.0)) -> Array:
  """Projected gradient ascent on each example's loss inside its eps-ball and the input box.

    x_0 = Proj(x + U(ball)) (random start) or x;  x_{k+1} = Proj(x_k + step_size * s(grad_x sum_i l_i)),
    s = sign for L_inf, g / ||g||_2 (per example) for L_2.

  Every example is attacked independently (the gradient of the summed loss w.r.t. x_i is example i's own
  gradient as long as `loss_fn` treats examples independently — use the model in inference mode). One
  `lax.fori_loop`; jit- and vmap-compatible (eps and step_size may be traced, e.g. vmapped over a sweep).

  Args:
    loss_fn: `(params, x, y) -> (B,)` per-example losses (evaluation attacks use the true labels).
    params: model parameters (held constant: no gradient flows into them through the attack).
    x: (B, ...) clean inputs, inside `bounds`.
    y: (B, ...) labels passed to `loss_fn`.
    key: PRNG key for the random start.
    eps: radius of the threat ball (>= 0); 8/255 for CIFAR L_inf.
    step_size: ascent step (2/255 for CIFAR L_inf); for L_2 the step length in L_2 norm.
    num_steps: number of ascent steps (a Python int).
    norm: "linf" or "l2".
    random_start: start from a uniform point of the ball (Madry et al.) rather than from x.
    bounds: (low, high) box of valid inputs, or None for no box.

  Returns:
    x_adv, same shape and dtype as x, `stop_gradient`-ed (Danskin: the attack is treated as fixed); exactly
    feasible: |x_adv - x| <= eps coordinate-wise (L_inf) or ||x_adv - x||_2 <= eps (L_2), and inside the box.

  Example:
    >>> x_adv = pgd_attack(loss_fn, params, x, y, key, eps=8/255, step_size=2/255, num_steps=10)
  """
  _check_attack_args(eps, step_size, num_steps, norm, bounds)
  _check_inputs(x, y)
  _check_in_bounds(x, bounds)
  params = jax.lax.stop_gradient(params)
  x = jax.lax.stop_gradient(x)
  dtype = x.dtype
  eps_c = jnp.asarray(eps, _compute_dtype(dtype))  # the final exact projection tests against this eps
  eps = eps_c.astype(dtype)
  step_size = jnp.asarray(step_size, dtype)
  proj = functools.partial(_project, x=x, eps=eps, norm=norm, bounds=bounds, exact=False)
  x0 = proj(x + _random_start(key, x, eps, norm)) if random_start else x
  grad_fn = jax.grad(lambda xa: jnp.sum(loss_fn(params, xa, y)))

  def body(_, xa):
    g = grad_fn(xa).astype(dtype)
    if norm == "linf":
      direction = jnp.sign(g)
    else:
      direction = _unit_l2(g)
    return proj(xa + step_size * direction)

  x_adv = jax.lax.fori_loop(0, num_steps, body, x0)
  x_adv = _project(x_adv, x, eps=eps_c, norm=norm, bounds=bounds, exact=True)
  return jax.lax.stop_gradient(x_adv)


def adversarial_losses(loss_fn: LossFn, params: PyTree, x: Array, y: Array, key: Array, **attack) -> Array:
  """Per-example losses at the PGD-attacked inputs, l_i(theta, x_i + delta_i), differentiable in params only
  through the model (the attack is held fixed: Danskin). `attack` are `pgd_attack`'s keyword arguments."""
  x_adv = pgd_attack(loss_fn, params, x, y, key, **attack)
  return loss_fn(params, x_adv, y)


def pgd_perturbation(*, eps=8 / 255, step_size=2 / 255, num_steps: int = 10, norm: str = "linf",
                     random_start: bool = True, bounds: Sequence[float] | None = (0.0, 1.0)):
  """`pgd_attack` as a training-step `Perturbation` `(loss_fn, params, x, y, key) -> x_adv` (Danskin)."""
  _check_attack_args(eps, step_size, num_steps, norm, bounds)

  def perturb(loss_fn, params, x, y, key):
    return pgd_attack(loss_fn, params, x, y, key, eps=eps, step_size=step_size, num_steps=num_steps, norm=norm,
                      random_start=random_start, bounds=bounds)

  return perturb


# ----------------------------------------------------------------------------------------------------------
# Implicit differentiation through a log-barrier lower level.


class BarrierConfig(NamedTuple):
  """The log-barrier lower level and its matrix-free solvers.

  The defaults are a starting point, not a guarantee: the implicit hypergradient is only right at a stationary
  point of a strongly convex lower level, so tune `lam` (and `newton_steps`) for the model and check
  `barrier_residual` at the solution: with too small a `lam` Newton-CG stalls away from stationarity and the
  hypergradient can be off by more than 100%, silently.

  mu: barrier weight (> 0; the interior solution tends to the constrained one as mu -> 0).
  lam: quadratic regulariser (lam/2)||delta||^2; must exceed the largest curvature of the loss in the input
    for the lower level to be strongly convex (the assumption of the implicit-function formula).
  newton_steps / cg_steps: Newton-CG iterations and CG iterations per Newton step for the lower level.
  backward_cg_steps: CG iterations for the hypergradient linear system.
  interior: how far (fraction of the interval width) the warm start is pushed inside the box.
  """
  mu: float = 1e-3
  lam: float = 1.0
  newton_steps: int = 8
  cg_steps: int = 10
  backward_cg_steps: int = 20
  interior: float = 0.05


def _delta_interval(x: Array, eps, bounds) -> tuple[Array, Array]:
  lower, upper = _interval(x, eps, bounds)
  return lower - x, upper - x


def barrier_objective(loss_fn: LossFn, params: PyTree, x: Array, y: Array, delta: Array, *, eps,
                      bounds=(0.0, 1.0), mu: float = 1e-3, lam: float = 1.0) -> Array:
  """Per-example lower-level objective g_i(delta_i; theta) (to be minimised), shape (B,):

    g = -l(theta, x + delta, y) + (lam / 2) ||delta||^2 - mu sum_j [log(delta_j - a_j) + log(b_j - delta_j)],

  with [a_j, b_j] = [max(-eps, lo - x_j), min(eps, hi - x_j)]. +inf outside the open interval.
  """
  _checks.check_same_shape(delta, x, "delta", "x")
  a, b = _delta_interval(x, eps, bounds)
  inside = (delta > a) & (delta < b)
  log_gap = jnp.log(jnp.where(inside, delta - a, 1.0)) + jnp.log(jnp.where(inside, b - delta, 1.0))
  barrier = -mu * _sum_rest(log_gap)
  value = -loss_fn(params, x + delta, y) + 0.5 * lam * _sum_rest(jnp.square(delta)) + barrier
  feasible = _sum_rest((~inside).astype(jnp.int32)) == 0
  return jnp.where(feasible, value, jnp.inf)


def _batched_cg(matvec: Callable[[Array], Array], rhs: Array, num_steps: int) -> Array:
  """Solves H u = rhs for a block-diagonal (per-example) symmetric H by CG with per-example step sizes.

  An example stops (keeps its iterate) once its residual vanishes or it meets non-positive curvature
  p^T H p <= 0 (truncated CG: the iterate so far is still a descent direction for Newton).
  """
  tiny = jnp.finfo(rhs.dtype).tiny

  def body(_, carry):
    u, r, p, rr, active = carry
    hp = matvec(p)
    php = _sum_rest(p * hp)
    ok = active & (php > 0) & (rr > tiny)
    alpha = jnp.where(ok, rr / jnp.where(ok, php, 1.0), 0.0)
    u = u + _bcast(alpha, p) * p
    r = r - _bcast(alpha, hp) * hp
    rr_new = _sum_rest(r * r)
    beta = jnp.where(ok, rr_new / jnp.where(rr > 0, rr, 1.0), 0.0)
    p = jnp.where(_bcast(ok, p), r + _bcast(beta, p) * p, p)
    rr = jnp.where(ok, rr_new, rr)
    return u, r, p, rr, ok

  u0 = jnp.zeros_like(rhs)
  rr0 = _sum_rest(rhs * rhs)
  carry = (u0, rhs, rhs, rr0, jnp.ones(rhs.shape[:1], bool))
  u, *_ = jax.lax.fori_loop(0, num_steps, body, carry)
  # An example that met negative curvature on its first step gets the steepest-descent direction.
  return jnp.where(_bcast(_sum_rest(jnp.abs(u)) > 0, u), u, rhs)


def _lower_level_fns(loss_fn, params, x, y, eps, bounds, cfg: BarrierConfig):
  def objective(delta):
    return barrier_objective(loss_fn, params, x, y, delta, eps=eps, bounds=bounds, mu=cfg.mu, lam=cfg.lam)

  grad = jax.grad(lambda d: jnp.sum(objective(d)))

  def hvp(delta, v):
    return jax.jvp(grad, (delta,), (v,))[1]

  return objective, grad, hvp


def solve_barrier_attack(loss_fn: LossFn, params: PyTree, x: Array, y: Array, delta0: Array, *, eps,
                         bounds=(0.0, 1.0), config: BarrierConfig = BarrierConfig()) -> Array:
  """Interior minimiser delta* of the log-barrier lower level (`barrier_objective`), per example.

  Damped Newton-CG from `delta0` (pushed a fraction `config.interior` inside its interval): each step solves
  H d = -grad by truncated CG on Hessian-vector products, caps the step at 0.95 of the distance to the
  boundary, and backtracks (Armijo) over {1, 1/2, ..., 1/128} of it, all per example.
  """
  _checks.check_same_shape(delta0, x, "delta0", "x")
  _check_barrier_config(config)
  params = jax.lax.stop_gradient(params)
  a, b = _delta_interval(x, eps, bounds)
  width = b - a
  kappa = jnp.asarray(config.interior, x.dtype)
  delta = jnp.clip(delta0, a + kappa * width, b - kappa * width)
  objective, grad, hvp = _lower_level_fns(loss_fn, params, x, y, eps, bounds, config)
  fractions = 0.5 ** jnp.arange(8, dtype=x.dtype)

  def newton(_, delta):
    g = grad(delta)
    d = _batched_cg(lambda v: hvp(delta, v), -g, config.cg_steps)
    # Fraction-to-boundary cap per example.
    ratio_hi = jnp.where(d > 0, (b - delta) / jnp.where(d > 0, d, 1.0), jnp.inf)
    ratio_lo = jnp.where(d < 0, (a - delta) / jnp.where(d < 0, d, 1.0), jnp.inf)
    t_max = jnp.min(jnp.minimum(ratio_hi, ratio_lo).reshape(d.shape[0], -1), axis=1)
    t_cap = jnp.minimum(1.0, 0.95 * t_max)
    f0 = objective(delta)
    slope = _sum_rest(g * d)
    trial = jax.vmap(lambda f: objective(delta + _bcast(f * t_cap, d) * d))(fractions)  # (8, B)
    ok = trial <= f0[None, :] + 1e-4 * (fractions[:, None] * t_cap[None, :]) * slope[None, :]
    ok = ok & jnp.isfinite(trial)
    first = jnp.argmax(ok, axis=0)
    any_ok = jnp.any(ok, axis=0)
    t = jnp.where(any_ok, fractions[first] * t_cap, 0.0)
    return delta + _bcast(t, d) * d

  delta = jax.lax.fori_loop(0, config.newton_steps, newton, delta)
  return jax.lax.stop_gradient(delta)


def barrier_residual(loss_fn: LossFn, params: PyTree, x: Array, y: Array, delta: Array, *, eps,
                     bounds=(0.0, 1.0), config: BarrierConfig = BarrierConfig()) -> Array:
  """max_j |d g_i / d delta_ij| per example, shape (B,): how far `delta` is from a stationary point of the
  log-barrier lower level (0 at `solve_barrier_attack`'s target; inf where delta is not strictly inside its
  interval). The implicit hypergradient assumes ~0."""
  _checks.check_same_shape(delta, x, "delta", "x")
  _, grad, _ = _lower_level_fns(loss_fn, jax.lax.stop_gradient(params), x, y, eps, bounds, config)
  a, b = _delta_interval(x, eps, bounds)
  inside = jnp.all(((delta > a) & (delta < b)).reshape(delta.shape[0], -1), axis=1)
  g = grad(delta)
  return jnp.where(inside, jnp.max(jnp.abs(g).reshape(g.shape[0], -1), axis=1), jnp.inf)


def _implicit_delta(loss_fn: LossFn, eps, bounds, cfg: BarrierConfig):
  """delta*(params, x, y, delta0) with a custom VJP from the implicit function theorem."""

  @jax.custom_vjp
  def delta_star(params, x, y, delta0):
    return solve_barrier_attack(loss_fn, params, x, y, delta0, eps=eps, bounds=bounds, config=cfg)

  def fwd(params, x, y, delta0):
    d = delta_star(params, x, y, delta0)
    return d, (params, x, y, d)

  def bwd(res, v):
    params, x, y, d = res
    _, _, hvp = _lower_level_fns(loss_fn, params, x, y, eps, bounds, cfg)
    u = _batched_cg(lambda w: hvp(d, w), v, cfg.backward_cg_steps)

    # (d delta*/d theta)^T v = -(grad^2_{theta delta} g) u, and grad_delta g = -grad_delta l + (theta-free terms).
    def mixed(p):
      gl = jax.grad(lambda dd: jnp.sum(loss_fn(p, x + dd, y)))(d)
      return jnp.sum(gl * u)

    params_bar = jax.grad(mixed)(params)
    y_bar = (np.zeros(np.shape(y), jax.dtypes.float0) if not jnp.issubdtype(jnp.result_type(y), jnp.inexact)
             else jnp.zeros_like(y))
    return params_bar, jnp.zeros_like(x), y_bar, jnp.zeros_like(d)

  delta_star.defvjp(fwd, bwd)
  return delta_star


def implicit_attack(loss_fn: LossFn, params: PyTree, x: Array, y: Array, key: Array, *, eps, step_size,
                    num_steps: int, norm: str = "linf", random_start: bool = True,
                    bounds: Sequence[float] | None = (0.0, 1.0), config: BarrierConfig = BarrierConfig()) -> Array:
  """x + delta*(theta): PGD warm start, then the log-barrier lower level solved to stationarity, with a VJP
  w.r.t. `params` given by the implicit function theorem (see the module docstring). L_inf only."""
  if norm != "linf":
    raise ValueError(f"`norm` must be 'linf' for the implicit (log-barrier) attack, got {norm!r}; the barrier "
                     "is written for per-coordinate intervals.")
  _check_barrier_config(config)
  x = jax.lax.stop_gradient(x)
  x_pgd = pgd_attack(loss_fn, params, x, y, key, eps=eps, step_size=step_size, num_steps=num_steps, norm=norm,
                     random_start=random_start, bounds=bounds)
  delta = _implicit_delta(loss_fn, eps, bounds, config)(params, x, y, x_pgd - x)
  return x + delta


def implicit_perturbation(*, eps=8 / 255, step_size=2 / 255, num_steps: int = 10, random_start: bool = True,
                          bounds: Sequence[float] | None = (0.0, 1.0), config: BarrierConfig = BarrierConfig()):
  """`implicit_attack` as a training-step `Perturbation` (its output carries the implicit hypergradient)."""
  _check_attack_args(eps, step_size, num_steps, "linf", bounds)
  _check_barrier_config(config)

  def perturb(loss_fn, params, x, y, key):
    return implicit_attack(loss_fn, params, x, y, key, eps=eps, step_size=step_size, num_steps=num_steps,
                           random_start=random_start, bounds=bounds, config=config)

  return perturb


# ----------------------------------------------------------------------------------------------------------
# DONE as a training-step configuration.


class DoneConfig(NamedTuple):
  """The pieces DONE changes in the training step: the perturbation and the weighting rule."""
  perturbation: Callable[..., Array]
  weighting: WeightingRule
  gradient: str


def done(r: float = 1.0, *, beta: float | None = None, gradient: str = "danskin", eps=8 / 255,
         step_size=2 / 255, num_steps: int = 10, norm: str = "linf", random_start: bool = True,
         bounds: Sequence[float] | None = (0.0, 1.0), barrier: BarrierConfig = BarrierConfig(),
         uniform_warmup_steps: int = 0) -> DoneConfig:
  """DONE: PGD (or implicit) adversarial examples, KL-DRO weights on their losses, weighted loss.

  Args:
    r: KL temperature (> 0); r = inf gives standard AT (uniform weights).
    beta: None for per-batch softmax weights (`kl_dro_rule(r)`), or the EMA rate of the normaliser
      (`ema_kl_dro_rule(r, beta)`, DONE's CID estimator).
    gradient: "danskin" (attack fixed; PGD) or "implicit" (log-barrier lower level, implicit hypergradient).
    eps, step_size, num_steps, norm, random_start, bounds: the training attack.
    barrier: lower-level configuration for gradient="implicit"; tune its `lam` for the model (see
      `BarrierConfig` and `barrier_residual`).
    uniform_warmup_steps: uniform weights for the first steps (the rule still updates its state).

  Returns:
    DoneConfig(perturbation, weighting, gradient) — plug `perturbation` and `weighting` into the training step
    (`jaxfair.training`), or call `done_objective` directly.
  """
  if gradient not in GRADIENT_MODES:
    raise ValueError(f"`gradient` must be one of {GRADIENT_MODES}, got {gradient!r}.")
  _checks.check_positive(r, "r")
  if gradient == "danskin":
    perturbation = pgd_perturbation(eps=eps, step_size=step_size, num_steps=num_steps, norm=norm,
                                    random_start=random_start, bounds=bounds)
  else:
    if norm != "linf":
      raise ValueError(f"gradient='implicit' supports norm='linf' only, got {norm!r}.")
    perturbation = implicit_perturbation(eps=eps, step_size=step_size, num_steps=num_steps,
                                         random_start=random_start, bounds=bounds, config=barrier)
  if math.isinf(float(r)):
    weighting = uniform()
  elif beta is None:
    weighting = reweighting.kl_dro_rule(r, uniform_warmup_steps=uniform_warmup_steps)
  else:
    weighting = reweighting.ema_kl_dro_rule(r, beta, uniform_warmup_steps=uniform_warmup_steps)
  return DoneConfig(perturbation, weighting, gradient)


def done_objective(loss_fn: LossFn, params: PyTree, x: Array, y: Array, key: Array, rule_state: PyTree, *,
                   config: DoneConfig, mask: Array | None = None) -> tuple[Array, tuple[Array, Array, PyTree]]:
  """The DONE training loss sum_i stop_gradient(w_i) l_i(theta, x_i + delta_i(theta)), for `jax.grad(has_aux)`.

  Its gradient is sum_i w_i dl_i/dtheta: with per-batch KL-DRO weights this is exactly the gradient of
  Phi(theta) = r log mean_i exp(l_i / r) at the attacked points (Danskin on the closed-form inner max), with
  dl_i/dtheta the Danskin or implicit hypergradient per `config.gradient`.

  Args:
    loss_fn: `(params, x, y) -> (B,)` per-example losses (the model in the mode the step wants).
    params, x, y, key: parameters, clean batch, labels, attack key.
    rule_state: the weighting rule's state (`config.weighting.init()`).
    config: from `done(...)`.
    mask: (B,) 1 = real example, 0 = padding.

  Returns:
    (loss, (weights, adversarial losses, new rule_state)).
  """
  if mask is None:
    mask = jnp.ones(np.shape(y)[:1], jnp.float32)
  x_adv = config.perturbation(loss_fn, params, x, y, key)
  losses = loss_fn(params, x_adv, y)
  weights, rule_state = config.weighting.apply(jax.lax.stop_gradient(losses), mask, rule_state)
  weights = jax.lax.stop_gradient(weights)
  return jnp.sum(weights * jnp.where(mask > 0, losses, 0.0)), (weights, losses, rule_state)


# ----------------------------------------------------------------------------------------------------------
# Evaluation: SA, RA-PGD, RA-Tail-30, per-class robust accuracy.


def tail_accuracy(per_class: Array, counts: Array, fraction: float = 0.3) -> Array:
  """Mean accuracy over the ceil(fraction * K) classes with the lowest accuracy (classes with no test example
  are skipped when enough others exist): RA-Tail-30 for fraction = 0.3 on robust per-class accuracy."""
  _check_fraction(fraction, "fraction")
  num_classes = per_class.shape[-1]
  k = max(1, int(math.ceil(fraction * num_classes - 1e-9)))
  masked = jnp.where(counts > 0, per_class, jnp.inf)
  worst = jnp.sort(masked, axis=-1)[..., :k]
  finite = jnp.isfinite(worst)
  return jnp.sum(jnp.where(finite, worst, 0.0), axis=-1) / jnp.maximum(jnp.sum(finite, axis=-1), 1)


def robust_evaluate(logits_fn: Callable[[PyTree, Array], Array], params: PyTree, x: Array, y: Array,
                    key: Array, *, num_classes: int, eps=8 / 255, step_size=2 / 255, num_steps: int = 20,
                    norm: str = "linf", random_start: bool = True, bounds=(0.0, 1.0), batch_size: int = 256,
                    tail_fraction: float = 0.3) -> dict[str, Array]:
  """Clean and PGD robust accuracy of a classifier on a dataset, batched with `lax.map` (jit/vmap-able).

  The attack maximises the cross-entropy of the TRUE label (PGD-20, step 2/255, random start by default).

  Args:
    logits_fn: `(params, x) -> (B, K)` logits in inference mode.
    params: parameters.
    x, y: (N, ...) inputs in `bounds`, (N,) integer labels.
    key: attack key (folded per batch).
    num_classes: K.
    eps, step_size, num_steps, norm, random_start, bounds: the evaluation attack.
    batch_size: examples per attacked batch (the set is zero-padded to a multiple and masked).
    tail_fraction: share of most vulnerable classes for RA-Tail (0.3).

  Returns:
    dict with "sa", "ra" (scalars), "ra_tail" (RA-Tail-30), "sa_tail", "per_class_clean", "per_class_robust",
    "class_counts" ((K,)).
  """
  _check_attack_args(eps, step_size, num_steps, norm, bounds)
  _check_inputs(x, y)
  _checks.check_ndim(y, 1, "y")
  if x.shape[0] == 0:
    raise ValueError(f"`x` is empty (shape {x.shape}): pass at least one example.")
  if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
    raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
  _check_fraction(tail_fraction, "tail_fraction")
  _checks.check_class_labels(y, num_classes, "y")
  _check_in_bounds(x, bounds)
  n = x.shape[0]
  batch_size = int(min(batch_size, n))
  num_batches = -(-n // batch_size)
  pad = num_batches * batch_size - n
  xp = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
  yp = jnp.concatenate([y, jnp.zeros((pad,), y.dtype)]) if pad else y
  mask = jnp.arange(num_batches * batch_size) < n
  xb = xp.reshape((num_batches, batch_size) + x.shape[1:])
  yb = yp.reshape((num_batches, batch_size))
  mb = mask.reshape((num_batches, batch_size))

  def ce(p, xx, yy):
    logits = logits_fn(p, xx)
    return -jnp.take_along_axis(jax.nn.log_softmax(logits.astype(jnp.float32), -1), yy[:, None], -1)[:, 0]

  def one(args):
    i, xx, yy, mm = args
    clean = jnp.argmax(logits_fn(params, xx), -1) == yy
    x_adv = pgd_attack(ce, params, xx, yy, jax.random.fold_in(key, i), eps=eps, step_size=step_size,
                       num_steps=num_steps, norm=norm, random_start=random_start, bounds=bounds)
    robust = jnp.argmax(logits_fn(params, x_adv), -1) == yy
    onehot = jax.nn.one_hot(yy, num_classes, dtype=jnp.float32) * mm[:, None].astype(jnp.float32)
    return (onehot.sum(0), (onehot * clean[:, None].astype(jnp.float32)).sum(0),
            (onehot * robust[:, None].astype(jnp.float32)).sum(0))

  counts, clean_c, robust_c = jax.lax.map(one, (jnp.arange(num_batches), xb, yb, mb))
  counts, clean_c, robust_c = counts.sum(0), clean_c.sum(0), robust_c.sum(0)
  safe = jnp.maximum(counts, 1.0)
  per_clean, per_robust = clean_c / safe, robust_c / safe
  total = jnp.maximum(counts.sum(), 1.0)
  return {"sa": clean_c.sum() / total, "ra": robust_c.sum() / total,
          "ra_tail": tail_accuracy(per_robust, counts, tail_fraction),
          "sa_tail": tail_accuracy(per_clean, counts, tail_fraction),
          "per_class_clean": per_clean, "per_class_robust": per_robust, "class_counts": counts}


def robust_accuracy(logits_fn, params, x, y, key, **kwargs) -> Array:
  """RA-PGD only (see `robust_evaluate`); `num_classes` defaults to the logits' width."""
  if "num_classes" not in kwargs:
    kwargs["num_classes"] = int(jax.eval_shape(lambda: logits_fn(params, x[:1])).shape[-1])
  return robust_evaluate(logits_fn, params, x, y, key, **kwargs)["ra"]

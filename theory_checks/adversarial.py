"""DONE / PGD claims, verified numerically in float64 (`python -m theory_checks.run_all --only adversarial`).

1. Compositional objective: Phi(theta) = r log mean_i exp(l_i(theta, delta_i*(theta)) / r) has gradient
   sum_i w*_i dl_i/dtheta with w* = softmax(l / r) (Danskin on the closed-form KL-DRO inner max), where dl_i/dtheta
   is the implicit hypergradient through the log-barrier lower level. Checked against central finite
   differences of Phi (the lower level re-solved at every perturbed theta), and `done_objective`'s autodiff
   gradient against the same weighted sum; also with a fixed attack (pure Danskin).
2. Implicit hypergradient of sum_i l_i(theta, x_i + delta_i*(theta)) vs finite differences on a 2-layer tanh
   network, with the lower-level Hessian checked positive definite at the solution (the IFT assumption); and
   as the barrier weight mu -> 0 the interior solution and the hypergradient approach those of the constrained
   lower level (solved by projected gradient to machine precision): the distances shrink monotonically.
3. PGD feasibility: for every example and coordinate, |x_adv - x| <= eps (L_inf) or ||x_adv - x||_2 <= eps
   (L_2), and lo <= x_adv <= hi — exactly, in float32 and float64, including eps larger than the box.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxfair import adversarial as adv
from jaxfair import reweighting
from theory_checks.report import Check, identity, inequality


def _mlp_init(key, d_in, hidden, k):
  k1, k2 = jax.random.split(key)
  return {"w1": jax.random.normal(k1, (d_in, hidden), jnp.float64) / np.sqrt(d_in),
          "b1": jnp.zeros((hidden,), jnp.float64),
          "w2": jax.random.normal(k2, (hidden, k), jnp.float64) / np.sqrt(hidden)}


def _ce(params, x, y):
  h = jnp.tanh(x.reshape(x.shape[0], -1) @ params["w1"] + params["b1"][None, :])
  logits = h @ params["w2"]
  return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], -1)[:, 0]


def _problem(seed, n, d, hidden=8, k=3):
  key = jax.random.key(seed)
  kx, ky, kp = jax.random.split(key, 3)
  x = jax.random.uniform(kx, (n, d), jnp.float64)
  x = x.at[:, : d // 4].set(0.0)  # some coordinates on the box boundary (like blank pixels)
  y = jax.random.randint(ky, (n,), 0, k)
  params = _mlp_init(kp, d, hidden, k)
  return params, x, y


def _flatten(tree):
  return jnp.concatenate([jnp.ravel(l) for l in jax.tree.leaves(tree)])


def _random_direction(key, params):
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(tree, [jax.random.normal(k, l.shape, l.dtype) for k, l in zip(keys, leaves)])


def _axpy(params, direction, h):
  return jax.tree.map(lambda p, v: p + h * v, params, direction)


_EPS = 0.2
_R = 0.5
_NEWTON = 40


def _config(d, mu, lam, interior):
  # mu, lam, interior may be traced: one compiled program serves every barrier weight.
  return adv.BarrierConfig(mu=mu, lam=lam, newton_steps=_NEWTON, cg_steps=2 * d, backward_cg_steps=2 * d,
                           interior=interior)


def _solve(params, x, y, warm, mu, lam, interior):
  cfg = _config(x.shape[-1], mu, lam, interior)
  return adv.solve_barrier_attack(_ce, params, x, y, warm, eps=_EPS, bounds=(0.0, 1.0), config=cfg)


def _implicit_jacobian(params, x, y, warm, mu, lam, interior):
  """Per-example implicit hypergradients dl_i/dtheta (jacrev through the custom VJP) and the losses."""
  cfg = _config(x.shape[-1], mu, lam, interior)
  fn = adv._implicit_delta(_ce, _EPS, (0.0, 1.0), cfg)  # pylint: disable=protected-access
  losses_fn = lambda p: _ce(p, x + fn(p, x, y, warm), y)
  return jax.jacrev(losses_fn)(params), losses_fn(params)


def _done_gradient(params, x, y, warm, mu, lam, interior):
  """jax.grad of `done_objective` (per-batch KL-DRO weights, implicit perturbation)."""
  cfg = _config(x.shape[-1], mu, lam, interior)
  fn = adv._implicit_delta(_ce, _EPS, (0.0, 1.0), cfg)  # pylint: disable=protected-access
  config = adv.DoneConfig(perturbation=lambda lf, p, xx, yy, k: xx + fn(p, xx, yy, warm),
                          weighting=reweighting.kl_dro_rule(_R), gradient="implicit")
  g, _ = jax.grad(adv.done_objective, argnums=1, has_aux=True)(
      _ce, params, x, y, jax.random.key(0), config.weighting.init(), config=config)
  return g


@jax.jit
def _everything_at(params, x, y, warm, mu, lam, interior):
  """One compiled program (mu, lam traced) for all quantities at one barrier weight: the per-example implicit
  hypergradients, the losses, jax.grad of `done_objective`, delta*, the fixed-attack Danskin gap and the
  lower-level diagnostics."""
  jac, losses = _implicit_jacobian(params, x, y, warm, mu, lam, interior)
  g_done = _done_gradient(params, x, y, warm, mu, lam, interior)
  dstar = _solve(params, x, y, warm, mu, lam, interior)
  return dict(jac=jac, losses=losses, g_done=g_done, dstar=dstar, danskin_gap=_danskin_gap(params, x + dstar, y),
              diagnostics=_lower_level_diagnostics(params, x, y, dstar, mu, lam),
              g_danskin=jax.grad(lambda p: jnp.sum(_ce(p, x + dstar, y)))(params))


def _danskin_gap(params, x_adv, y):
  """Fixed attack: max |grad Phi - sum_i w*_i grad l_i|."""
  g = jax.grad(lambda p: reweighting.kl_dro_value(_ce(p, x_adv, y), _R))(params)
  jac = jax.jacrev(lambda p: _ce(p, x_adv, y))(params)
  w = reweighting.kl_dro_weights(_ce(params, x_adv, y), _R)
  weighted = jax.tree.map(lambda j: jnp.tensordot(w, j, axes=1), jac)
  return jnp.max(jnp.abs(_flatten(g) - _flatten(weighted)))


def _lower_level_diagnostics(params, x, y, dstar, mu, lam):
  """(max |grad_delta g(delta*)|, min eigenvalue of the per-example Hessians of g)."""
  obj = lambda dd: adv.barrier_objective(_ce, params, x, y, dd, eps=_EPS, mu=mu, lam=lam)
  grad = jax.grad(lambda dd: jnp.sum(obj(dd)))(dstar)
  hess = jax.vmap(lambda xi, yi, di: jax.hessian(lambda dd: adv.barrier_objective(
      _ce, params, xi[None], yi[None], dd[None], eps=_EPS, mu=mu, lam=lam)[0])(di))(x, y, dstar)
  return jnp.max(jnp.abs(grad)), jnp.min(jnp.linalg.eigvalsh(hess))


@functools.partial(jax.jit, static_argnames=("steps",))
def _constrained_solution(params, x, y, lam, steps):
  """argmin_{delta in [a, b]} -l + lam/2 ||delta||^2 by projected gradient descent (strongly convex)."""
  a, b = adv._delta_interval(x, _EPS, (0.0, 1.0))  # pylint: disable=protected-access
  grad = jax.grad(lambda d: jnp.sum(-_ce(params, x + d, y) + 0.5 * lam * jnp.sum(d * d, axis=-1)))
  lr = 1.0 / (2.0 * lam)
  step = lambda d: jnp.clip(d - lr * grad(d), a, b)
  d0 = jax.lax.fori_loop(0, steps, lambda _, d: step(d), jnp.zeros_like(x))
  return d0, jnp.max(jnp.abs(step(d0) - d0))  # solution and its fixed-point residual


@jax.jit
def _constrained_hypergradient(params, x, y, d0, lam):
  """d/dtheta sum_i l_i(theta, x_i + delta0_i(theta)) for the box-constrained lower level (dense, per example).

  Under strict complementarity the active coordinates stay at their bounds (d delta_A / d theta = 0) and the
  free ones follow the implicit function theorem on the free block of the Hessian of -l + lam/2 ||delta||^2.
  """
  a, b = adv._delta_interval(x, _EPS, (0.0, 1.0))  # pylint: disable=protected-access
  free = ((d0 - a) > 1e-9) & ((b - d0) > 1e-9)

  def one(xi, yi, di, fi):
    loss = lambda p, dd: _ce(p, (xi + dd)[None], yi[None])[0]
    v = jax.grad(loss, argnums=1)(params, di)
    h = jax.hessian(lambda dd: -loss(params, dd) + 0.5 * lam * jnp.sum(dd * dd))(di)
    fm = fi.astype(h.dtype)
    u = jnp.linalg.solve(fm[:, None] * h * fm[None, :] + jnp.diag(1.0 - fm), fm * v)
    mixed = jax.grad(lambda p: jnp.vdot(jax.grad(loss, argnums=1)(p, di), u))(params)
    direct = jax.grad(loss)(params, di)
    return jax.tree.map(jnp.add, direct, mixed)

  return jax.tree.map(lambda t: t.sum(0), jax.vmap(one)(x, y, d0, free))


def _lam_for(params):
  """A bound on the input curvature of CE(tanh MLP) with a factor-2 margin: makes the lower level strongly
  convex (checked at the solution below)."""
  s1 = jnp.linalg.norm(params["w1"], 2)
  s2 = jnp.linalg.norm(params["w2"], 2)
  return float(2.0 * (0.5 * (s1 * s2) ** 2 + 0.8 * s1 ** 2 * s2) + 0.5)


def _check_hypergradients(quick) -> list[Check]:
  n, d = (6, 12) if quick else (16, 32)
  num_dirs = 2 if quick else 6
  params, x, y = _problem(1, n, d)
  lam = _lam_for(params)
  mu = 1e-3
  warm = jnp.zeros_like(x)
  at = _everything_at(params, x, y, warm, mu, lam, 0.05)
  jac, losses = at["jac"], at["losses"]
  g_sum = jax.tree.map(lambda j: j.sum(0), jac)
  w = reweighting.kl_dro_weights(losses, _R)
  g_phi = jax.tree.map(lambda j: jnp.tensordot(w, j, axes=1), jac)
  err_sum, err_phi = [], []
  for i in range(num_dirs):
    v = _random_direction(jax.random.key(100 + i), params)
    h = 1e-5
    # Re-solved lower level at theta +- h v (the same compiled program; only its losses are used).
    l_p = _everything_at(_axpy(params, v, h), x, y, warm, mu, lam, 0.05)["losses"]
    l_m = _everything_at(_axpy(params, v, -h), x, y, warm, mu, lam, 0.05)["losses"]
    s_p, s_m = jnp.sum(l_p), jnp.sum(l_m)
    phi_p, phi_m = reweighting.kl_dro_value(l_p, _R), reweighting.kl_dro_value(l_m, _R)
    fd_sum, fd_phi = (s_p - s_m) / (2 * h), (phi_p - phi_m) / (2 * h)
    err_sum.append(float(jnp.abs(fd_sum - jnp.vdot(_flatten(g_sum), _flatten(v))) / jnp.abs(fd_sum)))
    err_phi.append(float(jnp.abs(fd_phi - jnp.vdot(_flatten(g_phi), _flatten(v))) / jnp.abs(fd_phi)))
  err_done = float(jnp.max(jnp.abs(_flatten(at["g_done"]) - _flatten(g_phi))))
  err_fixed = float(at["danskin_gap"])
  gap_danskin = float(jnp.linalg.norm(_flatten(at["g_danskin"]) - _flatten(g_sum)) / jnp.linalg.norm(_flatten(g_sum)))
  grad_norm, min_eig = (float(t) for t in at["diagnostics"])
  setting = f"2-layer tanh net, n={n}, d={d}, eps={_EPS}, mu={mu:g}, lam={lam:.2f}, {num_dirs} random directions"
  checks = [
      identity("DONE: grad Phi = sum_i softmax(l/r)_i * implicit hypergrad_i, vs central FD of Phi (rel.)",
               max(err_phi), 1e-5, f"r={_R}; " + setting),
      identity("DONE: done_objective autodiff gradient = KL-DRO-weighted implicit hypergradients (abs.)",
               err_done, 1e-10),
      identity("Danskin (attack fixed): grad Phi = sum_i w*_i grad l_i (abs.)", err_fixed, 1e-12),
      identity("implicit hypergradient (log-barrier, Newton-CG + CG) vs central FD (rel.)", max(err_sum), 1e-5,
               f"Danskin-only gradient differs by {gap_danskin:.2%}"),
      inequality("lower level solved: max |grad_delta g(delta*)|", grad_norm, 1e-7),
      inequality("lower level strongly convex at delta*: -(min Hessian eigenvalue) <= 0", -min_eig, 0.0,
                 f"min eigenvalue {min_eig:.3g}"),
  ]

  # mu -> 0: the interior solution and the hypergradient approach the constrained ones.
  steps = 3000 if quick else 20000
  d0, pg_residual = _constrained_solution(params, x, y, lam, steps)
  pg_residual = float(pg_residual)
  g0 = _constrained_hypergradient(params, x, y, d0, lam)
  mus = (1e-2, 1e-3, 1e-4, 1e-5) if quick else (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
  dists, gaps = [], []
  warm = jnp.zeros_like(x)
  for k, mu_k in enumerate(mus):
    interior = 0.05 if k == 0 else 1e-12  # continuation: warm-start from the previous (interior) solution
    at_mu = _everything_at(params, x, y, warm, mu_k, lam, interior)
    dmu = at_mu["dstar"]
    g_mu = jax.tree.map(lambda j: j.sum(0), at_mu["jac"])
    warm = dmu
    dists.append(float(jnp.max(jnp.abs(dmu - d0))))
    gaps.append(float(jnp.linalg.norm(_flatten(g_mu) - _flatten(g0)) / jnp.linalg.norm(_flatten(g0))))
  detail = ", ".join(f"mu={m:g}: |d-d0|={a:.2e} grad gap={b:.2e}" for m, a, b in zip(mus, dists, gaps))
  checks += [
      inequality("mu -> 0: ||delta*_mu - delta*_0||_inf non-increasing (max successive increase <= 0)",
                 max(b - a for a, b in zip(dists, dists[1:])), 0.0, detail),
      inequality("mu -> 0: relative hypergradient gap to the constrained one non-increasing",
                 max(b - a for a, b in zip(gaps, gaps[1:])), 0.0),
      inequality(f"mu = {mus[-1]:g}: ||delta*_mu - delta*_0||_inf", dists[-1], 1e-2,
                 f"projected-gradient residual {pg_residual:.1e}"),
      inequality(f"mu = {mus[-1]:g}: relative hypergradient gap to the constrained solution", gaps[-1], 1e-2),
  ]
  return checks


def _check_pgd_feasibility(quick) -> list[Check]:
  checks = []
  n, d = (64, 20) if quick else (512, 64)
  # quick: float32 and bfloat16; the full run adds float64. A bf16 attack is measured exactly (in float64)
  # against eps in float32, the precision its feasibility guard works in; the others in their own dtype.
  for dtype in ((jnp.float32, jnp.bfloat16) if quick else (jnp.float32, jnp.bfloat16, jnp.float64)):
    measure = jnp.float64 if dtype == jnp.bfloat16 else dtype
    params, x, y = _problem(3, n, d)
    params = jax.tree.map(lambda p: p.astype(dtype), params)
    x = x.astype(dtype)
    # Values exactly on/near the box edges and generic ones.
    x = x.at[:, -2].set(1.0).at[:, -1].set(jnp.asarray(1.0, dtype) - jnp.finfo(dtype).eps)
    for norm, eps_list in (("linf", (8 / 255, 0.3, 2.0)), ("l2", (0.5, 3.0, 50.0))):
      worst_ball, worst_box = -np.inf, 0.0
      eps_arr = jnp.asarray(eps_list, jnp.promote_types(dtype, jnp.float32))
      keys = jax.random.split(jax.random.key(0), len(eps_list))
      for start in (True,):
        attack = jax.jit(jax.vmap(lambda e, k, norm=norm, start=start: adv.pgd_attack(
            _ce, params, x, y, k, eps=e, step_size=e / 3, num_steps=15, norm=norm, random_start=start)))
        x_adv = attack(eps_arr, keys)  # (radii, n, d)
        dev = x_adv.astype(measure) - x[None].astype(measure)
        size = jnp.max(jnp.abs(dev), axis=-1) if norm == "linf" else jnp.sqrt(jnp.sum(dev * dev, axis=-1))
        worst_ball = max(worst_ball, float(jnp.max(size - eps_arr[:, None].astype(measure))))
        worst_box = max(worst_box, float(jnp.max(jnp.maximum(-x_adv, x_adv - 1.0))))
      name = jnp.dtype(dtype).name
      checks.append(inequality(f"PGD {norm} {name}: max_i (||x_adv_i - x_i|| - eps) <= 0 (exact)", worst_ball,
                               0.0, f"{n} examples x {len(eps_list)} radii x random start, 15 steps"))
      checks.append(inequality(f"PGD {norm} {name}: max box violation <= 0 (exact)", worst_box, 0.0))
  return checks


def run(quick: bool = False) -> list[Check]:
  with jax.enable_x64(True):
    return _check_hypergradients(quick) + _check_pgd_feasibility(quick)

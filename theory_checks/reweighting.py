"""Numerical verification of the KL-DRO / loss-based reweighting facts in spec/reweighting.md (float64).

Each claim is checked on random instances against an INDEPENDENT computation (scipy's SLSQP on the simplex,
central finite differences, Monte Carlo, closed forms) and reported with its worst margin:

* KL-DRO duality (value and maximiser) and the master inequality <w, l> <= Phi_r(l) + r KL(w || u);
  KL-ball DRO = inf_r Phi_r + r rho.
* Phi_r non-increasing in r (and dPhi/dr = -KL), the sandwich max(mean, l_max - r log n) <= Phi_r <= l_max,
  both limits (r -> 0: l_max; r -> inf: mean + Var/(2r)), shift-equivariance, joint convexity in (l, r).
* grad_l Phi = softmax(l/r) and Hessian (diag(w) - w w^T)/r against finite differences.
* Danskin: grad_theta Phi_r(l(theta)) = sum_i w_i grad l_i (finite differences); for the f∘h weights the
  field sum_i w_i grad l_i has a non-symmetric Jacobian, so it is the gradient of NO objective.
* CVaR_alpha <= Phi_r + r log(1/alpha); worst-group mean <= Phi_r + r log(1/p_g).
* GroupDRO's exponentiated-gradient iterates = softmax(eta * cumulative group losses).
* Minibatch bias: E_B Phi_r(l_B) <= Phi_r(l_full) (Jensen), the EMA normaliser reducing the bias.
* One-step descent under interpolation for any simplex weights, Chebyshev's sum inequality for weights
  non-decreasing in the loss (linupper, linear, KL-DRO), counterexamples for quadratic / extremes.
* The worst-case N * w_max table, w_max/w_min <= e^{(sup f - inf f)/r}, affine and permutation invariance.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from jaxfair import reweighting as rw
from theory_checks.report import Check, identity, inequality


@functools.lru_cache(maxsize=None)
def _jitted():
  """Library functions compiled once; callers pad losses to a fixed length and pass a mask (one compile)."""
  return dict(
      kl_w=jax.jit(rw.kl_dro_weights), kl_v=jax.jit(rw.kl_dro_value),
      kl_v_rs=jax.jit(jax.vmap(rw.kl_dro_value, in_axes=(None, 0, None))),
      dphi_dr=jax.jit(jax.grad(rw.kl_dro_value, argnums=1)),
      grad=jax.jit(jax.grad(rw.kl_dro_value)),
      lb=jax.jit(rw.loss_based_weights, static_argnames="strategy"),
      cvar_v=jax.jit(rw.cvar_value), cvar_w=jax.jit(rw.cvar_weights),
      minmax=jax.jit(rw.minmax_normalize),
      # rows: the four strategies in STRATEGIES order, then KL-DRO
      all_w=jax.jit(lambda l, r, mask: jnp.stack([rw.loss_based_weights(l, s, r, 1.0, mask) for s in rw.STRATEGIES]
                                                 + [rw.kl_dro_weights(l, r, mask)])))


SIZE = 512  # every padded call uses this length, so each function compiles once


def _strategy_weights(f, l, r, n):
  """{strategy: weights} for the four strategies and "kl_dro" on raw losses, unpadded."""
  lp, mask = _pad(l, SIZE)
  rows = np.asarray(f["all_w"](lp, r, mask))[:, :n]
  return dict(zip(rw.STRATEGIES + ("kl_dro",), rows))


def _pad(l, size):
  """(losses padded to `size`, mask) as float64 device arrays."""
  l = np.asarray(l, np.float64)
  out = np.zeros(size)
  out[:l.size] = l
  return jnp.asarray(out), jnp.asarray(np.arange(size) < l.size)


def _unpad(w, n):
  return np.asarray(w)[:n]


def _phi_np(l, r):
  m = l.max()
  return m + r * np.log(np.mean(np.exp((l - m) / r)))


def _kl_u(w):
  n = w.size
  w = np.clip(w, 1e-300, None)
  return float(np.sum(w * np.log(w * n)))


def _slsqp_max(objective, n, constraints=(), x0=None):
  """Maximises objective(w) over the simplex with scipy's SLSQP (independent of the closed form)."""
  cons = [{"type": "eq", "fun": lambda w: np.sum(w) - 1.0}] + list(constraints)
  x0 = np.full(n, 1.0 / n) if x0 is None else x0
  res = optimize.minimize(lambda w: -objective(w), x0, method="SLSQP", bounds=[(0.0, 1.0)] * n,
                          constraints=cons, options={"ftol": 1e-15, "maxiter": 1000})
  return res.x, -res.fun


def _duality(rng, trials):
  f = _jitted()
  value_err, arg_err, master = 0.0, 0.0, np.inf
  for _ in range(trials):
    n = int(rng.integers(3, 9))
    l = rng.normal(0, 2, n)
    r = float(np.exp(rng.uniform(np.log(0.2), np.log(5))))
    w_num, v_num = _slsqp_max(lambda w: w @ l - r * _kl_u(w), n)
    lp, mask = _pad(l, SIZE)
    phi = float(f["kl_v"](lp, r, mask))
    value_err = max(value_err, abs(v_num - phi))
    arg_err = max(arg_err, np.abs(w_num - _unpad(f["kl_w"](lp, r, mask), n)).max())
    for _ in range(20):  # master inequality for arbitrary simplex points
      w = rng.dirichlet(np.full(n, 0.3))
      master = min(master, phi + r * _kl_u(w) - w @ l)
  return [identity("duality: max_w <w,l> - r KL(w||u) (SLSQP) = Phi_r(l)", value_err, 1e-6),
          identity("duality: SLSQP maximiser = softmax(l/r)", arg_err, 1e-4),
          inequality("master inequality <w,l> <= Phi_r(l) + r KL(w||u)", -master, 0.0)]


def _kl_ball(rng, trials):
  err = 0.0
  for _ in range(trials):
    n = 6
    l = rng.normal(0, 1, n)
    rho = float(rng.uniform(0.05, 0.8))
    cons = [{"type": "ineq", "fun": lambda w, rho=rho: rho - _kl_u(w)}]
    _, primal = _slsqp_max(lambda w: w @ l, n, cons)
    dual = optimize.minimize_scalar(lambda s: _phi_np(l, math.exp(s)) + math.exp(s) * rho,
                                    bounds=(-8, 6), method="bounded", options={"xatol": 1e-10}).fun
    err = max(err, abs(primal - dual))
  return [identity("KL-ball DRO: sup_{KL(w||u)<=rho} <w,l> = inf_r Phi_r(l) + r rho", err, 1e-5)]


def _shape_facts(rng, trials):
  mono, dr_err, sand_lo, sand_hi, shift, convex = -np.inf, 0.0, np.inf, np.inf, 0.0, np.inf
  lim0, liminf = 0.0, 0.0
  rs = np.exp(np.linspace(np.log(1e-2), np.log(1e2), 60))
  f = _jitted()
  size = SIZE
  for _ in range(trials):
    n = int(rng.integers(2, 30))
    l = rng.gamma(2.0, 1.0, n) * rng.uniform(0.1, 5)
    lj, mask = _pad(l, size)
    phi_fn = lambda x, r, mask=mask: f["kl_v"](x, r, mask)  # noqa: E731
    vals = np.asarray(f["kl_v_rs"](lj, jnp.asarray(rs), mask))
    mono = max(mono, np.max(np.diff(vals)))
    for r in rs[::10]:
      w = _unpad(f["kl_w"](lj, r, mask), n)
      dr_err = max(dr_err, abs(float(f["dphi_dr"](lj, r, mask)) + _kl_u(w)) / max(1.0, _kl_u(w)))
      h = 1e-5 * r
      fd = (_phi_np(l, r + h) - _phi_np(l, r - h)) / (2 * h)
      dr_err = max(dr_err, abs(fd + _kl_u(w)) / max(1.0, _kl_u(w)) - 1e-6)
      phi = float(phi_fn(lj, r))
      sand_lo = min(sand_lo, phi - max(l.mean(), l.max() - r * np.log(n)))
      sand_hi = min(sand_hi, l.max() - phi)
      c = rng.normal() * 10
      shift = max(shift, abs(float(phi_fn(lj + c, r)) - phi - c))
    # limits
    r0 = 1e-4
    lim0 = max(lim0, abs(float(phi_fn(lj, r0)) - l.max()) / (r0 * np.log(n)))
    rinf = 1e4
    approx = l.mean() + l.var() / (2 * rinf)
    liminf = max(liminf, abs(float(phi_fn(lj, rinf)) - approx) * rinf**2 / (1 + np.abs(l - l.mean()).max()**3))
    # joint convexity in (l, r) along random segments
    l2 = l + rng.normal(0, 1, n)
    r1, r2 = rng.uniform(0.1, 3, 2)
    for t in (0.25, 0.5, 0.75):
      mid = float(phi_fn(_pad(t * l + (1 - t) * l2, size)[0], t * r1 + (1 - t) * r2))
      convex = min(convex, t * _phi_np(l, r1) + (1 - t) * _phi_np(l2, r2) - mid)
  return [
      inequality("Phi_r non-increasing in r (max increase on a grid of 60 r)", mono, 0.0),
      identity("dPhi/dr = -KL(w*||u) (autodiff and finite differences)", dr_err, 1e-6),
      inequality("sandwich lower: max(mean, l_max - r log n) <= Phi_r", -sand_lo, 0.0),
      inequality("sandwich upper: Phi_r <= l_max", -sand_hi, 0.0),
      inequality("limit r->0 (r=1e-4): |Phi_r - l_max| / (r log n) <= 1", lim0, 1.0 + 1e-9,
                 "equality iff the max is unique"),
      inequality("limit r->inf: |Phi_r - mean - Var/(2r)| r^2 / (1 + max|l - mean|^3) <= 1", liminf, 1.0),
      identity("shift-equivariance Phi_r(l + c) = Phi_r(l) + c", shift, 1e-10),
      inequality("joint convexity in (l, r) along random segments", -convex, 1e-12),
  ]


def _derivatives(rng, trials):
  g_err, h_err = 0.0, 0.0
  f = _jitted()
  for _ in range(trials):
    n = int(rng.integers(2, 12))
    l = rng.normal(0, 2, n)
    r = float(rng.uniform(0.2, 3))
    mask = _pad(l, SIZE)[1]
    grad = lambda x, r, mask=mask, n=n: _unpad(f["grad"](_pad(x, SIZE)[0], r, mask), n)  # noqa: E731
    w = _unpad(f["kl_w"](*_pad(l, SIZE)[:1], r, mask), n)
    eps = 1e-5
    fd = np.array([(_phi_np(l + eps * e, r) - _phi_np(l - eps * e, r)) / (2 * eps) for e in np.eye(n)])
    g_err = max(g_err, np.abs(fd - w).max())
    hess = (np.diag(w) - np.outer(w, w)) / r
    fd_h = np.stack([(grad(l + eps * e, r) - grad(l - eps * e, r)) / (2 * eps) for e in np.eye(n)])
    h_err = max(h_err, np.abs(fd_h - hess).max())
  return [identity("grad_l Phi_r = softmax(l/r) (finite differences)", g_err, 1e-8),
          identity("Hessian = (diag(w) - w w^T)/r (finite differences of the gradient)", h_err, 1e-7)]


def _danskin(rng, trials):
  d, n = 5, 12
  danskin_err = 0.0
  strategies = ("linupper", "quadratic", "extremes")
  kl_asym, fh_asym = 0.0, {s: np.inf for s in strategies}

  def losses(t, x, y):
    return 0.5 * jnp.square(x @ t - y)

  def field(weights_fn):
    """theta -> sum_i w_i(l(theta)) grad l_i(theta), weights differentiated too (no stop_gradient)."""
    def g(t, x, y, r):
      per_example_grads = jax.jacrev(losses)(t, x, y)  # (n, d)
      return weights_fn(losses(t, x, y), r) @ per_example_grads
    return g

  phi = jax.jit(lambda t, x, y, r: rw.kl_dro_value(losses(t, x, y), r))
  kl_field = field(rw.kl_dro_weights)
  kl_grad = jax.jit(kl_field)
  jac_kl = jax.jit(jax.jacfwd(kl_field))
  jac_fh_all = jax.jit(lambda *a: {s: jax.jacfwd(field(lambda l, r, s=s: rw.loss_based_weights(l, s, r)))(*a)
                                    for s in strategies})
  for _ in range(trials):
    x = jnp.asarray(rng.normal(0, 1, (n, d)))
    y = jnp.asarray(rng.normal(0, 1, n))
    theta = jnp.asarray(rng.normal(0, 1, d))
    r = float(rng.uniform(0.3, 2))
    eps = 1e-6
    fd = np.array([(float(phi(theta + eps * e, x, y, r)) - float(phi(theta - eps * e, x, y, r))) / (2 * eps)
                   for e in np.eye(d)])
    g_kl = np.asarray(kl_grad(theta, x, y, r))
    danskin_err = max(danskin_err, np.abs(fd - g_kl).max() / (1 + np.abs(fd).max()))
    # A smooth field is a gradient iff its Jacobian is symmetric.
    jac = np.asarray(jac_kl(theta, x, y, r))
    kl_asym = max(kl_asym, np.abs(jac - jac.T).max() / np.abs(jac).max())
    jac_fh = jac_fh_all(theta, x, y, r)
    for s in strategies:
      jac = np.asarray(jac_fh[s])
      fh_asym[s] = min(fh_asym[s], np.abs(jac - jac.T).max() / np.abs(jac).max())
  checks = [identity("Danskin: grad Phi_r(l(theta)) (finite differences) = sum_i w*_i grad l_i", danskin_err, 1e-6),
            identity("KL-DRO field sum_i w_i(theta) grad l_i has a symmetric Jacobian (it is grad Phi_r)", kl_asym,
                     1e-10)]
  for s, a in fh_asym.items():
    checks.append(inequality(f"Danskin fails for f∘h ({s}): Jacobian asymmetry >= 1e-3 (min over trials)",
                             1e-3, a, "the field sum_i w_i grad l_i is the gradient of no objective"))
  return checks


def _tail_bounds(rng, trials):
  f = _jitted()
  cvar_m, group_m = np.inf, np.inf
  for _ in range(trials):
    n = int(rng.integers(5, 200))
    l = rng.gamma(1.5, 1.0, n) * rng.uniform(0.2, 5)
    lj, mask = _pad(l, 200)
    groups = rng.integers(0, 3, n)
    for r in (0.05, 0.3, 1.0, 5.0):
      phi = _phi_np(l, r)
      for alpha in (0.01, 0.1, 0.3, 1.0):
        cvar_m = min(cvar_m, phi + r * np.log(1 / alpha) - float(f["cvar_v"](lj, alpha, mask)))
      for g in range(3):
        sel = groups == g
        if sel.any():
          group_m = min(group_m, phi + r * np.log(n / sel.sum()) - l[sel].mean())
  return [inequality("CVaR_alpha(l) <= Phi_r(l) + r log(1/alpha)", -cvar_m, 0.0),
          inequality("worst-group mean <= Phi_r(l) + r log(1/p_g)", -group_m, 0.0)]


def _group_dro(rng, trials):
  err = 0.0
  for _ in range(trials):
    g, steps = int(rng.integers(2, 6)), 50
    eta = float(rng.uniform(0.01, 0.5))
    losses = rng.gamma(2.0, 1.0, (steps, g))
    q = np.full(g, 1.0 / g)
    for t in range(steps):
      q = q * np.exp(eta * losses[t])
      q /= q.sum()
    lp, mask = _pad(losses.sum(0), SIZE)
    closed = _unpad(_jitted()["kl_w"](lp, 1.0 / eta, mask), g)
    err = max(err, np.abs(q - closed).max())
  return [identity("GroupDRO EG iterates = softmax(eta * cumulative group losses) (KL-DRO, r = 1/eta)", err, 1e-10)]


def _minibatch_bias(rng, quick):
  n, r = 5000, 1.0
  l = rng.gamma(2.0, 1.0, n)
  full_phi = _phi_np(l, r)
  w_full = np.exp((l - l.max()) / r)
  w_full /= w_full.sum()
  full_target = float(w_full @ l)  # the weighted loss the full-data KL-DRO gradient targets
  draws = 200 if quick else 2000
  checks, eff = [], {}
  for b in (8, 32, 128):
    phis, effs = [], []
    for _ in range(draws):
      lb = l[rng.choice(n, b, replace=False)]
      phis.append(_phi_np(lb, r))
      wb = np.exp((lb - lb.max()) / r)
      effs.append(float(wb / wb.sum() @ lb))
    eff[b] = float(np.mean(effs))
    checks.append(inequality(f"minibatch bias (Jensen): E_B Phi_r(l_B) <= Phi_r(l_full), B={b}", np.mean(phis),
                             full_phi, f"mean weighted loss per-batch {eff[b]:.3f} vs full {full_target:.3f}"))
  # EMA normaliser (beta = 0.01, B = 32): effective target sum_i w_i l_i averaged over a stream of batches.
  b, beta = 32, 0.01
  steps = 1500 if quick else 8000
  batches = jnp.asarray(np.stack([l[rng.choice(n, b, replace=False)] for _ in range(steps)]))

  def body(state, lb):
    w, state = rw.ema_kl_dro_weights(lb, state, r, beta)
    return state, (jnp.sum(w * lb), jnp.sum(w))

  _, (num, den) = jax.jit(lambda bs: jax.lax.scan(body, rw.ema_kl_dro_init(jnp.float64), bs))(batches)
  burn = steps // 3
  ema_eff = float(np.sum(num[burn:]) / np.sum(den[burn:]))
  checks.append(inequality("EMA normaliser (beta=0.01, B=32) is closer to the full-data target than per-batch",
                           abs(ema_eff - full_target), abs(eff[32] - full_target),
                           f"full {full_target:.3f}, per-batch B=8 {eff[8]:.3f}, B=32 {eff[32]:.3f}, "
                           f"B=128 {eff[128]:.3f}, EMA {ema_eff:.3f}"))
  checks.append(inequality("per-batch bias toward uniform shrinks with B (B=8 <= B=32 <= B=128 <= full)",
                           max(eff[8] - eff[32], eff[32] - eff[128], eff[128] - full_target), 0.0))
  return checks


def _descent(rng, trials):
  f = _jitted()
  strategies = ("linupper", "linear", "quadratic", "extremes")
  descent_m = np.inf
  cheb = {s: np.inf for s in ("linupper", "linear", "kl_dro")}
  counter = {"quadratic": 0, "extremes": 0}
  total = 0
  for _ in range(trials):
    n, d = int(rng.integers(4, 40)), int(rng.integers(2, 10))
    x = rng.normal(0, 1, (n, d)) * np.exp(rng.normal(0, 1, (n, 1)))
    theta_star = rng.normal(0, 1, d)
    y = x @ theta_star
    lips = np.max(np.sum(x**2, 1))  # l_i = 0.5 (x_i theta - y_i)^2 is ||x_i||^2-smooth
    theta = theta_star + rng.normal(0, 1, d)
    l = 0.5 * (x @ theta - y) ** 2
    grads = (x @ theta - y)[:, None] * x
    r = float(rng.choice([0.4, 1.0, 1.44]))
    weights = _strategy_weights(f, l, r, n)
    weights["kl_dro"] = _strategy_weights(f, l / l.max(), r, n)["kl_dro"]
    weights["random"] = rng.dirichlet(np.ones(n))
    for w in weights.values():
      for eta in (0.25 / lips, 1.0 / lips):
        new = theta - eta * (w @ grads)
        lhs = np.sum((new - theta_star) ** 2)
        rhs = np.sum((theta - theta_star) ** 2) - 2 * eta * (1 - eta * lips) * (w @ l)
        descent_m = min(descent_m, (rhs - lhs) / np.sum((theta - theta_star) ** 2))
    for s in cheb:
      cheb[s] = min(cheb[s], (weights[s] @ l - l.mean()) / l.mean())
    for s in counter:
      counter[s] += int(weights[s] @ l < l.mean() * (1 - 1e-12))
    total += 1
  checks = [inequality("one-step descent under interpolation, any simplex w, eta <= 1/L (relative margin)",
                       -descent_m, 0.0)]
  for s, m in cheb.items():
    checks.append(inequality(f"Chebyshev: sum w_i l_i >= mean(l) for {s} (relative margin)", -m, 0.0))
  for s, c in counter.items():
    checks.append(inequality(f"no such guarantee for {s}: counterexamples found", 1, c,
                             f"{c}/{total} instances with sum w_i l_i < mean(l)"))
  return checks


def _worst_case_table(rng, trials):
  f = _jitted()
  table = {0.4: (5.1, 9.0, 11.9), 1.0: (2.24, 2.58, 2.71), 1.44: (1.78, 1.94, 2.00)}
  formula_err, table_err, search_m, ratio_m = 0.0, 0.0, np.inf, np.inf
  lines = []
  for r, expected in table.items():
    row = []
    for big_n, want in zip((8, 32, 512), expected):
      formula = big_n * math.exp(1 / r) / (math.exp(1 / r) + big_n - 1)
      measured = big_n * float(np.max(_strategy_weights(f, np.eye(big_n)[0], r, big_n)["linupper"]))
      formula_err = max(formula_err, abs(measured - formula))
      decimals = 1 if r == 0.4 else 2
      table_err = max(table_err, abs(round(formula, decimals) - want))
      row.append(f"{measured:.3g}")
    lines.append(f"r={r}: " + "/".join(row))
  # no loss vector beats the worst case (random search), and the ratio bound e^{(sup f - inf f)/r}
  spans = {"linupper": 1.0, "extremes": 1.0, "quadratic": 1.0, "linear": 1.0}
  for _ in range(trials):
    big_n = int(rng.integers(2, 64))
    r = float(rng.choice([0.4, 1.0, 1.44]))
    bound = big_n * math.exp(1 / r) / (math.exp(1 / r) + big_n - 1)
    all_w = _strategy_weights(f, rng.gamma(0.5, 1.0, big_n), r, big_n)
    for s, span in spans.items():
      w = all_w[s]
      search_m = min(search_m, bound - big_n * w.max())
      ratio_m = min(ratio_m, math.exp(span / r) * (1 + 1e-12) - w.max() / w.min())
  r_crit = 1 / math.log(2)
  sup_two = max(n * 2.0 / (2.0 + n - 1) for n in (2, 8, 512, 10**6, 10**9))  # e^{1/r_crit} = 2
  return [identity("worst-case N w_max (one loss at sup f) = N e^{1/r}/(e^{1/r} + N - 1)", formula_err, 1e-5,
                   "; ".join(lines) + " for N=8/32/512"),
          identity("the spec's N w_max table (rounded as printed)", table_err, 1e-9),
          inequality("random losses never exceed the worst-case N w_max", -search_m, 0.0),
          inequality("w_max / w_min <= e^{(sup f - inf f)/r}", -ratio_m, 0.0),
          inequality("r = delta/ln 2 gives N w_max <= 2 for every N", sup_two, 2.0)]


def _invariances(rng, trials):
  f = _jitted()
  aff, shift, perm, lin = 0.0, 0.0, 0.0, 0.0
  size = SIZE
  for _ in range(trials):
    n = int(rng.integers(3, 50))
    l = rng.gamma(2.0, 1.0, n)
    lp, mask = _pad(l, size)
    p = rng.permutation(n)
    a, b = float(np.exp(rng.normal(0, 2))), float(rng.normal(0, 10))
    r = float(rng.uniform(0.2, 2))
    base = _strategy_weights(f, l, r, n)
    shifted = _strategy_weights(f, a * l + b, r, n)
    permuted = _strategy_weights(f, l[p], r, n)
    for s in rw.STRATEGIES:
      aff = max(aff, np.abs(shifted[s] - base[s]).max())
    shift = max(shift, np.abs(_strategy_weights(f, l + b, r, n)["kl_dro"] - base["kl_dro"]).max())
    for s in base:
      perm = max(perm, np.abs(permuted[s] - base[s][p]).max())
    lin = max(lin, np.abs(base["linear"] - _unpad(f["kl_w"](f["minmax"](lp, 1.0, mask), 2 * r, mask), n)).max())
    perm = max(perm, np.abs(_unpad(f["cvar_w"](_pad(l[p], size)[0], 0.3, mask), n)
                            - _unpad(f["cvar_w"](lp, 0.3, mask), n)[p]).max())
  # outlier sensitivity: one huge loss makes quadratic ~uniform and gives linupper the worst-case weight
  outlier = _strategy_weights(f, np.concatenate([rng.gamma(2.0, 1.0, 31), [1e6]]), 1.0, 32)
  quad = outlier["quadratic"]
  quad_kl = float(np.sum(quad * np.log(quad * 32)))
  lin_up = 32 * float(np.max(outlier["linupper"]))
  worst = 32 * math.e / (math.e + 31)
  return [identity("affine invariance of loss-based weights (a l + b, a > 0)", aff, 1e-10),
          identity("shift invariance of KL-DRO weights (l + c)", shift, 1e-10),
          identity("permutation equivariance (loss-based, KL-DRO, CVaR)", perm, 1e-12),
          identity("linear = KL-DRO on normalised losses at temperature 2r", lin, 1e-12),
          inequality("outlier: quadratic becomes ~uniform (KL to uniform)", quad_kl, 1e-4),
          identity("outlier: linupper gets the worst-case N w_max", lin_up - worst, 1e-4)]


def run(quick: bool = False) -> list[Check]:
  rng = np.random.default_rng(0)
  t = 4 if quick else 40
  with jax.enable_x64(True):
    checks = []
    checks += _duality(rng, t)
    checks += _kl_ball(rng, max(t // 2, 2))
    checks += _shape_facts(rng, t)
    checks += _derivatives(rng, t)
    checks += _danskin(rng, 2 if quick else 10)
    checks += _tail_bounds(rng, t)
    checks += _group_dro(rng, t)
    checks += _minibatch_bias(rng, quick)
    checks += _descent(rng, 50 if quick else 1000)
    checks += _worst_case_table(rng, 10 if quick else 200)
    checks += _invariances(rng, t)
  return checks

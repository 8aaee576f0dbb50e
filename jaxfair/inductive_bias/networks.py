"""Neural-network hypothesis space: many MLPs trained from independent inits in one compiled program.

Each hypothesis is an MLP Linear(d, w) + depth x Linear(w, w) + Linear(w, k) with ReLU (depth + 1 hidden
layers, as in Boopathy et al. 2024), PyTorch-default uniform init U(-1/sqrt(fan_in), 1/sqrt(fan_in)), trained
with Adam on the MSE to the (one-hot) targets; its sample is the trained net's test MSE (mean over test points
and outputs -- not the reference code's MSE / batch_size). Init and data order come from the hypothesis's key.

`train_mlp_hypothesis(key)` is a pure function with a `lax.scan` over epochs and minibatches, so
`jit(vmap(train))` over keys trains K nets as one program; `nn_hypothesis_losses` runs it through `lax.map`
with a vmapped chunk size that keeps the working set under `max_chunk_bytes`.
"""
from __future__ import annotations

import functools
import operator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxfair import _checks
from jaxfair.inductive_bias.kernels import _validate
from jaxfair.training import sharding

Array = jax.Array


class HypothesisLosses(NamedTuple):
  test: Array   # (K,) test MSE per hypothesis
  train: Array  # (K,) final training MSE per hypothesis (did it fit the training data?)


def mlp_init(key: Array, sizes: tuple[int, ...], dtype=jnp.float32) -> list[tuple[Array, Array]]:
  """[(W, b)] with W ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's nn.Linear default), same for b."""
  params = []
  for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
    kw, kb = jax.random.split(jax.random.fold_in(key, i))
    bound = 1.0 / np.sqrt(fan_in)
    params.append((jax.random.uniform(kw, (fan_in, fan_out), dtype, -bound, bound),
                   jax.random.uniform(kb, (fan_out,), dtype, -bound, bound)))
  return params


def _swap_last_axes(a: Array) -> Array:
  """`a` with its last two axes swapped, materialised as its own array.

  XLA:CPU would fold a plain transpose into the dot that consumes it, and a dot whose left operand contracts
  its major axis misses the fast (YNNPACK) GEMM path. With `_matmul` below, which never emits that form, a
  vmapped training step of tiny MLPs ran 1.4x (n = 64, width 16) to 1.7x (n = 5) faster than with plain
  matmuls on the 2-core CPU.
  """
  return jax.lax.optimization_barrier(jnp.swapaxes(a, -1, -2))


@jax.custom_vjp
def _matmul(a: Array, b: Array) -> Array:
  """a @ b whose backward pass, (g b^T, a^T g), transposes `a` explicitly (the weight when examples are
  columns, the activations when they are rows), so neither backward GEMM has a transposed left operand."""
  return a @ b


def _matmul_fwd(a, b):
  return a @ b, (a, b)


def _matmul_bwd(residuals, g):
  a, b = residuals
  return g @ b.T, _swap_last_axes(a) @ g


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def mlp_apply(params, x: Array, *, feature_major: bool = False) -> Array:
  """The MLP's outputs: x (n, in) -> (n, out) with weights (in, out) as `mlp_init` makes them; or, when
  `feature_major`, x (in, n) -> (out, n) with every weight transposed to (out, in) (PyTorch's layout).

  Both layouts compute the same function. Which is faster on CPU depends on the shapes: XLA:CPU runs the
  per-layer GEMMs best with the longer of (examples, width) as the minor axis (measured on tiny MLPs: n = 64,
  width 16 trains 1.3x (one net) to 1.8x (vmapped) faster feature-major, n = 5 or width 256 1.2-1.4x
  slower), hence `train_mlp_hypothesis` picks `feature_major = batch size > width`. `_matmul`'s custom VJP
  (the same gradients as autodiff) keeps every GEMM in its fast form.
  """
  if feature_major:
    for w, b in params[:-1]:
      x = jax.nn.relu(_matmul(w, x) + b[:, None])
    w, b = params[-1]
    return _matmul(w, x) + b[:, None]
  for w, b in params[:-1]:
    x = jax.nn.relu(_matmul(x, w) + b[None, :])
  w, b = params[-1]
  return _matmul(x, w) + b[None, :]


def mlp_sizes(in_dim: int, out_dim: int, width: int, depth: int) -> tuple[int, ...]:
  return (in_dim,) + (width,) * (depth + 1) + (out_dim,)


def _mse(params, x, y, feature_major):
  return jnp.mean(jnp.square(mlp_apply(params, x, feature_major=feature_major) - y))


def _check_mlp_args(width, depth, epochs, learning_rate, batch_size) -> None:
  """Sizes fix the compiled program's shapes (Python ints); the step size must be > 0 (when concrete)."""
  for name, v, low in (("width", width, 1), ("depth", depth, 0), ("epochs", epochs, 1),
                       ("batch_size", 1 if batch_size is None else batch_size, 1)):
    try:
      ok = not isinstance(v, bool) and operator.index(v) >= low  # ints and integer 0-d arrays
    except TypeError:
      ok = False
    if not ok:
      raise ValueError(f"`{name}` must be an int >= {low}, got {v!r}.")
  if not callable(learning_rate):  # an optax schedule is fine
    _checks.check_positive(learning_rate, "learning_rate")


def train_mlp_hypothesis(key: Array, x_train: Array, y_train: Array, x_test: Array, y_test: Array, *,
                         width: int, depth: int, epochs: int, learning_rate: float = 1e-3,
                         batch_size: int | None = None) -> tuple[Array, Array]:
  """Trains one MLP from `key` (init and data order); returns (test MSE, train MSE). Pure, vmappable."""
  _validate(x_train, y_train, x_test, y_test)
  _check_mlp_args(width, depth, epochs, learning_rate, batch_size)
  x_train, y_train, x_test, y_test = (jnp.asarray(a) for a in (x_train, y_train, x_test, y_test))
  (n, in_dim), out_dim = x_train.shape, y_train.shape[1]
  bs = n if batch_size is None else min(int(batch_size), n)
  feature_major = bs > width  # the faster layout on CPU (see `mlp_apply`); same function either way
  if feature_major:
    x_train, y_train, x_test, y_test = x_train.T, y_train.T, x_test.T, y_test.T
  steps_per_epoch = n // bs
  init_key, order_key = jax.random.split(key)
  params = mlp_init(init_key, mlp_sizes(in_dim, out_dim, width, depth), x_train.dtype)
  if feature_major:
    params = [(w.T, b) for w, b in params]
  # Weights train as flat vectors (reshaped back for free in the loss): Adam's elementwise update then runs
  # over long rows, which XLA:CPU vectorises better than (fan_in, fan_out) tiles as narrow as 16.
  shapes = [w.shape for w, _ in params]
  params = [(w.reshape(-1), b) for w, b in params]
  opt = optax.adam(learning_rate)

  def loss(flat_params, x, y):
    params = [(w.reshape(shape), b) for (w, b), shape in zip(flat_params, shapes)]
    return _mse(params, x, y, feature_major)

  grad_fn = jax.grad(loss)
  take = (lambda a, idx: a[:, idx]) if feature_major else (lambda a, idx: a[idx])

  def step(carry, idx):
    params, opt_state = carry
    # Full batch: use the data as is (a gather of the whole set every step is pure overhead).
    x, y = (x_train, y_train) if idx is None else (take(x_train, idx), take(y_train, idx))
    grads = grad_fn(params, x, y)
    updates, opt_state = opt.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  def epoch(carry, e):
    if bs == n:
      return step(carry, None)
    perm = jax.random.permutation(jax.random.fold_in(order_key, e), n)
    idx = perm[:steps_per_epoch * bs].reshape(steps_per_epoch, bs)
    carry, _ = jax.lax.scan(step, carry, idx)
    return carry, None

  (params, _), _ = jax.lax.scan(epoch, (params, opt.init(params)), jnp.arange(epochs))
  return loss(params, x_test, y_test), loss(params, x_train, y_train)


def mlp_bytes_per_hypothesis(n_train: int, n_test: int, in_dim: int, out_dim: int, width: int, depth: int,
                             batch_size: int | None, itemsize: int = 4) -> int:
  """Rough working set of one hypothesis: params x 4 (params, grads, two Adam moments) plus activations."""
  sizes = mlp_sizes(in_dim, out_dim, width, depth)
  num_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
  bs = n_train if batch_size is None else min(batch_size, n_train)
  acts = 2 * max(bs, n_test, n_train) * sum(sizes)
  return itemsize * (4 * num_params + acts)


@functools.partial(jax.jit, static_argnames=("num_hypotheses", "width", "depth", "epochs", "batch_size",
                                             "chunk_size", "mesh"))
def _train_many(key, x_train, y_train, x_test, y_test, learning_rate, *, num_hypotheses, width, depth, epochs,
                batch_size, chunk_size, mesh):
  train = functools.partial(train_mlp_hypothesis, x_train=x_train, y_train=y_train, x_test=x_test,
                            y_test=y_test, width=width, depth=depth, epochs=epochs, learning_rate=learning_rate,
                            batch_size=batch_size)
  keys = jax.random.split(key, num_hypotheses)
  shards = sharding.axis_size(mesh, sharding.RUNS)
  if shards == 1:
    test, train_loss = jax.lax.map(train, keys, batch_size=chunk_size)
    return HypothesisLosses(test, train_loss)
  # Every vmapped chunk is split over the devices of the "runs" axis (each trains chunk / shards nets; no
  # communication). Chunks are a multiple of the shard count; the last one is padded with copies of the last
  # key, whose results are dropped.
  chunk = -(-chunk_size // shards) * shards
  num_chunks = -(-num_hypotheses // chunk)
  pad = num_chunks * chunk - num_hypotheses
  keys = jnp.concatenate([keys, jnp.broadcast_to(keys[-1:], (pad,))]) if pad else keys
  keys = jax.lax.with_sharding_constraint(keys.reshape(num_chunks, chunk),
                                          NamedSharding(mesh, P(None, sharding.RUNS)))
  test, train_loss = jax.lax.map(jax.vmap(train), keys)
  return HypothesisLosses(test.reshape(-1)[:num_hypotheses], train_loss.reshape(-1)[:num_hypotheses])


def nn_hypothesis_losses(key: Array, train: tuple[Array, Array], test: tuple[Array, Array], *,
                         num_hypotheses: int, width: int, depth: int, epochs: int = 100,
                         learning_rate: float = 1e-3, batch_size: int | None = None,
                         chunk_size: int | None = None, max_chunk_bytes: int | None = None,
                         mesh: jax.sharding.Mesh | None = None) -> HypothesisLosses:
  """Test (and train) MSEs of `num_hypotheses` MLPs trained from independent inits and data orders.

  Args:
    key: typed PRNG key; hypothesis i uses `split(key, K)[i]` for its init and minibatch order.
    train, test: (x (n, d), y (n, k)) pairs; y one-hot for classification.
    num_hypotheses: K.
    width, depth: hidden width and number of extra hidden layers (depth + 1 hidden layers).
    epochs: passes over the training set; `batch_size=None` is full batch (one step per epoch).
    learning_rate: Adam step size (reference 1e-3).
    chunk_size: hypotheses trained together in one vmapped chunk (default: from `max_chunk_bytes`).
    max_chunk_bytes: working-set budget of one chunk per device. Default: 8 MiB on CPU (a chunk that stays
      in cache trains faster: 1024 tiny MLPs took 0.60 s in chunks of 64-256 vs 0.95 s in one chunk on the
      2-core CPU), 256 MiB on accelerators.
    mesh: optional device mesh (`jaxfair.training.sharding.make_sweep_mesh()`); each chunk's hypotheses are
      split over its "runs" axis, so every device trains its own nets (same results as unsharded). On a
      multi-core CPU, `XLA_FLAGS=--xla_force_host_platform_device_count=<cores>` makes one device per core.

  Returns:
    `HypothesisLosses(test=(K,), train=(K,))`. Hypotheses that did not fit the training data show a large
    `train` loss; filter on it if the hypothesis distribution should only contain interpolating nets.

  Example:
    >>> out = nn_hypothesis_losses(jax.random.key(0), (xtr, ytr), (xte, yte), num_hypotheses=512, width=64,
    ...                            depth=1, epochs=200)
  """
  (x_train, y_train), (x_test, y_test) = train, test
  _validate(x_train, y_train, x_test, y_test)
  if int(num_hypotheses) < 1:
    raise ValueError(f"`num_hypotheses` must be >= 1, got {num_hypotheses}.")
  _check_mlp_args(width, depth, epochs, learning_rate, batch_size)
  x_train = jnp.asarray(x_train)
  dtype = x_train.dtype if jnp.issubdtype(x_train.dtype, jnp.floating) else jnp.float32
  cast = lambda a: jnp.asarray(a, dtype)
  if chunk_size is None:
    per = mlp_bytes_per_hypothesis(x_train.shape[0], np.shape(x_test)[0], x_train.shape[1], np.shape(y_train)[1],
                                   int(width), int(depth), batch_size, jnp.dtype(dtype).itemsize)
    if max_chunk_bytes is None:
      max_chunk_bytes = (8 << 20) if jax.default_backend() == "cpu" else (256 << 20)
    budget = max_chunk_bytes * sharding.axis_size(mesh, sharding.RUNS)
    chunk_size = default_chunk_size(per, budget, int(num_hypotheses))
  return _train_many(key, cast(x_train), cast(y_train), cast(x_test), cast(y_test), learning_rate,
                     num_hypotheses=int(num_hypotheses), width=int(width), depth=int(depth), epochs=int(epochs),
                     batch_size=None if batch_size is None else int(batch_size), chunk_size=int(chunk_size),
                     mesh=mesh)


def default_chunk_size(bytes_per_item: int, max_chunk_bytes: int, total: int) -> int:
  return int(max(1, min(total, max_chunk_bytes // max(bytes_per_item, 1))))

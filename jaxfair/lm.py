"""A small character-level causal transformer (flax NNX) and a per-SEQUENCE language-model loss.

Model (GPT-2 style, pre-LayerNorm; Radford et al., 2019): for tokens t_1..t_T,

    h_0 = E[t] + P[1..T]                                  (token + learned position embeddings)
    h_l = h'_l + MLP(LN(h'_l)),  h'_l = h_{l-1} + Attn(LN(h_{l-1}))      l = 1..L
    logits = W LN(h_L) + b                                (B, T, V)

with multi-head causal self-attention softmax(q k^T / sqrt(d_head) + M) v, M_ij = -inf for j > i, so the
output at position i depends only on tokens 1..i. There is no dropout: the model is a deterministic
function of (params, tokens), which keeps the training core pure. `causal_lm(...)` converts it once into a
`jaxfair.models.PureModel` whose params are plain nested dicts (vmappable over init keys).

Per-sequence loss (what the loss-based reweighting of Sow et al., 2025 weights): the mean token
cross-entropy of each sequence,

    l_b = (1 / |V_b|) sum_{t in V_b} -log softmax(logits_{b,t})[y_{b,t}],   V_b = {t : y_{b,t} >= 0},

where a negative label marks an ignored token (padding inside a sequence). `sequence_cross_entropy` has the
training core's `PerExampleLoss` signature `(outputs (B, T, V), labels (B, T), *, key, mask) -> (B,)`; padded
EXAMPLES (mask = 0) get loss 0, and so does a sequence with no valid token.

Example:

  model = causal_lm(vocab_size=96, max_len=64)
  params, state = model.init(jax.random.key(0))
  logits, _ = model.apply(params, state, tokens)               # tokens (B, T<=64) int32
  losses = sequence_cross_entropy(logits, labels)              # (B,)

References:
  Vaswani et al. Attention is all you need. NeurIPS 2017.
  Radford et al. Language models are unsupervised multitask learners (GPT-2). 2019.
  Sow, Woisetschläger, Bulusu, Wang, Jacobsen, Liang. Dynamic Loss-Based Sample Reweighting for Improved
    Large Language Model Pretraining. ICLR 2025, arXiv:2502.06733.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx
import numpy as np

from jaxfair import _checks
from jaxfair.data.batching import padded_batches
from jaxfair.models import PureModel, pure_model

Array = jax.Array
PyTree = Any


class CausalSelfAttention(nnx.Module):
  """Multi-head self-attention with a causal mask (position i attends to positions <= i)."""

  def __init__(self, d_model: int, num_heads: int, *, out_init_scale: float, rngs: nnx.Rngs):
    if d_model % num_heads:
      raise ValueError(f"`d_model` ({d_model}) must be divisible by `num_heads` ({num_heads}).")
    self.num_heads = num_heads
    self.qkv = nnx.Linear(d_model, 3 * d_model, kernel_init=nnx.initializers.normal(0.02), rngs=rngs)
    self.out = nnx.Linear(d_model, d_model, kernel_init=nnx.initializers.normal(out_init_scale), rngs=rngs)

  def __call__(self, x: Array) -> Array:
    b, t, d = x.shape
    h = self.num_heads
    q, k, v = jnp.split(self.qkv(x).reshape(b, t, 3, h, d // h), 3, axis=2)
    q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0]                            # (B, T, H, Dh)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(d // h)
    causal = jnp.tril(jnp.ones((t, t), dtype=bool))
    scores = jnp.where(causal, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return self.out(jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, t, d))


class Block(nnx.Module):
  """Pre-LayerNorm transformer block: x + Attn(LN(x)), then + MLP(LN(.)) with a GELU MLP."""

  def __init__(self, d_model: int, num_heads: int, mlp_ratio: int, *, out_init_scale: float, rngs: nnx.Rngs):
    self.ln_attn = nnx.LayerNorm(d_model, rngs=rngs)
    self.attn = CausalSelfAttention(d_model, num_heads, out_init_scale=out_init_scale, rngs=rngs)
    self.ln_mlp = nnx.LayerNorm(d_model, rngs=rngs)
    self.mlp_in = nnx.Linear(d_model, mlp_ratio * d_model, kernel_init=nnx.initializers.normal(0.02), rngs=rngs)
    self.mlp_out = nnx.Linear(mlp_ratio * d_model, d_model, kernel_init=nnx.initializers.normal(out_init_scale),
                              rngs=rngs)

  def __call__(self, x: Array) -> Array:
    x = x + self.attn(self.ln_attn(x))
    return x + self.mlp_out(jax.nn.gelu(self.mlp_in(self.ln_mlp(x))))


class CausalLM(nnx.Module):
  """Token + learned position embeddings -> `num_layers` pre-LN blocks -> LayerNorm -> vocabulary logits.

  Follows the `jaxfair.models` module convention `__call__(x, *, train, mask)`; `train` and `mask` are
  accepted and unused (no dropout, no batch statistics). Residual output projections are initialised with
  std 0.02 / sqrt(2 num_layers) (GPT-2).
  """

  def __init__(self, vocab_size: int, max_len: int, *, d_model: int = 64, num_heads: int = 4,
               num_layers: int = 4, mlp_ratio: int = 4, rngs: nnx.Rngs):
    for name, value in (("vocab_size", vocab_size), ("max_len", max_len), ("d_model", d_model),
                        ("num_heads", num_heads), ("num_layers", num_layers), ("mlp_ratio", mlp_ratio)):
      if int(value) < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value}.")
    self.max_len, self.num_layers = max_len, num_layers
    self.token_embed = nnx.Embed(vocab_size, d_model, embedding_init=nnx.initializers.normal(0.02), rngs=rngs)
    self.pos_embed = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (max_len, d_model)))
    out_scale = 0.02 / math.sqrt(2 * num_layers)
    for i in range(num_layers):
      setattr(self, f"block_{i}", Block(d_model, num_heads, mlp_ratio, out_init_scale=out_scale, rngs=rngs))
    self.ln_final = nnx.LayerNorm(d_model, rngs=rngs)
    self.head = nnx.Linear(d_model, vocab_size, kernel_init=nnx.initializers.normal(0.02), rngs=rngs)

  def __call__(self, tokens: Array, *, train: bool = False, mask: Array | None = None) -> Array:
    del train, mask
    if tokens.ndim != 2:
      raise ValueError(f"`tokens` must be (batch, time) integer ids, got shape {tokens.shape}.")
    t = tokens.shape[1]
    if t > self.max_len:
      raise ValueError(f"sequence length {t} exceeds the model's `max_len` {self.max_len}.")
    x = self.token_embed(tokens) + self.pos_embed[...][:t][None]
    for i in range(self.num_layers):
      x = getattr(self, f"block_{i}")(x)
    return self.head(self.ln_final(x))


def causal_lm(vocab_size: int, max_len: int, *, d_model: int = 64, num_heads: int = 4, num_layers: int = 4,
              mlp_ratio: int = 4) -> PureModel:
  """The `CausalLM` as a pure `(init, apply)` pair; `apply(params, {}, tokens) -> (logits (B, T, V), {})`.

  The default (vocab 96, max_len 64, d_model 64, 4 heads, 4 layers) has 216,544 parameters.
  """
  return pure_model(lambda rngs: CausalLM(vocab_size, max_len, d_model=d_model, num_heads=num_heads,
                                          num_layers=num_layers, mlp_ratio=mlp_ratio, rngs=rngs))


def num_params(params: PyTree) -> int:
  """Total number of parameters of a params pytree."""
  return int(sum(np.prod(np.shape(p)) for p in jax.tree.leaves(params)))


def _check_lm_shapes(outputs: Array, labels: Array) -> None:
  _checks.check_ndim(outputs, 3, "outputs")
  _checks.check_ndim(labels, 2, "labels")
  if tuple(np.shape(outputs)[:2]) != tuple(np.shape(labels)):
    raise ValueError(f"`outputs` (shape {np.shape(outputs)}) must be (B, T, V) for `labels` of shape (B, T) = "
                     f"{np.shape(labels)}.")
  if not jnp.issubdtype(jnp.asarray(labels).dtype, jnp.integer):
    raise ValueError(f"`labels` must be integer token ids (negative = ignored), got dtype "
                     f"{jnp.asarray(labels).dtype}.")
  value = _checks.concrete_value(labels)
  vocab = np.shape(outputs)[-1]
  if value is not None and value.size and value.max() >= vocab:
    raise ValueError(f"`labels` must be < the vocabulary size {vocab} (negative ids mark ignored tokens); "
                     f"found {int(value.max())}.")


def token_cross_entropy(outputs: Array, labels: Array) -> tuple[Array, Array]:
  """Per-token cross-entropy (B, T) in float32 (0 on ignored tokens) and the valid-token mask (B, T)."""
  _check_lm_shapes(outputs, labels)
  labels = jnp.asarray(labels)
  valid = labels >= 0
  log_probs = jax.nn.log_softmax(jnp.asarray(outputs).astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(log_probs, jnp.where(valid, labels, 0)[..., None].astype(jnp.int32), axis=-1)
  return jnp.where(valid, -picked[..., 0], 0.0), valid


def sequence_cross_entropy(outputs: Array, labels: Array, *, key: Array | None = None,
                           mask: Array | None = None) -> Array:
  """Per-sequence loss (B,): the mean token cross-entropy over each sequence's valid tokens (labels >= 0).

  A `PerExampleLoss` for the training core. Args:
    outputs: logits (B, T, V).
    labels: next-token ids (B, T); a negative id marks a token to ignore.
    key: unused (the protocol's randomness key).
    mask: (B,) real examples (1) vs padding (0); padded examples get loss 0.

  Returns:
    (B,) float32; 0 for a padded example or a sequence without valid tokens.
  """
  del key
  ce, valid = token_cross_entropy(outputs, labels)
  count = valid.sum(axis=-1)
  loss = ce.sum(axis=-1) / jnp.maximum(count, 1).astype(ce.dtype)
  if mask is not None:
    if np.shape(mask) != np.shape(loss):
      raise ValueError(f"`mask` must be (B,) = {np.shape(loss)}, got shape {np.shape(mask)}.")
    loss = jnp.where(jnp.asarray(mask) > 0, loss, 0.0)
  return loss


def make_lm_evaluate(model: PureModel, *, batch_size: int = 256, tail_fraction: float = 0.1,
                     prefix: str = "test_") -> Callable[[Any, Any], dict[str, Array]]:
  """Validation metrics of a language model: `evaluate(state, data) -> metrics` for `make_train(evaluate=)`.

  Runs the model over all of `data.x_test` (padded batches in a `lax.scan`) and reports, over validation
  sequences (per-sequence losses l_b as in `sequence_cross_entropy`):
    {prefix}loss            mean_b l_b (nats per character; with equal-length windows = mean token loss)
    {prefix}bits_per_char   {prefix}loss / ln 2
    {prefix}loss_tail       mean of the worst `tail_fraction` of sequences (CVaR of the sequence losses)
    {prefix}loss_median     median sequence loss
    {prefix}token_accuracy  fraction of valid tokens whose argmax prediction is the label
  """
  if batch_size < 1:
    raise ValueError(f"`batch_size` must be positive, got {batch_size}.")
  if not 0.0 < tail_fraction <= 1.0:
    raise ValueError(f"`tail_fraction` must be in (0, 1], got {tail_fraction}.")

  def evaluate(state, data) -> dict[str, Array]:
    x, y = data.x_test, data.y_test
    n = x.shape[0]
    batches = padded_batches(x, y, batch_size)

    def body(carry, batch):
      correct, tokens = carry
      logits, _ = model.apply(state.params, state.model_state, batch.x, train=False)
      losses = sequence_cross_entropy(logits, batch.y, mask=batch.mask)
      valid = (batch.y >= 0) & batch.mask[:, None]
      hits = (jnp.argmax(logits, axis=-1) == batch.y) & valid
      return (correct + hits.sum(), tokens + valid.sum()), losses

    (correct, tokens), losses = jax.lax.scan(body, (jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32)),
                                             batches)
    losses = losses.reshape(-1)[:n]
    ordered = jnp.sort(losses)
    k = max(1, int(math.ceil(tail_fraction * n)))
    mean = losses.mean()
    return {prefix + "loss": mean, prefix + "bits_per_char": mean / math.log(2.0),
            prefix + "loss_tail": ordered[n - k:].mean(), prefix + "loss_median": jnp.median(losses),
            prefix + "token_accuracy": correct / jnp.maximum(tokens, 1)}

  return evaluate

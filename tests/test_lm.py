"""Tests of the char-level causal LM (jaxfair.lm), its offline corpus (jaxfair.data.text) and the
reweighting-LM experiment's per-run weighting rule."""
from __future__ import annotations

import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxfair import lm
from jaxfair import reweighting
from jaxfair.data import text
from jaxfair.training import make_train

V, T = text.VOCAB_SIZE, 16


@pytest.fixture(scope="module")
def tiny():
  model = lm.causal_lm(V, T, d_model=32, num_heads=4, num_layers=2)
  params, state = model.init(jax.random.key(0))
  return model, params, state


@pytest.fixture(scope="module")
def small_corpus():
  return text.load_stdlib_text(T, sources="small")


# ------------------------------------------------------------------------------------------------ model


def test_pure_model_params_are_plain_pytree_and_default_size():
  model = lm.causal_lm(V, 64)
  shapes = jax.eval_shape(model.init, jax.random.key(0))[0]
  assert isinstance(shapes, dict) and "block_0" in shapes and "pos_embed" in shapes
  n = lm.num_params(shapes)
  assert n == 216_544  # "a few hundred thousand" (the default of causal_lm; docstring states it)
  assert 100_000 < n < 1_000_000


def test_init_vmaps_over_keys(tiny):
  model, params, _ = tiny
  stacked, _ = jax.vmap(model.init)(jax.random.split(jax.random.key(1), 3))
  leaves = jax.tree.leaves(stacked)
  assert all(l.shape[0] == 3 for l in leaves)
  k = stacked["block_0"]["attn"]["qkv"]["kernel"]
  assert not np.allclose(k[0], k[1])
  assert jax.tree.structure(jax.tree.map(lambda a: a[0], stacked)) == jax.tree.structure(params)


def test_causality_future_tokens_never_change_past_outputs(tiny):
  """Changing token t+1 (or anything after it) never changes the outputs at positions <= t."""
  model, params, state = tiny
  apply = jax.jit(lambda p, x: model.apply(p, state, x)[0])
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, V, (3, T)).astype(np.int32)
  base = np.asarray(apply(params, tokens))
  for t in range(T - 1):
    changed = tokens.copy()
    changed[:, t + 1:] = rng.integers(0, V, (3, T - t - 1))
    changed[:, t + 1] = (tokens[:, t + 1] + 1 + rng.integers(0, V - 1, 3)) % V  # surely different
    out = np.asarray(apply(params, changed))
    np.testing.assert_array_equal(out[:, :t + 1], base[:, :t + 1], err_msg=f"position <= {t} changed")
    assert np.abs(out[:, t + 1] - base[:, t + 1]).max() > 1e-6  # the changed position itself does move


def test_causality_by_gradient(tiny):
  """d logits[t] / d (input embedding at s) = 0 for every s > t (checked through the embedding table)."""
  model, params, state = tiny
  tokens = jnp.arange(T, dtype=jnp.int32)[None] % V  # distinct tokens: row s of the table <-> position s

  def out_at(table, t):
    p = dict(params, token_embed={"embedding": table})
    return jnp.take(model.apply(p, state, tokens)[0][0], t, axis=0).sum()

  table = params["token_embed"]["embedding"]
  grad_at = jax.jit(jax.grad(out_at))  # t is traced: one compilation for every position
  for t in (0, 5, T - 2):
    g = grad_at(table, t)
    future = np.asarray(g)[t + 1:T]
    past = np.asarray(g)[:t + 1]
    assert np.all(future == 0.0), f"outputs at {t} depend on a later position"
    assert np.abs(past).max() > 0


def test_rejects_too_long_sequences(tiny):
  model, params, state = tiny
  with pytest.raises(ValueError, match="max_len"):
    model.apply(params, state, jnp.zeros((1, T + 1), jnp.int32))
  with pytest.raises(ValueError, match="divisible"):
    lm.causal_lm(V, T, d_model=30, num_heads=4).init(jax.random.key(0))


# ------------------------------------------------------------------------------------------------ loss


def _direct_sequence_ce(logits, labels):
  logits = np.asarray(logits, np.float64)
  out = np.zeros(logits.shape[0])
  for b in range(logits.shape[0]):
    terms = []
    for t in range(logits.shape[1]):
      if labels[b, t] < 0:
        continue
      row = logits[b, t]
      m = row.max()
      terms.append(m + np.log(np.exp(row - m).sum()) - row[labels[b, t]])
    out[b] = np.mean(terms) if terms else 0.0
  return out


def test_sequence_loss_matches_direct_computation():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(5, 7, 11)).astype(np.float32) * 3
  labels = rng.integers(0, 11, (5, 7)).astype(np.int32)
  labels[1, [0, 3, 6]] = -1  # ignored tokens
  labels[4, :] = -1          # a sequence with no valid token -> 0
  got = np.asarray(lm.sequence_cross_entropy(jnp.asarray(logits), jnp.asarray(labels)))
  np.testing.assert_allclose(got, _direct_sequence_ce(logits, labels), rtol=1e-5, atol=1e-6)
  assert got[4] == 0.0
  # The mean over equal-length sequences equals optax's mean token cross-entropy.
  full = rng.integers(0, 11, (5, 7)).astype(np.int32)
  ref = optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits), jnp.asarray(full)).mean()
  np.testing.assert_allclose(lm.sequence_cross_entropy(jnp.asarray(logits), jnp.asarray(full)).mean(), ref,
                             rtol=1e-6)


def test_sequence_loss_masks_examples_and_ignored_tokens():
  rng = np.random.default_rng(2)
  logits = jnp.asarray(rng.normal(size=(4, 6, 9)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 9, (4, 6)), jnp.int32)
  mask = jnp.asarray([True, False, True, False])
  got = lm.sequence_cross_entropy(logits, labels, mask=mask)
  ref = lm.sequence_cross_entropy(logits, labels)
  np.testing.assert_array_equal(np.asarray(got)[[1, 3]], 0.0)
  np.testing.assert_allclose(np.asarray(got)[[0, 2]], np.asarray(ref)[[0, 2]])
  # Logits at ignored positions do not matter.
  ignored = labels.at[0, 2:].set(-1)
  a = lm.sequence_cross_entropy(logits, ignored)
  b = lm.sequence_cross_entropy(logits.at[0, 2:].set(100.0), ignored)
  np.testing.assert_allclose(a, b)


def test_loss_errors_name_the_argument():
  logits = jnp.zeros((2, 3, 5))
  with pytest.raises(ValueError, match="outputs"):
    lm.sequence_cross_entropy(jnp.zeros((2, 5)), jnp.zeros((2, 3), jnp.int32))
  with pytest.raises(ValueError, match="labels"):
    lm.sequence_cross_entropy(logits, jnp.zeros((2, 4), jnp.int32))
  with pytest.raises(ValueError, match="vocabulary size 5"):
    lm.sequence_cross_entropy(logits, jnp.full((2, 3), 5, jnp.int32))
  with pytest.raises(ValueError, match="integer"):
    lm.sequence_cross_entropy(logits, jnp.zeros((2, 3)))
  with pytest.raises(ValueError, match="mask"):
    lm.sequence_cross_entropy(logits, jnp.zeros((2, 3), jnp.int32), mask=jnp.ones((3,), bool))


def test_padded_sequences_do_not_change_the_reweighted_gradient(tiny):
  """With loss-based weights over a batch with padding, padded rows (any content) give the same update."""
  model, params, state = tiny
  rng = np.random.default_rng(3)
  x = rng.integers(0, V, (6, T)).astype(np.int32)
  y = rng.integers(0, V, (6, T)).astype(np.int32)
  mask = jnp.asarray([True, True, True, True, False, False])

  @jax.jit
  def grad(p, x, y):
    def objective(p):
      losses = lm.sequence_cross_entropy(model.apply(p, state, x)[0], y, mask=mask)
      w = reweighting.loss_based_weights(jax.lax.stop_gradient(losses), "linupper", 0.4, mask=mask)
      return reweighting.weighted_loss(losses, w)
    return jax.grad(objective)(p)

  g1 = grad(params, x, y)
  x2, y2 = x.copy(), y.copy()
  x2[4:] = rng.integers(0, V, (2, T))
  y2[4:] = rng.integers(0, V, (2, T))
  g2 = grad(params, x2, y2)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g1, g2)


def test_lm_evaluate_matches_direct(tiny, small_corpus):
  model, params, state = tiny
  data = small_corpus._replace(x_test=small_corpus.x_test[:10], y_test=small_corpus.y_test[:10])

  class S:
    pass

  s = S()
  s.params, s.model_state = params, state
  ev = lm.make_lm_evaluate(model, batch_size=4, tail_fraction=0.2)(s, data)  # 10 = 4 + 4 + 2 (padded)
  logits = model.apply(params, state, jnp.asarray(data.x_test))[0]
  losses = np.asarray(lm.sequence_cross_entropy(logits, jnp.asarray(data.y_test)))
  np.testing.assert_allclose(ev["test_loss"], losses.mean(), rtol=1e-5)
  np.testing.assert_allclose(ev["test_bits_per_char"], losses.mean() / np.log(2), rtol=1e-5)
  np.testing.assert_allclose(ev["test_loss_tail"], np.sort(losses)[-2:].mean(), rtol=1e-5)
  acc = (np.argmax(np.asarray(logits), -1) == data.y_test).mean()
  np.testing.assert_allclose(ev["test_token_accuracy"], acc, rtol=1e-6)


def test_training_reduces_validation_loss(small_corpus):
  """A few dozen reweighted steps through the generic training core lower the validation loss."""
  model = lm.causal_lm(V, T, d_model=32, num_heads=2, num_layers=1)
  data = small_corpus._replace(x_test=small_corpus.x_test[:32], y_test=small_corpus.y_test[:32])
  prog = make_train(model=model, loss=lm.sequence_cross_entropy, data=data, batch_size=16,
                    optimizer=optax.adam(1e-2), weighting=reweighting.loss_based_rule("linupper", 1.0),
                    evaluate=lm.make_lm_evaluate(model, batch_size=32))

  @jax.jit
  def go(key):
    s0 = prog.init(key, {})
    s1, metrics = prog.run_chunk(s0, {}, prog.data, 40)
    return prog.evaluate(s0, prog.data), prog.evaluate(s1, prog.data), metrics

  before, after, metrics = go(jax.random.key(0))
  assert np.all(np.isfinite(metrics["loss"]))
  assert float(after["test_loss"]) < float(before["test_loss"]) - 0.8  # ln 96 = 4.56 -> well below
  assert float(metrics["weight_max_n"].max()) > 1.0  # the weights are not uniform


# ------------------------------------------------------------------------------------------------ corpus


def test_encode_decode_and_normalize():
  s = "def f(x):\r\n\treturn x  # caf\u00e9 \u2014 ok\n"
  n = text.normalize_text(s)
  assert n == "def f(x):\n    return x  # caf  ok\n"
  assert text.decode(text.encode(n)) == n
  assert text.encode("\n ~").tolist() == [0, 1, V - 1]
  with pytest.raises(ValueError, match="normalize_text"):
    text.encode("\u00e9")


def test_corpus_is_deterministic_within_and_across_processes(small_corpus):
  again = text.load_stdlib_text(T, sources="small")
  assert again.fingerprint == small_corpus.fingerprint
  for a, b in zip(again[:4], small_corpus[:4]):
    np.testing.assert_array_equal(a, b)
  # A fresh interpreter (different hash salt) builds the same corpus.
  code = ("from jaxfair.data import text; d = text.load_stdlib_text(16, sources='small'); "
          "print(d.fingerprint, d.x_train.shape[0], d.x_test.shape[0])")
  root = pathlib.Path(__file__).resolve().parents[1]
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root,
                       env={"PYTHONHASHSEED": "12345", "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin",
                            "PYTHONPATH": str(root)})
  assert out.stdout.split() == [small_corpus.fingerprint, str(small_corpus.x_train.shape[0]),
                                str(small_corpus.x_test.shape[0])]
  # The split seed changes the split, not the vocabulary or window length.
  other = text.load_stdlib_text(T, sources="small", seed=1)
  assert other.fingerprint != small_corpus.fingerprint and other.seq_len == T


def test_splits_do_not_overlap_and_windows_are_next_char():
  docs, missing = text.stdlib_documents(text.SMALL_SOURCES)
  assert not missing and len(docs) > 50
  train, val = text.split_documents(docs, val_fraction=0.2, seed=0)
  assert not set(train) & set(val)
  assert len(set(train)) == len(train) and len(set(val)) == len(val)  # deduplicated
  assert 0.1 < len(val) / (len(train) + len(val)) < 0.3
  # A duplicated document cannot end up in both splits.
  train2, val2 = text.split_documents(docs + docs[::-1], val_fraction=0.2, seed=0)
  assert (train2, val2) == (train, val)
  data = text.text_dataset(docs, seq_len=T, val_fraction=0.2)
  train_stream, val_stream = "\n\n".join(train), "\n\n".join(val)
  for i in range(0, data.x_train.shape[0], 97):
    chunk = text.decode(data.x_train[i])
    assert train_stream[i * T:i * T + T] == chunk
    assert text.decode(data.y_train[i]) == train_stream[i * T + 1:i * T + T + 1]
  for i in range(data.x_test.shape[0]):
    assert val_stream[i * T:i * T + T] == text.decode(data.x_test[i])
  assert data.num_chars == (len(train_stream), len(val_stream))
  assert data.x_train.dtype == np.int32 and data.x_train.max() < V and data.x_train.min() >= 0


def test_windows_and_stride():
  ids = np.arange(10, dtype=np.int32)
  x, y = text.windows(ids, 4)
  np.testing.assert_array_equal(x, [[0, 1, 2, 3], [4, 5, 6, 7]])
  np.testing.assert_array_equal(y, [[1, 2, 3, 4], [5, 6, 7, 8]])
  x, _ = text.windows(ids, 4, stride=2)
  np.testing.assert_array_equal(x[:, 0], [0, 2, 4])
  assert text.windows(ids, 10)[0].shape == (0, 10)


def test_corpus_errors():
  with pytest.raises(ValueError, match="too small"):
    text.text_dataset(["short text", "another one"], seq_len=64)
  with pytest.raises(ValueError, match="val_fraction"):
    text.split_documents(["a"], val_fraction=1.5)
  with pytest.raises(ValueError, match="sources"):
    text.load_stdlib_text(16, sources="everything")
  with pytest.raises(FileNotFoundError):
    text.load_text_file("/nonexistent/corpus.txt")


def test_text_file_corpus(tmp_path):
  paragraphs = [f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 5 + str(i) for i in range(60)]
  path = tmp_path / "corpus.txt"
  path.write_text("\n\n".join(paragraphs), encoding="utf-8")
  data = text.load_text_file(path, seq_len=32, val_fraction=0.2)
  assert data.x_train.shape[1] == 32 and data.x_test.shape[0] > 0 and data.name == "corpus.txt"


# ------------------------------------------------------------------------------------------------ experiment


def test_switch_rule_equals_named_rules_under_vmap():
  """The experiment's per-run rule gives exactly loss_based_weights (or uniform) for each method index."""
  from experiments import reweighting_lm as exp  # pylint: disable=g-import-not-at-top
  rule = exp.switch_rule()
  losses = jnp.asarray(np.random.default_rng(4).gamma(2.0, size=12), jnp.float32)
  mask = jnp.arange(12) < 10
  combos = [(i, r) for i in range(len(exp.METHODS)) for r in (0.4, 1.0)]
  methods = jnp.asarray([c[0] for c in combos], jnp.int32)
  rs = jnp.asarray([c[1] for c in combos], jnp.float32)

  def weights(m, r):
    state = rule.init()._replace(method=m, r=r)
    w, new = rule.apply(losses, mask, state)
    return w, new.diagnostics["n_w_max"]

  ws, nw = jax.jit(jax.vmap(weights))(methods, rs)
  for k, (i, r) in enumerate(combos):
    name = exp.METHODS[i]
    ref = (np.where(np.asarray(mask), 0.1, 0.0) if name == "uniform"
           else reweighting.loss_based_weights(losses, name, r, mask=mask))
    np.testing.assert_allclose(ws[k], ref, rtol=1e-6, atol=1e-8, err_msg=f"{name} r={r}")
    np.testing.assert_allclose(nw[k], 10 * np.max(np.asarray(ref)), rtol=1e-5)

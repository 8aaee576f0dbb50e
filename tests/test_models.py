import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfair import models


def test_params_are_plain_dicts_with_string_paths_and_vmap_over_keys():
  model = models.mlp((64,), 10, width=16, depth=3, norm="layer")
  params, state = jax.vmap(model.init)(jax.random.split(jax.random.key(0), 5))
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
  assert all("'" in p for p in paths)  # string keys only
  assert params["hidden_2"]["kernel"].shape == (5, 16, 16)
  assert not np.allclose(params["head"]["kernel"][0], params["head"]["kernel"][1])
  out, _ = jax.vmap(lambda p, s: model.apply(p, s, jnp.ones((4, 64))))(params, state)
  assert out.shape == (5, 4, 10)


def test_batchnorm_updates_statistics_in_train_mode_only():
  model = models.mlp((3,), 2, width=4, depth=1, norm="batch")
  params, state = model.init(jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (16, 3)) * 3 + 1
  _, train_state = model.apply(params, state, x, train=True)
  _, eval_state = model.apply(params, state, x, train=False)
  assert not np.allclose(train_state["norm_0"]["mean"], state["norm_0"]["mean"])
  np.testing.assert_array_equal(eval_state["norm_0"]["mean"], state["norm_0"]["mean"])


@pytest.mark.parametrize("factory", [lambda: models.cnn((8, 8, 1), 10),
                                     lambda: models.mlp((8, 8, 1), 10, norm="batch")])
def test_kernels_before_batchnorm_are_scale_invariant(factory):
  model = factory()
  params, state = model.init(jax.random.key(0))
  x = jax.random.uniform(jax.random.key(1), (32, 8, 8, 1))
  out, _ = model.apply(params, state, x, train=True)
  name = "conv_0" if "conv_0" in params else "hidden_0"
  scaled = jax.tree.map(lambda a: a, params)
  scaled[name] = {"kernel": params[name]["kernel"] * 7.5}
  out_scaled, _ = model.apply(scaled, state, x, train=True)
  np.testing.assert_allclose(out, out_scaled, rtol=1e-3, atol=1e-4)


def test_post_activation_blocks_normalise_the_activations():
  """Linear -> ReLU -> BatchNorm (EnsLoss's tabular MLPs): in train mode the next layer sees zero-mean,
  unit-variance ReLU outputs; the Linear keeps its bias (it is not followed by a normalisation)."""
  model = models.mlp((3,), 1, width=4, depth=1, norm="batch", norm_position="post_activation")
  params, state = model.init(jax.random.key(0))
  assert "bias" in params["hidden_0"]
  x = jax.random.normal(jax.random.key(1), (64, 3))
  out, _ = model.apply(params, state, x, train=True)
  h = jax.nn.relu(x @ params["hidden_0"]["kernel"] + params["hidden_0"]["bias"][None])
  h = (h - h.mean(0, keepdims=True)) / jnp.sqrt(h.var(0, keepdims=True) + 1e-5)
  h = h * params["norm_0"]["scale"][None] + params["norm_0"]["bias"][None]
  np.testing.assert_allclose(out, h @ params["head"]["kernel"] + params["head"]["bias"][None], rtol=1e-4,
                             atol=1e-5)
  with pytest.raises(ValueError, match="norm_position"):
    models.mlp((3,), 1, norm_position="after").init(jax.random.key(0))


def test_bad_configuration_errors():
  with pytest.raises(ValueError, match="norm"):
    models.mlp((3,), 2, norm="group").init(jax.random.key(0))
  with pytest.raises(ValueError, match="input_shape"):
    models.cnn((64,), 10)
  cnn = models.cnn((8, 8, 3), 10, channels=(4,))
  params, state = cnn.init(jax.random.key(0))
  with pytest.raises(ValueError, match=r"NHWC .* got shape \(2, 3, 8, 8\).*transpose\(0, 2, 3, 1\)"):
    cnn.apply(params, state, jnp.ones((2, 3, 8, 8)))
  assert models.mlp(3, 2, width=4, depth=1).init(jax.random.key(0))[0]["hidden_0"]["kernel"].shape == (3, 4)

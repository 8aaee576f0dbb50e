import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfair import data


class TestOffline:

  def test_digits_split_is_deterministic_stratified_and_standardised_on_train(self):
    a, b = data.load_digits(seed=3), data.load_digits(seed=3)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.x_train.shape[1] == 64 and a.num_classes == 10
    assert len(a.y_train) + len(a.y_test) == 1797
    np.testing.assert_allclose(a.x_train.mean(axis=0), 0.0, atol=1e-5)
    assert abs(a.x_test.mean()) > 1e-4  # test features use train statistics, so they are not exactly centred
    test_share = np.bincount(a.y_test, minlength=10) / np.bincount(np.r_[a.y_train, a.y_test], minlength=10)
    np.testing.assert_allclose(test_share, 0.25, atol=0.01)
    assert not np.array_equal(data.load_digits(seed=4).y_train, a.y_train)

  def test_digits_images_in_unit_box(self):
    d = data.load_digits(image=True)
    assert d.x_train.shape[1:] == (8, 8, 1)
    assert d.x_train.min() >= 0.0 and d.x_train.max() <= 1.0

  @pytest.mark.parametrize("name,classes,features", [("breast_cancer", 2, 30), ("wine", 3, 13), ("iris", 3, 4)])
  def test_other_offline_sets(self, name, classes, features):
    d = data.load(name)
    assert d.num_classes == classes and d.input_shape == (features,)
    assert set(np.unique(d.y_train)) == set(range(classes))

  def test_unknown_dataset_names_choices(self):
    with pytest.raises(ValueError, match="digits"):
      data.load("cifar100")

  def test_select_classes_relabels(self):
    pair = data.select_classes(data.load_digits(), (3, 8))
    assert pair.num_classes == 2 and set(np.unique(pair.y_train)) == {0, 1}
    for bad in ((3, 3), (0, -1), (0, 10)):
      with pytest.raises(ValueError, match=r"`classes` must be distinct labels in \[0, 10\)"):
        data.select_classes(data.load_digits(), bad)

  def test_split_rejects_nan_features_and_too_few_classes(self):
    x, y = np.ones((12, 2)), np.arange(12) % 3
    with pytest.raises(ValueError, match=r"`y` has labels up to 2 but `num_classes` is 2"):
      data.split(x, y, num_classes=2)
    x[[4, 7], 1] = np.nan
    with pytest.raises(ValueError, match=r"`x` has NaN or Inf in rows \[4, 7\]"):
      data.split(x, y)


class TestFiles:

  @pytest.mark.parametrize("suffix", ["", ".gz"])
  @pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32, np.float64])
  def test_idx_round_trip(self, tmp_path, suffix, dtype):
    arr = (np.arange(24).reshape(2, 3, 4) * 3).astype(dtype)
    path = tmp_path / f"a.idx{suffix}"
    data.write_idx(path, arr)
    out = data.load_idx(path)
    assert out.dtype == arr.dtype
    np.testing.assert_array_equal(out, arr)

  def test_idx_errors_name_the_file(self, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.idx"):
      data.load_idx(tmp_path / "missing.idx")
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x01\x02\x03\x04junk")
    with pytest.raises(ValueError, match="bad.idx.*magic"):
      data.load_idx(bad)
    truncated = tmp_path / "trunc.idx"
    data.write_idx(truncated, np.zeros((4, 5), np.uint8))
    truncated.write_bytes(truncated.read_bytes()[:-3])
    with pytest.raises(ValueError, match="trunc.idx.*truncated"):
      data.load_idx(truncated)

  def test_mnist_directory(self, tmp_path, write_fake_mnist):
    write_fake_mnist(tmp_path, 6, 4)
    d = data.load_mnist(tmp_path)
    assert d.x_train.shape == (6, 28, 28, 1) and d.x_test.shape == (4, 28, 28, 1)
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0 and d.y_train.dtype == np.int32
    with pytest.raises(FileNotFoundError, match="t10k-images"):
      (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
      data.load_mnist(tmp_path)

  def test_cifar10_round_trip(self, tmp_path, write_fake_cifar10):
    batches = write_fake_cifar10(tmp_path, 3)
    d = data.load_cifar10(tmp_path)
    assert d.x_train.shape == (15, 32, 32, 3) and d.x_test.shape == (3, 32, 32, 3)
    first = batches["data_batch_1"][b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0) / 255.0
    np.testing.assert_allclose(d.x_train[0], first, rtol=1e-6)
    np.testing.assert_array_equal(d.y_test, batches["test_batch"][b"labels"])

  def test_cifar10_corrupt_and_missing(self, tmp_path, write_fake_cifar10):
    write_fake_cifar10(tmp_path, 3)
    (tmp_path / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="data_batch_3"):
      data.load_cifar10(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match="data_batch_3.*list"):
      data.load_cifar10(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
      data.load_cifar10(tmp_path)

  def test_csv_round_trip_with_header_missing_rows_and_string_labels(self, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,label\n1,2,yes\n3,?,no\n5,6,no\n7,8,yes\n")
    x, y = data.load_csv(path, label_column="label")
    np.testing.assert_array_equal(x, [[1, 2], [5, 6], [7, 8]])
    np.testing.assert_array_equal(y, ["yes", "no", "yes"])
    with pytest.raises(ValueError, match="t.csv.*'target'"):
      data.load_csv(path, label_column="target")
    ragged = tmp_path / "r.csv"
    ragged.write_text("1,2,0\n3,1\n")
    with pytest.raises(ValueError, match="r.csv.*row 2"):
      data.load_csv(ragged)

  def test_csv_header_detection_ignores_label_and_missing_cells(self, tmp_path):
    """A headerless file whose first row has a string label or a missing value keeps that row."""
    path = tmp_path / "h.csv"
    path.write_text("5.1,3.5,setosa\n4.9,?,setosa\n6.3,3.3,virginica\n5.8,2.7,virginica\n")
    x, y = data.load_csv(path)
    np.testing.assert_array_equal(y, ["setosa", "virginica", "virginica"])  # row 2 dropped (missing value)
    path.write_text("1.0,NA,0\n2.0,3.0,1\n4.0,5.0,NA\n6.0,7.0,0\n")
    x, y = data.load_csv(path)
    np.testing.assert_array_equal(x, [[2, 3], [6, 7]])  # NA feature and NA label rows dropped, no header
    np.testing.assert_array_equal(y, [1, 0])
    path.write_text("0,1,2,target\n1.5,2.5,3.5,1\n4.5,5.5,6.5,0\n")  # numeric column names (pandas' default)
    x, y = data.load_csv(path)
    np.testing.assert_array_equal(y, [1, 0])

  def test_split_reencodes_labels_that_are_not_0_to_k_minus_1(self):
    x = np.random.default_rng(0).normal(size=(20, 3))
    d = data.split(x, np.array([1, 2] * 10), seed=0)
    assert d.num_classes == 2 and set(np.unique(d.y_train)) == {0, 1}
    d = data.split(x, np.array([0, 2] * 10), seed=0, num_classes=3)  # a given num_classes keeps the gap
    assert d.num_classes == 3 and set(np.unique(d.y_train)) == {0, 2}
    with pytest.raises(ValueError, match="`x_test` rows have shape"):
      data.standardize(x, x[:, :1])
    with pytest.raises(ValueError, match="`x_train` has NaN"):
      data.standardize(np.where(x > 1.5, np.nan, x), x)

  def test_table_columns_and_delimiter_errors(self, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,c\n1,2,3\n5,6,7\n")
    for bad in (3, -4):
      with pytest.raises(ValueError, match=rf"`label_column` {bad} is out of range for 3 columns"):
        data.load_csv(path, label_column=bad)
    with pytest.raises(ValueError, match="one column when split on `delimiter` ';'"):
      data.load_csv(path, delimiter=";")
    for first in (0, -3):
      x, y = data.load_csv(path, label_column=first)
      np.testing.assert_array_equal(y, [1, 5])
      np.testing.assert_array_equal(x, [[2, 3], [6, 7]])

  def test_arff_round_trip(self, tmp_path):
    path = tmp_path / "t.arff"
    path.write_text("@relation t\n@attribute f1 numeric\n@attribute f2 {red,blue}\n"
                    "@attribute class {pos,neg}\n@data\n1.5,red,pos\n2.5,blue,neg\n?,red,pos\n")
    x, y = data.load_arff(path)
    np.testing.assert_array_equal(x, [[1.5, 0.0], [2.5, 1.0]])  # nominal codes in the declared order
    np.testing.assert_array_equal(y, ["pos", "neg"])
    numeric_label = tmp_path / "n.arff"  # a missing numeric label reads as nan: that row is dropped
    numeric_label.write_text("@relation n\n@attribute f numeric\n@attribute y numeric\n@data\n1,1\n2,?\n3,2\n")
    x, y = data.load_arff(numeric_label)
    np.testing.assert_array_equal(x, [[1], [3]])
    np.testing.assert_array_equal(y, [1, 2])
    d = data.load_table(path, test_fraction=0.5)
    assert d.num_classes == 2
    broken = tmp_path / "broken.arff"
    broken.write_text("@relation t\n@attribute f1 numeric\n@data\nnot,a,row\n")
    with pytest.raises(ValueError, match="broken.arff"):
      data.load_arff(broken)


class TestSynthetic:

  def test_linear_regression_shared_minimiser_and_heterogeneous_norms(self):
    task = jax.jit(data.linear_regression, static_argnums=(1, 2, 3))(jax.random.key(0), 500, 100, 20)
    np.testing.assert_allclose(task.x_train @ task.w_star, task.y_train, rtol=1e-5, atol=1e-5)
    norms = jnp.linalg.norm(task.x_train, axis=1)
    assert norms.max() / norms.min() > 20

  def test_gaussian_mixture_groups_and_noise(self):
    d = data.gaussian_mixture(jax.random.key(1), 20000, 5, group_fractions=(0.8, 0.2), label_noise=0.1)
    assert abs(float((d.group == 1).mean()) - 0.2) < 0.02
    assert abs(float((d.y != d.y_clean).mean()) - 0.1) < 0.01
    with pytest.raises(ValueError, match="`group_fractions` must be > 0"):
      data.gaussian_mixture(jax.random.key(1), 50, 5, group_fractions=(0.9, -0.1))
    with pytest.raises(ValueError, match=r"`label_noise` must be a fraction in \[0, 1\]"):
      data.gaussian_mixture(jax.random.key(1), 50, 5, label_noise=1.5)

  def test_long_tailed_exact_counts(self):
    y = jnp.repeat(jnp.arange(5), 100)
    keep = jax.jit(data.long_tailed_mask, static_argnums=(2, 3))(jax.random.key(0), y, 5, 16.0)
    counts = np.bincount(np.asarray(y)[np.asarray(keep)], minlength=5)
    np.testing.assert_array_equal(counts, np.ceil(100 * 16.0 ** (-np.arange(5) / 4)))
    with pytest.raises(ValueError, match="imbalance_ratio"):
      data.long_tailed_mask(jax.random.key(0), y, 5, 0.5)


class TestBatching:

  def test_epoch_covers_every_example_once_with_padding_masked(self):
    n, bs = 10, 4
    x, y = jnp.arange(n, dtype=jnp.float32), jnp.arange(n)
    seen = []
    for step in range(3):
      b = data.epoch_batch(jax.random.key(0), x, y, jnp.int32(step), bs)
      seen += list(np.asarray(b.y)[np.asarray(b.mask)])
    assert sorted(seen) == list(range(n))
    assert np.asarray(b.mask).tolist() == [True, True, False, False]
    nxt = data.epoch_batch(jax.random.key(0), x, y, jnp.int32(3), bs)  # next epoch: a new permutation
    assert nxt.mask.all()

  def test_padded_batches(self):
    b = data.padded_batches(jnp.arange(5.0), jnp.arange(5), 2)
    assert b.x.shape == (3, 2) and b.mask.sum() == 5

"""The full-scale configs that read user-supplied files run end to end on fake files in the real formats
(MNIST idx, CIFAR-10 pickles, CSV and ARFF tables), with only their sizes shrunk to CPU scale.

Their `:quick` variants swap in offline stand-ins, so these are the only runs of the file-reading path of
each experiment before a GPU user's: `data_dir` reaching the loader, flattening, standardising, PCA at every
listed dimension, class pairs, tables of different widths. The inductive-bias runs keep the full configs'
task and space lists; the others cut methods, models and losses down to what exercises the data path. Widths,
sample counts and steps are small throughout.
"""
import json

import numpy as np
import pytest

from experiments import main as main_lib


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_inductive_bias_full_config_on_files(dataset, tmp_path, write_fake_mnist, write_fake_cifar10):
  data_dir = tmp_path / "data"
  data_dir.mkdir()
  if dataset == "mnist":
    write_fake_mnist(data_dir, num_train=320, num_test=120)
  else:
    write_fake_cifar10(data_dir, per_batch=64)  # 320 train, 64 test images
  config = main_lib.load_config(f"experiments/configs/inductive_bias_{dataset}.py", [f"data_dir={data_dir}"])
  config.tasks = tuple(dict(t, n_train=300, n_test=60) for t in config.tasks)
  config.spaces = tuple(dict(s, num_samples=200) if s["kind"] == "gp" else
                        dict(s, num_samples=4, width=s["width"] // 128, epochs=1) for s in config.spaces)
  config.plot = None
  summary = main_lib.run_experiment(config, str(tmp_path / "run"))
  pixels = 784 if dataset == "mnist" else 3072
  assert [(r["task"], r["space"], r["dim"]) for r in summary["rows"]] == [
      (t["name"], s["name"], t["dim"] or pixels) for t in config.tasks for s in config.spaces]
  assert {r["n_train"] for r in summary["rows"]} == {300}
  losses = {(r["task"], r["space"]): np.load(tmp_path / "run" / f"losses_{r['task']}_{r['space']}.npy")
            for r in summary["rows"]}
  for (task, space), sample in losses.items():
    num_samples = next(s["num_samples"] for s in config.spaces if s["name"] == space)
    assert sample.shape == (num_samples,) and np.all(np.isfinite(sample)), (task, space)
  # Pixel means grow with the label, so the GP on 16 principal components beats the null error (0.09: 0.1 for
  # every output) unless images and labels got mixed up on the way.
  assert np.median(losses[(f"{dataset}_pca16", "gp_rbf")]) < 0.06


def test_ensloss_cifar10_full_config_on_pickles(tmp_path, write_fake_cifar10):
  write_fake_cifar10(tmp_path, per_batch=60)  # 60 train and 12 test images per class pair
  config = main_lib.load_config("experiments/configs/ensloss_cifar10.py", [f"data_dir={tmp_path}"])
  config.max_pairs, config.trials, config.epochs, config.num_evals, config.batch_size = 2, 2, 10, 1, 8
  config.models = dict(cnn=dict(kind="cnn", channels=(4,)), mlp3=dict(kind="mlp", width=8, depth=3))
  config.losses = ("ensloss", "hinge")
  config.optimizer.learning_rate = 0.05  # few steps: a larger step than the full run's 1e-3
  config.runs_per_program, config.plots = 0, False
  main_lib.run_experiment(config, str(tmp_path / "run"))
  results = json.loads((tmp_path / "run" / "results.json").read_text())
  assert results["problems"] == ["0v1", "0v2"] and results["trials"] == 2
  accuracy = {(model, loss): np.asarray(acc) for model, by_loss in results["accuracy"].items()
              for loss, acc in by_loss.items()}
  assert set(accuracy) == {(m, l) for m in ("cnn", "mlp3") for l in config.losses}
  # Pixel means grow with the label, so every run separates its pair unless images and labels got mixed up.
  for run, acc in accuracy.items():
    assert acc.shape == (2, 2) and acc.min() >= 0.9, (run, acc)


def test_ensloss_tabular_config_on_csv_and_arff(tmp_path):
  """The documented OpenML route: tables of different widths from `data_files`, label in the last column (the
  CSV has a header, string labels and a row with a missing value)."""
  rng = np.random.default_rng(0)
  csv_x = rng.normal(size=(120, 3))
  csv_rows = ["f1,f2,f3,label"] + [",".join(f"{v:.4f}" for v in x) + f",{'yes' if x[0] > 0 else 'no'}"
                                   for x in csv_x] + ["1.0,?,2.0,yes"]
  (tmp_path / "wide.csv").write_text("\n".join(csv_rows) + "\n")
  arff_x = rng.normal(size=(100, 2))
  (tmp_path / "narrow.arff").write_text(
      "@relation narrow\n@attribute a numeric\n@attribute b numeric\n@attribute class {pos,neg}\n@data\n"
      + "".join(f"{a:.4f},{b:.4f},{'pos' if a + b > 0 else 'neg'}\n" for a, b in arff_x))
  files = (str(tmp_path / "wide.csv"), str(tmp_path / "narrow.arff"))
  config = main_lib.load_config("experiments/configs/ensloss_tabular.py", ["tabular=()"])
  config.data_files = files
  config.trials, config.epochs, config.num_evals, config.batch_size = 2, 10, 1, 16
  config.losses = ("ensloss", "logistic")
  config.models = {"mlp1": dict(config.models["mlp1"], width=8)}
  config.optimizer.learning_rate, config.plots = 0.05, False
  main_lib.run_experiment(config, str(tmp_path / "run"))
  results = json.loads((tmp_path / "run" / "results.json").read_text())
  assert results["problems"] == ["wide", "narrow"]
  for model, by_loss in results["accuracy"].items():
    for loss, acc in by_loss.items():  # linearly separable labels
      assert np.asarray(acc).shape == (2, 2) and np.min(acc) >= 0.85, (model, loss, acc)

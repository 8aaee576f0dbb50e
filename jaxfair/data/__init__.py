"""Offline real datasets, file loaders, synthetic generators and on-device batching."""
from jaxfair.data.batching import (Batch, batch_from_permutation, epoch_batch, epoch_permutation, num_batches,
                                 padded_batches)
from jaxfair.data.files import (load_arff, load_cifar10, load_csv, load_idx, load_mnist, load_table,
                                write_idx)
from jaxfair.data.offline import (Dataset, load_breast_cancer, load_digits, load_iris, load_wine,
                                  select_classes, split, standardize)
from jaxfair.data.synthetic import (GroupedClassification, RegressionTask, gaussian_mixture, linear_regression,
                                    long_tailed, long_tailed_mask)

LOADERS = {"digits": load_digits, "breast_cancer": load_breast_cancer, "wine": load_wine, "iris": load_iris}


def load(name: str, **kwargs) -> Dataset:
  """An offline dataset by name: digits, breast_cancer, wine or iris."""
  if name not in LOADERS:
    raise ValueError(f"Unknown dataset {name!r}; offline datasets: {sorted(LOADERS)} "
                     "(file datasets: load_mnist, load_cifar10, load_table).")
  return LOADERS[name](**kwargs)

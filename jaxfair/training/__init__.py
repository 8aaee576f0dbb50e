"""Pure training core: `TrainState`, one pluggable `train_step`, `make_train -> TrainProgram`, evaluation."""
from jaxfair.training.components import (PerExampleLoss, Perturbation, WeightingRule, masked_uniform,
                                         per_example, uniform)
from jaxfair.training.evaluate import make_evaluate, predictions
from jaxfair.training.loop import (TrainData, TrainProgram, as_per_example_loss, as_train_data,
                                   assert_finite_metrics, make_train, train)
from jaxfair.training.sharding import constrain_batch, make_sweep_mesh, shard_model_inputs
from jaxfair.training.step import TrainState, make_train_step, masked_mean, stream_key

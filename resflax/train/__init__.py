"""Training: the train state, pure steps, checkpoints, metric writers and the loop."""

from resflax.train.loop import evaluate, train_and_evaluate
from resflax.train.state import TrainState, create_state, make_optimizer
from resflax.train.steps import eval_step, train_step

"""Seed 000's shortcut question on its own task: steering-angle regression from 120x160 frames.

  resflax train --config experiments/configs/shortcut_study_steering.py \
      --config.model=steering_shortcut_study_flatten_dense --workdir runs/ssc_flatten

--config.model= steering_shortcut_study_<kind> (kinds as in shortcut_study_mnist5k.py): the study
net with a 4x4 input average-pool and a Flatten + Dense head (resflax/models/shortcut_study.py).
Data and recipe as the seed 000 configs (steering_conv_shortcut.py): synthetic_steering, the last
20% of its 2,000 training scenes held out, MSE, Adam lr 1e-3, batch 128; 10 epochs (the seed
recipe has 20: halved so that the whole study fits in about an hour of a 2-core CPU).
"""

from resflax.config import base_config


def get_config():
  config = base_config()
  config.model = 'steering_shortcut_study_projection'
  config.dataset = 'synthetic_steering'
  config.validation_split = 0.2
  config.batch_size = 128
  config.num_epochs = 10
  config.optimizer = 'adam'
  config.amsgrad = False
  config.learning_rate = 1e-3
  config.loss = 'mse'
  config.keep_checkpoints = 1
  return config

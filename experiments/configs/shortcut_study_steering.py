"""Seed 000's shortcut question on its own task: steering-angle regression from 120x160 frames.

  resflax train --config experiments/configs/shortcut_study_steering.py \
      --config.model=steering_shortcut_study_flatten_dense --workdir runs/ssc_flatten

--config.model= steering_shortcut_study_<kind> (kinds as in shortcut_study_mnist5k.py): the study
net with a 4x4 input average-pool and a Flatten + Dense head (resflax/models/shortcut_study.py).
Data and recipe as the seed 000 configs (steering_conv_shortcut.py): synthetic_steering, the last
20% of its 2,000 training scenes held out, MSE, Adam lr 1e-3, batch 128; 10 epochs (the seed
recipe has 20: halved so that the whole study fits in about an hour of a 2-core CPU).
"""

from resflax.config import steering_recipe


def get_config():
  config = steering_recipe('steering_shortcut_study_projection')
  config.num_epochs = 10
  config.keep_checkpoints = 1
  return config

"""Seed 000 method 1: a pointwise Dense(64) on the conv map as the shortcut (120x160x3 frame -> steering angle).

The seed only builds the model (no training code); it is trained here the way Donkeycar trains its
pilots: MSE loss, Adam at lr 1e-3, batch 128, a held-out 20% of the records for validation.

  resflax train --config experiments/configs/steering_conv_shortcut.py --workdir runs/steering_conv_shortcut
"""

from resflax.config import base_config


def get_config():
  config = base_config()
  config.model = 'steering_conv_shortcut'
  config.dataset = 'synthetic_steering'
  config.batch_size = 128
  config.num_epochs = 20
  config.validation_split = 0.2
  config.optimizer = 'adam'
  config.amsgrad = False
  config.learning_rate = 1e-3
  config.loss = 'mse'
  return config

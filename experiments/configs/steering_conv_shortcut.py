"""Seed 000 method 1: a pointwise Dense(64) on the conv map as the shortcut (120x160x3 frame -> steering angle).

The seed only builds the model (no training code); it is trained here the way Donkeycar trains its
pilots: MSE loss, Adam at lr 1e-3, batch 128, a held-out 20% of the records for validation.

  resflax train --config experiments/configs/steering_conv_shortcut.py --workdir runs/steering_conv_shortcut
"""

from resflax.config import steering_recipe


def get_config():
  return steering_recipe('steering_conv_shortcut')

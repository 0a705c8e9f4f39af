"""The example's gated residual MLP (``my_block.py`` beside this file) on the offline MNIST digits, one epoch.

  PYTHONPATH=examples/my_block resflax train --config examples/my_block/config.py \\
      --workdir runs/my_block
  resflax eval --workdir runs/my_block        # (with the same PYTHONPATH)
"""

import ml_collections

from resflax import config as config_lib


def get_config() -> ml_collections.ConfigDict:
  c = config_lib.base_config()
  c.model = 'my_block:GatedMLP'  # package.module:Name, importable from PYTHONPATH
  c.model_kwargs = ml_collections.ConfigDict({'depth': 3, 'width': 128})
  c.dataset = 'mnist_5k'
  c.batch_size = 128
  c.num_epochs = 1
  c.optimizer = 'adam'  # any optax optimizer; config.optimizer_kwargs are passed to it
  c.learning_rate = 1e-3
  c.loss = 'softmax_cross_entropy'
  c.log_every_steps = 10
  return c

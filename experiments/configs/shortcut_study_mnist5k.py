"""Seed 000's shortcut question on digits: one body, the shortcut across each shape change swapped.

  resflax train --config experiments/configs/shortcut_study_mnist5k.py \
      --config.model=shortcut_study_projection --workdir runs/sc_projection

--config.model= shortcut_study_<kind>, kind one of none, identity, zero_pad, projection,
avgpool_projection, pointwise_dense, flatten_dense, global_pool_dense (resflax/models/
shortcut_study.py). The whole study (3 seeds of each, and the steering half) with its report:
``python scripts/shortcut_study.py``. Recipe: Adam (lr 1e-3, no AMSGrad), batch 128, 10 epochs,
per-channel normalisation, no augmentation; evaluated on the 1,000 held-out digits.
"""

from resflax.config import base_config


def get_config():
  config = base_config()
  config.model = 'shortcut_study_projection'
  config.dataset = 'mnist_5k'
  config.normalize = True
  config.batch_size = 128
  config.num_epochs = 10
  config.optimizer = 'keras_adam'
  config.optimizer_kwargs = {'amsgrad': False}
  config.learning_rate = 1e-3
  config.keep_checkpoints = 1
  return config

"""The degradation study's recipe (scripts/degradation_study.py): CIFAR ResNet skeletons on mnist_5k.

Seed 002 claims that residual blocks "eliminate the possibility of vanishing gradients" and that
deeper ResNets are better; He et al. (1512.03385 fig. 6) show that deeper *plain* nets train worse.
This config trains one net of the ladder --config.model= plain{8,20,56,110} | resnet{8,20,56,110} |
highway_resnet{8,20,56,110} | dense_additive_resnet{8,20,56,110} (same bodies and widths, 16/32/64
channels, 28 -> 14 -> 7 maps) on the 4,000 offline digits, with the gradient-flow diagnostic on.

  resflax train --config experiments/configs/degradation_mnist5k.py --config.model=plain56 --workdir runs/plain56

Recipe: the paper's optimiser (SGD, momentum 0.9, weight decay 1e-4, batch 128, lr 0.1) shortened
to a few epochs: a 1-epoch linear warm-up (deep plain nets diverge at 0.1 from the first step) and a
cosine decay; no flip (digits are not mirror-symmetric) and no crop; per-channel normalisation.
"""

from resflax.config import base_config


def get_config():
  config = base_config()
  config.model = 'resnet20'
  config.dataset = 'mnist_5k'
  config.normalize = True
  config.batch_size = 128
  config.num_epochs = 5
  config.optimizer = 'sgd'
  config.learning_rate = 0.1
  config.optimizer_kwargs = {'momentum': 0.9, 'nesterov': False}
  config.weight_decay = 1e-4
  config.lr_schedule = 'cosine'
  config.warmup_epochs = 1.0
  config.log_block_metrics = True
  config.log_every_steps = 1  # per-step rows: the first holds the gradient norms at init
  config.keep_checkpoints = 1
  return config

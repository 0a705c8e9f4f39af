"""Stochastic depth on CIFAR-10 (Huang et al. 2016, arXiv:1603.09382) with the paper's recipe.

Test error on CIFAR-10 with standard augmentation (table 1), by --config.model=
  resnet110_stochastic_depth  5.25% (ResNet-110, linearly decaying survival to p_L = 0.5;
                              the same net with constant depth: 6.41%)
  resnet20_stochastic_depth   the default: the same rule on ResNet-20, small enough for the config
                              smoke test (ResNet-110 takes ~35 s to compile on 2 CPU cores); no
                              paper number.

  resflax train --config experiments/configs/stochastic_depth_cifar.py --config.model=resnet110_stochastic_depth --workdir runs/resnet110_sd

Each residual branch is kept with probability p_l = 1 - l/L (1 - p_L) in training and scaled by p_l
at eval. The drops use their own rng stream, 'stochastic_depth' (the train step passes it). resflax
draws them per example; the paper drops a block for the whole mini-batch (and then skips its
computation) -- StochasticDepth(per_example=False) does that, without the speed-up.

Recipe (sec. 4, and the authors' code yueatsprograms/Stochastic_Depth main.lua): SGD with Nesterov
momentum 0.9 and dampening 0, weight decay 1e-4, batch 128, 500 epochs, learning rate 0.1 divided by
10 at epochs 250 and 375. The paper trains on 45k images and keeps 5k for validation; this config
trains on all 50k and evaluates on the test set.

Weight decay: resflax's weight_decay adds wd * w to the gradient of every parameter with ndim > 1,
before momentum: the gradient of (wd/2) ||w||^2, as Torch's weightDecay=1e-4 does to those weights;
Torch also decays biases and BN scale/offset, resflax does not.

Augmentation: 4-pixel zero padding + random 32x32 crop (augment_crop_padding=4), random
horizontal flip (augment_flip), per-channel mean/std normalisation (normalize).
"""

from resflax.config import cifar10_paper_recipe


def get_config():
  return cifar10_paper_recipe('resnet20_stochastic_depth', num_epochs=500, lr_boundaries_epochs=(250, 375),
                              weight_decay=1e-4, nesterov=True,
                              norm='batch_unbiased')  # unbiased running variance: the authors' Torch7 code

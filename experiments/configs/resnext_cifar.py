"""ResNeXt-29 on CIFAR-10 (Xie et al. 2016, arXiv:1611.05431 sec. 5.3) with the paper's recipe.

Test error on CIFAR-10 (table 7; standard augmentation), by --config.model=
  resnext29_8x64d   3.65% (34.4M parameters)
  resnext29_16x64d  3.58% (68.1M)
  resnext29_2x8d    the default: the same 29-layer net with 2 groups of width 8 (0.24M parameters),
                    small enough for the config smoke test; no paper number.

  resflax train --config experiments/configs/resnext_cifar.py --config.model=resnext29_8x64d --workdir runs/resnext29_8x64d

Recipe (sec. 5.3, and the authors' code facebookresearch/ResNeXt on fb.resnet.torch): SGD with
Nesterov momentum 0.9 (fb.resnet.torch's optimizer; the paper only says momentum), weight decay
5e-4, batch 128 (on 8 GPUs), learning rate 0.1 divided by 10 at epochs 150 and 225, 300 epochs.

Weight decay: resflax's weight_decay adds wd * w to the gradient of every parameter with ndim > 1,
before momentum: the gradient of (wd/2) ||w||^2, as Torch applies weightDecay=5e-4 to those weights;
Torch also decays biases and BN scale/offset, resflax does not.

Augmentation: 4-pixel zero padding + random 32x32 crop (augment_crop_padding=4), random
horizontal flip (augment_flip), per-channel mean/std normalisation (normalize).
"""

from resflax.config import cifar10_paper_recipe


def get_config():
  return cifar10_paper_recipe('resnext29_2x8d', num_epochs=300, lr_boundaries_epochs=(150, 225),
                              weight_decay=5e-4, nesterov=True,
                              norm='batch_unbiased')  # unbiased running variance: fb.resnet.torch (Torch7)

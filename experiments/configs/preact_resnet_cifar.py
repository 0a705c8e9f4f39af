"""Pre-activation ResNet on CIFAR-10 (He et al. 2016, arXiv:1603.05027) with the paper's recipe.

Test error on CIFAR-10 (standard augmentation), by --config.model=
  preact_resnet110   6.37% (table 2, full pre-activation; 1.7M parameters)
  preact_resnet164   5.46% (table 3; 1.7M parameters, table 4)
  preact_resnet1001  4.92% (table 3; 10.2M, table 4); 4.62% with batch 64 (table 4, their code)
  preact_resnet20    the default: pre-activation units on ResNet-20, small enough for the config
                     smoke test (ResNet-164 takes ~30 s to compile on 2 CPU cores); no paper number.

  resflax train --config experiments/configs/preact_resnet_cifar.py --config.model=preact_resnet164 --workdir runs/preact164

Recipe (sec. 4 / appendix, "the same as [1]" = 1512.03385 sec. 4.2): SGD with momentum 0.9, weight
decay 1e-4, batch 128, learning rate 0.1 divided by 10 at 32k and 48k iterations, stop at 64k
(epochs 82, 123, 164 at 390 steps per epoch). ResNet-164 and -1001 warm up at lr 0.01 for about 400
iterations (until training error < 80%); the pipeline has only a linear warm-up from 0, the nearest
is --config.warmup_epochs=1. The authors' released code (KaimingHe/resnet-1k-layers on
fb.resnet.torch) trains ResNet-1001 with batch 64 for 200 epochs, Nesterov momentum.

Weight decay: resflax's weight_decay adds wd * w to the gradient of every parameter with ndim > 1,
before momentum: the gradient of (wd/2) ||w||^2, as Caffe / Torch apply weight_decay=1e-4 to those
weights; biases and BN scale/offset are not decayed in resflax (they are in Caffe / Torch).

Augmentation: 4-pixel zero padding + random 32x32 crop (augment_crop_padding=4), random
horizontal flip (augment_flip), per-channel mean/std normalisation (normalize).
"""

from resflax.config import cifar10_paper_recipe


def get_config():
  return cifar10_paper_recipe('preact_resnet20', num_epochs=164, lr_boundaries_epochs=(82, 123),
                              weight_decay=1e-4, nesterov=False,
                              norm='batch_unbiased')  # unbiased running variance: fb.resnet.torch (Torch7)

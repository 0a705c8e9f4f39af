"""ResNet v1 on CIFAR-10 (He et al. 2015, arXiv:1512.03385 sec. 4.2) with the paper's recipe.

Test error on CIFAR-10 (table 6; standard augmentation), by --config.model=
  resnet20 8.75%  resnet32 7.51%  resnet44 7.17%  resnet56 6.97% (the default)
  resnet110 6.43% (best of 5 runs; mean 6.61 +- 0.16)  resnet1202 7.93%
  resnet20_b / resnet56_b / resnet110_b: option B (1x1 projection + BN) shortcuts; the paper
    compares A/B/C on ImageNet only (table 3), not on CIFAR.
  plain20 / plain32 / plain44 / plain56: no shortcuts, the degradation experiment (fig. 6 left:
    curves only, no table; the deeper plain nets have higher training and test error);
    plain110 extends it (not in the paper).
  resnet8 / plain8: n = 1, the shallowest of the family (the degradation study's first rung).

  resflax train --config experiments/configs/resnet_cifar.py --workdir runs/resnet56
  resflax train --config experiments/configs/resnet_cifar.py --config.model=plain56 --workdir runs/plain56

Recipe (sec. 4.2): SGD with momentum 0.9 (plain momentum, not Nesterov), weight decay 1e-4, batch
128, learning rate 0.1 divided by 10 at 32k and 48k iterations, stop at 64k. With 50k training
images and 390 full batches per epoch that is epochs 82 and 123 of 164 (63,960 steps). Kernels are
He-initialised and every conv is followed by BN (PyTorch-style BN: momentum 0.9, eps 1e-5).
ResNet-110 and -1202 warm up at lr 0.01 until the training error is below 80% (~400 iterations),
then go back to 0.1; the pipeline has only a linear warm-up from 0, so the nearest is
--config.warmup_epochs=1 (not the same).

Weight decay: resflax's weight_decay adds wd * w to the gradient of every parameter with ndim > 1
(conv and Dense kernels), before momentum. That is the gradient of the L2 penalty (wd/2) ||w||^2,
i.e. what Caffe's / Torch's weight_decay=1e-4 does to those weights; unlike them, resflax leaves
biases and BN scale/offset undecayed.

Augmentation (sec. 4.2): 4-pixel zero padding + a random 32x32 crop (augment_crop_padding=4) and
a random horizontal flip (augment_flip); inputs normalised per channel with the training split's
mean and std (normalize; the paper subtracts the per-pixel mean, most re-implementations do this). The paper picks its
schedule on a 45k/5k split; this config trains on all 50k images and evaluates on the test set.
"""

from resflax.config import cifar10_paper_recipe


def get_config():
  return cifar10_paper_recipe('resnet56', num_epochs=164, lr_boundaries_epochs=(82, 123),
                              weight_decay=1e-4, nesterov=False,
                              norm='batch_unbiased')  # unbiased running variance, as PyTorch

"""DenseNet / DenseNet-BC on CIFAR-10 (Huang et al. 2016, arXiv:1608.06993) with the paper's recipe.

Test error on CIFAR-10 with standard augmentation ("C10+", table 2), by --config.model=
  densenet40_k12      5.24% (1.0M parameters)
  densenet_bc100_k12  4.51% (0.8M)
  densenet_bc250_k24  3.62% (15.3M)
  densenet_bc190_k40  3.46% (25.6M)
  densenet_bc22_k12   the default: DenseNet-BC with 3 layers per block, small enough for the config
                      smoke test (DenseNet-40 takes minutes to initialise eagerly on 2 CPU cores);
                      no paper number.
Without augmentation ("C10") the paper adds dropout 0.2 after each conv but the first (7.00%,
5.92%, 5.19% for the first three); the models take dropout_rate, there is no config key for it.

  resflax train --config experiments/configs/densenet_cifar.py --config.model=densenet_bc100_k12 --workdir runs/densenet_bc100_k12

Recipe (sec. 4.2, "Training"): SGD with Nesterov momentum 0.9 without dampening, weight decay 1e-4,
batch 64, 300 epochs, learning rate 0.1 divided by 10 at 50% and 75% of training (epochs 150, 225).
He-initialised kernels (the authors' code, liuzhuang13/DenseNet).

Weight decay: resflax's weight_decay adds wd * w to the gradient of every parameter with ndim > 1,
before momentum: the gradient of (wd/2) ||w||^2, as Torch applies weightDecay=1e-4 to those weights;
Torch also decays BN scale/offset, resflax does not.

Augmentation ("mirroring/shifting", sec. 4.1): 4-pixel zero padding + random 32x32 crop
(augment_crop_padding=4), random horizontal flip (augment_flip); per-channel mean/std
normalisation (normalize, sec. 4.1).
"""

from resflax.config import cifar10_paper_recipe


def get_config():
  return cifar10_paper_recipe('densenet_bc22_k12', num_epochs=300, lr_boundaries_epochs=(150, 225),
                              weight_decay=1e-4, nesterov=True, batch_size=64,
                              norm='batch_unbiased')  # unbiased running variance: the authors' Torch7 code

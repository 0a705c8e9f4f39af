"""Convolutional highway networks on CIFAR-10 (Srivastava et al. 2015, arXiv:1507.06228 table 2).

Test error on CIFAR-10 (table 2; accuracy 92.46% / 91.20%), by --config.model=
  highway_cifar19  7.54% (19 layers, ~2.3M parameters; the default)
  highway_cifar32  8.80% (32 layers, ~1.25M)
The layer lists are reconstructed (see resflax/models/highway.py); the parameter counts match.

  resflax train --config experiments/configs/highway_cifar.py --workdir runs/highway_cifar19

Recipe: the main text of 1507.06228 does not give the CIFAR training details (they are in its
supplementary material, which this config does not reproduce). This is a conventional SGD recipe
for a BN-free 2015 net, an assumption, not the paper's: SGD with momentum 0.9, weight decay 5e-4,
batch 128, learning rate 0.1 divided by 10 at epochs 100 and 150 of 200. Checked only briefly: on
mnist_5k digits at lr 0.1 the 19-layer net is stable and learns (loss 2.26 -> 1.18 in 300 steps of
64), at lr 0.01 it barely moves in the first hundred steps. The transform-gate biases start at -2
(sec. 2.2 suggests "-1, -3 etc.").

Augmentation: the Fitnets setup these nets follow preprocesses CIFAR-10 by global contrast
normalisation and ZCA whitening and augments by translations and flips. resflax has the nearest
standard pieces: random translations by 4-pixel zero padding + random crop (augment_crop_padding=4),
random horizontal flips (augment_flip) and per-channel mean/std normalisation (normalize) instead
of GCN + ZCA (not implemented); this BN-free net needs centred inputs (on raw [0, 1] pixels it
learns slowly).

Weight decay: resflax's weight_decay adds wd * w to the gradient of every parameter with ndim > 1
(conv and gate kernels, the Dense kernel), before momentum: the gradient of (wd/2) ||w||^2; biases
(including the gate biases) are not decayed.
"""

from resflax.config import cifar10_paper_recipe


def get_config():
  return cifar10_paper_recipe('highway_cifar19', num_epochs=200, lr_boundaries_epochs=(100, 150),
                              weight_decay=5e-4, nesterov=False)

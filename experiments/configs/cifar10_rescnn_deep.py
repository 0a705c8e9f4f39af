"""Seed 002 In[6]: deep CNN ResNet on CIFAR-10 (19 residual blocks of Conv-relu, BN, Conv-relu).

Reproduces the seed's Keras model layer for layer (`resflax summary --config experiments/configs/cifar10_rescnn_deep.py`
prints the table). Trained as the seed trains it: Adam with AMSGrad at lr 1e-3, batch 256, 10 epochs,
evaluated on the last 20% of train (`validation_split=0.2`).

Loss: softmax cross-entropy; `--config.loss=keras_binary_crossentropy` is the seed's exact loss
(see `resflax.config.seed002_recipe`).

  resflax train --config experiments/configs/cifar10_rescnn_deep.py --workdir runs/cifar10_rescnn_deep
  (CIFAR-10 needs internet once: tfds downloads it into ~/tensorflow_datasets)
"""

from resflax.config import seed002_recipe


def get_config():
  return seed002_recipe('cifar10_rescnn_deep', 'cifar10', batch_size=256,
                        validation_split=0.2)

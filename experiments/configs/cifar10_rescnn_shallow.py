"""Seed 002 In[5]: shallow CNN ResNet on CIFAR-10 (2 residual blocks of (Conv-BN-ReLU) x 2).

Reproduces the seed's Keras model layer for layer (`resflax summary --config experiments/configs/cifar10_rescnn_shallow.py`
prints the table). Trained as the seed trains it: Adam with AMSGrad at lr 1e-3, batch 64, 10 epochs,
evaluated on the last 20% of train (`validation_split=0.2`).

Loss: softmax cross-entropy; `--config.loss=keras_binary_crossentropy` is the seed's exact loss
(see `resflax.config.seed002_recipe`).

  resflax train --config experiments/configs/cifar10_rescnn_shallow.py --workdir runs/cifar10_rescnn_shallow
  (CIFAR-10 needs internet once: tfds downloads it into ~/tensorflow_datasets)
"""

from resflax.config import seed002_recipe


def get_config():
  return seed002_recipe('cifar10_rescnn_shallow', 'cifar10', batch_size=64,
                        validation_split=0.2)

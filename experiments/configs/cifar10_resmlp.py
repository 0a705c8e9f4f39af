"""Seed 002 In[4]: residual MLP on CIFAR-10 (the In[2] network on 3072 inputs).

Reproduces the seed's Keras model layer for layer (`resflax summary --config experiments/configs/cifar10_resmlp.py`
prints the table). Trained as the seed trains it: Adam with AMSGrad at lr 1e-3, batch 128, 10 epochs,
evaluated on the test split (`validation_data=(x_test, y_test)`).

Loss: softmax cross-entropy; `--config.loss=keras_binary_crossentropy` is the seed's exact loss
(see `resflax.config.seed002_recipe`).

  resflax train --config experiments/configs/cifar10_resmlp.py --workdir runs/cifar10_resmlp
  (CIFAR-10 needs internet once: tfds downloads it into ~/tensorflow_datasets)
"""

from resflax.config import seed002_recipe


def get_config():
  return seed002_recipe('cifar10_resmlp', 'cifar10', batch_size=128,
                        validation_split=0.0)

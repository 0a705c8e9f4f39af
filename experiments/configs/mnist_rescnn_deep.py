"""Seed 002 In[3]: deep CNN ResNet on MNIST (19 residual blocks of Conv-relu, BN, Conv-relu).

Reproduces the seed's Keras model layer for layer (`resflax summary --config experiments/configs/mnist_rescnn_deep.py`
prints the table). Trained as the seed trains it: Adam with AMSGrad at lr 1e-3, batch 256, 10 epochs,
evaluated on the last 20% of train (`validation_split=0.2`).

Loss: softmax cross-entropy; `--config.loss=keras_binary_crossentropy` is the seed's exact loss
(see `resflax.config.seed002_recipe`).

  resflax train --config experiments/configs/mnist_rescnn_deep.py --workdir runs/mnist_rescnn_deep
  resflax train --config experiments/configs/mnist_rescnn_deep.py --config.dataset=mnist_5k --workdir runs/mnist_rescnn_deep_5k
"""

from resflax.config import seed002_recipe


def get_config():
  return seed002_recipe('mnist_rescnn_deep', 'mnist', batch_size=256,
                        validation_split=0.2)

"""Seed 002 In[7]: "DenseNet-like" summing MLP on MNIST (each block adds every earlier block output).

Reproduces the seed's Keras model layer for layer (`resflax summary --config experiments/configs/mnist_densesum_mlp.py`
prints the table). Trained as the seed trains it: Adam with AMSGrad at lr 1e-3, batch 128, 10 epochs,
evaluated on the test split (`validation_data=(x_test, y_test)`).

Loss: softmax cross-entropy; `--config.loss=keras_binary_crossentropy` is the seed's exact loss
(see `resflax.config.seed002_recipe`).

  resflax train --config experiments/configs/mnist_densesum_mlp.py --workdir runs/mnist_densesum_mlp
  resflax train --config experiments/configs/mnist_densesum_mlp.py --config.dataset=mnist_5k --workdir runs/mnist_densesum_mlp_5k
"""

from resflax.config import seed002_recipe


def get_config():
  return seed002_recipe('mnist_densesum_mlp', 'mnist', batch_size=128,
                        validation_split=0.0)

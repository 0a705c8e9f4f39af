"""Seed 002 In[7]: "DenseNet-like" summing MLP on MNIST (each block adds every earlier block output).

Reproduces the seed's Keras model layer for layer (`resflax summary --config experiments/configs/mnist_densesum_mlp.py`
prints the table). Trained as the seed trains it: Adam with AMSGrad at lr 1e-3, batch 128, 10 epochs,
evaluated on the test split (`validation_data=(x_test, y_test)`).

Loss: the seed compiles `binary_crossentropy` on a softmax output, a known mistake (Keras then
reports binary accuracy, which flatters the model). resflax defaults to softmax cross-entropy; add
`--config.loss=keras_binary_crossentropy` to reproduce the seed exactly.

  resflax train --config experiments/configs/mnist_densesum_mlp.py --workdir runs/mnist_densesum_mlp
  resflax train --config experiments/configs/mnist_densesum_mlp.py --config.dataset=mnist_5k --workdir runs/mnist_densesum_mlp_5k
"""

from resflax.config import base_config


def get_config():
  config = base_config()
  config.model = 'mnist_densesum_mlp'
  config.dataset = 'mnist'
  config.batch_size = 128
  config.num_epochs = 10
  config.validation_split = 0.0
  config.optimizer = 'adam'
  config.amsgrad = True
  config.learning_rate = 1e-3
  config.loss = 'softmax_cross_entropy'
  return config

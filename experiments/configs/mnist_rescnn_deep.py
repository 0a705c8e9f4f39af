"""Seed 002 In[3]: deep CNN ResNet on MNIST (19 residual blocks of Conv-relu, BN, Conv-relu).

Reproduces the seed's Keras model layer for layer (`resflax summary --config experiments/configs/mnist_rescnn_deep.py`
prints the table). Trained as the seed trains it: Adam with AMSGrad at lr 1e-3, batch 256, 10 epochs,
evaluated on the last 20% of train (`validation_split=0.2`).

Loss: the seed compiles `binary_crossentropy` on a softmax output, a known mistake (Keras then
reports binary accuracy, which flatters the model). resflax defaults to softmax cross-entropy; add
`--config.loss=keras_binary_crossentropy` to reproduce the seed exactly.

  resflax train --config experiments/configs/mnist_rescnn_deep.py --workdir runs/mnist_rescnn_deep
  resflax train --config experiments/configs/mnist_rescnn_deep.py --config.dataset=mnist_5k --workdir runs/mnist_rescnn_deep_5k
"""

from resflax.config import base_config


def get_config():
  config = base_config()
  config.model = 'mnist_rescnn_deep'
  config.dataset = 'mnist'
  config.batch_size = 256
  config.num_epochs = 10
  config.validation_split = 0.2
  config.optimizer = 'adam'
  config.amsgrad = True
  config.learning_rate = 1e-3
  config.loss = 'softmax_cross_entropy'
  return config

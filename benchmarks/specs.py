"""What the benchmark times: the models, their experiment configs, the frameworks."""

from __future__ import annotations

import pathlib

SEED_MODELS = (
    'mnist_resmlp', 'mnist_rescnn_deep', 'cifar10_resmlp', 'cifar10_rescnn_shallow',
    'cifar10_rescnn_deep', 'mnist_densesum_mlp', 'steering_conv_shortcut', 'steering_dense_shortcut',
)
# Zoo models with Keras and PyTorch versions in this package (keras_zoo.py, torch_zoo.py).
ZOO_MODELS = ('resnet20', 'resnet56', 'densenet_bc100_k12')
MODELS = SEED_MODELS + ZOO_MODELS

# model -> (one example's input shape, task), as in resflax.models.MODELS (tests/test_bench.py):
# kept here so that the Keras-TF and PyTorch workers never import JAX.
INPUTS = {
    'mnist_resmlp': ((784,), 'classification'),
    'mnist_rescnn_deep': ((28, 28, 1), 'classification'),
    'cifar10_resmlp': ((3072,), 'classification'),
    'cifar10_rescnn_shallow': ((32, 32, 3), 'classification'),
    'cifar10_rescnn_deep': ((32, 32, 3), 'classification'),
    'mnist_densesum_mlp': ((784,), 'classification'),
    'steering_conv_shortcut': ((120, 160, 3), 'regression'),
    'steering_dense_shortcut': ((120, 160, 3), 'regression'),
    'resnet20': ((32, 32, 3), 'classification'),
    'resnet56': ((32, 32, 3), 'classification'),
    'densenet_bc100_k12': ((32, 32, 3), 'classification'),
}

# model -> its experiment file in experiments/configs (its batch size, loss and optimizer).
CONFIG_FILES = {**{name: name for name in SEED_MODELS},
                'resnet20': 'resnet_cifar', 'resnet56': 'resnet_cifar',
                'densenet_bc100_k12': 'densenet_cifar'}

# The models whose whole loop is also measured (end to end on mnist_5k, time to first step of
# `resflax train`) when they are among the benchmarked ones: an MLP and a deep CNN.
LOOP_MODELS = ('mnist_resmlp', 'mnist_rescnn_deep')

FRAMEWORKS = ('resflax', 'keras-tensorflow', 'keras-jax', 'pytorch')
# resflax with other CPU convolution settings, timed next to its defaults ('resflax': the
# experiment's conv_impl, 'auto', under resflax's XLA_FLAGS) on the models with convolutions:
# name -> (environment for the worker, --config.conv_impl). resflax/backend.py, resflax/ops/onednn.py.
RESFLAX_VARIANTS = {
    'xla': ({'RESFLAX_XLA_CPU_CONVS': ''}, 'xla'),  # XLA's convolutions, resflax's flags (Eigen)
    'xla-ynnpack': ({'RESFLAX_XLA_CPU_CONVS': 'ynnpack'}, 'xla'),  # jaxlib's own choice
    'onednn': ({'RESFLAX_XLA_CPU_CONVS': ''}, 'onednn'),
    'onednn-ynnpack': ({'RESFLAX_XLA_CPU_CONVS': 'ynnpack'}, 'onednn'),  # the rest on jaxlib's
}
KERAS_BACKENDS = {'keras-tensorflow': 'tensorflow', 'keras-jax': 'jax'}
NUM_CLASSES = 10

REPO = pathlib.Path(__file__).resolve().parents[1]  # the checkout this package lives in
CONFIG_DIR = REPO / 'experiments' / 'configs'
SCRIPT = REPO / 'scripts' / 'bench.py'  # the entry point, also of the worker processes


def bench_config(name: str):
  """The experiment config of ``name``, with the benchmark's one change: every model uses Adam.

  The seed configs already use Adam (AMSGrad for the classifiers, plain Adam for steering); the
  zoo configs' SGD recipes are replaced by Adam with AMSGrad at lr 1e-3 (no weight decay, constant
  rate), so that every framework runs the same optimizer. Returns an unlocked ConfigDict.
  """
  from resflax import config as config_lib  # pylint: disable=g-import-not-at-top
  if name not in CONFIG_FILES:
    raise KeyError(f"the benchmark has no model {name!r}: use one of {', '.join(MODELS)}")
  path = CONFIG_DIR / f'{CONFIG_FILES[name]}.py'
  if not path.is_file():
    raise FileNotFoundError(f'{path} not found: run the benchmark from a resflax checkout')
  config = config_lib.load(path)
  config.model = name
  if config.optimizer != 'keras_adam':
    config.optimizer, config.learning_rate = 'keras_adam', 1e-3
    config.optimizer_kwargs = {'amsgrad': True}
    config.weight_decay, config.lr_schedule, config.warmup_epochs = 0.0, 'constant', 0.0
  return config


def amsgrad(config) -> bool:
  """Whether the config's Keras Adam is AMSGrad (``bench_config`` always gives Keras Adam)."""
  return bool(config.optimizer_kwargs.get('amsgrad', False))


def has_convolutions(name: str) -> bool:
  return len(INPUTS[name][0]) == 3  # the image models; the MLPs take flat vectors


def optimizer_name(config) -> str:
  return 'Adam (AMSGrad)' if amsgrad(config) else 'Adam'

"""Networks built from ``resflax.blocks``, and the one registry of model names.

``MODELS`` is a plain dict: name -> ``ModelSpec``. To add a model, write the Linen module in a file
of this package and add one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import functools

import flax.linen as nn

from resflax.errors import UnknownNameError
from resflax.models import seed


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """How to build a model and what it expects."""

  module: Callable[..., nn.Module]  # called with num_outputs=..., axis_name=...
  input_shape: tuple[int, ...]  # one example, without the batch axis
  task: str  # 'classification' | 'regression'
  source: str  # the paper or seed cell it reproduces


MODELS: dict[str, ModelSpec] = {
    'mnist_resmlp': ModelSpec(seed.ResidualMLP, (784,), 'classification', 'seed 002 In[2]'),
    'mnist_rescnn_deep': ModelSpec(
        functools.partial(seed.SeedResCNN, num_blocks=19, body='deep'), (28, 28, 1),
        'classification', 'seed 002 In[3]'),
    'cifar10_resmlp': ModelSpec(seed.ResidualMLP, (3072,), 'classification', 'seed 002 In[4]'),
    'cifar10_rescnn_shallow': ModelSpec(
        functools.partial(seed.SeedResCNN, num_blocks=2, body='shallow'), (32, 32, 3),
        'classification', 'seed 002 In[5]'),
    'cifar10_rescnn_deep': ModelSpec(
        functools.partial(seed.SeedResCNN, num_blocks=19, body='deep'), (32, 32, 3),
        'classification', 'seed 002 In[6]'),
    'mnist_densesum_mlp': ModelSpec(
        functools.partial(seed.ResidualMLP, dense_additive=True), (784,), 'classification',
        'seed 002 In[7]'),
    'steering_conv_shortcut': ModelSpec(
        functools.partial(seed.SteeringNet, shortcut='pointwise'), (120, 160, 3), 'regression',
        'seed 000 method 1'),
    'steering_dense_shortcut': ModelSpec(
        functools.partial(seed.SteeringNet, shortcut='flatten'), (120, 160, 3), 'regression',
        'seed 000 method 2'),
}


def get_spec(name: str) -> ModelSpec:
  """The spec of a registered model; an unknown name lists the known ones."""
  try:
    return MODELS[name]
  except KeyError:
    raise UnknownNameError(
        f"unknown model {name!r}: use --config.model= one of {', '.join(sorted(MODELS))}"
    ) from None


def build(name: str, *, num_outputs: int, axis_name: str | None = None) -> nn.Module:
  """The Linen module registered as ``name``."""
  return get_spec(name).module(num_outputs=num_outputs, axis_name=axis_name)

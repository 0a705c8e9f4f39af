"""Networks built from ``resflax.blocks``, and the one registry of model names.

``MODELS`` is a plain dict: name -> ``ModelSpec``. To add a model, write the Linen module in a file
of this package and add one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import functools

import flax.linen as nn
import jax.numpy as jnp

from resflax.errors import ConfigError, UnknownNameError
from resflax.models import (densenet, highway, preact_resnet, resnet_cifar, resnext, seed,
                            shortcut_study)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """How to build a model and what it expects."""

  module: Callable[..., nn.Module]  # called with num_outputs=...; has axis_name, dtype fields
  input_shape: tuple[int, ...]  # one example, without the batch axis
  task: str  # 'classification' | 'regression'
  source: str  # the paper or seed cell it reproduces
  # True: the model takes images of any height, width and channel count (convolutions + global
  # pooling), e.g. the CIFAR nets on 28x28x1 digits; input_shape is then what it was made for.
  any_image_size: bool = False


def _cifar(module: Callable[..., nn.Module], source: str) -> ModelSpec:
  """A CIFAR-10 paper model: made for 32x32x3, takes any image size (28x28x1 too), logits out."""
  return ModelSpec(module, (32, 32, 3), 'classification', source, any_image_size=True)


_p = functools.partial
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
    # Not a seed cell: In[5]'s shallow CNN at the MNIST shape, for the seed-claims study's
    # shallow-vs-deep comparison on digits (the seed compares them on CIFAR-10 only).
    'mnist_rescnn_shallow': ModelSpec(
        functools.partial(seed.SeedResCNN, num_blocks=2, body='shallow'), (28, 28, 1),
        'classification', 'study: seed 002 In[5] at 28x28x1'),
    'mnist_densesum_mlp': ModelSpec(
        functools.partial(seed.ResidualMLP, dense_additive=True), (784,), 'classification',
        'seed 002 In[7]'),
    'steering_conv_shortcut': ModelSpec(
        functools.partial(seed.SteeringNet, shortcut='pointwise_dense'), (120, 160, 3), 'regression',
        'seed 000 method 1'),
    'steering_dense_shortcut': ModelSpec(
        functools.partial(seed.SteeringNet, shortcut='flatten_dense'), (120, 160, 3), 'regression',
        'seed 000 method 2'),
    # ResNet v1 for CIFAR-10, depth 6n+2 (1512.03385 sec. 4.2): option A (zero-pad) shortcuts;
    # _b: option B (1x1 projection + BN); plain<depth>: no shortcuts (fig. 6, left).
    'resnet20': _cifar(resnet_cifar.ResNet20, '1512.03385 table 6'),
    'resnet32': _cifar(resnet_cifar.ResNet32, '1512.03385 table 6'),
    'resnet44': _cifar(resnet_cifar.ResNet44, '1512.03385 table 6'),
    'resnet56': _cifar(resnet_cifar.ResNet56, '1512.03385 table 6'),
    'resnet110': _cifar(resnet_cifar.ResNet110, '1512.03385 table 6'),
    'resnet1202': _cifar(resnet_cifar.ResNet1202, '1512.03385 table 6'),
    'resnet20_b': _cifar(_p(resnet_cifar.ResNet20, shortcut='projection'), '1512.03385 sec. 3.3 option B'),
    'resnet56_b': _cifar(_p(resnet_cifar.ResNet56, shortcut='projection'), '1512.03385 sec. 3.3 option B'),
    'resnet110_b': _cifar(_p(resnet_cifar.ResNet110, shortcut='projection'), '1512.03385 sec. 3.3 option B'),
    'plain20': _cifar(_p(resnet_cifar.ResNet20, shortcut='none'), '1512.03385 fig. 6 (plain)'),
    'plain32': _cifar(_p(resnet_cifar.ResNet32, shortcut='none'), '1512.03385 fig. 6 (plain)'),
    'plain44': _cifar(_p(resnet_cifar.ResNet44, shortcut='none'), '1512.03385 fig. 6 (plain)'),
    'plain56': _cifar(_p(resnet_cifar.ResNet56, shortcut='none'), '1512.03385 fig. 6 (plain)'),
    'plain110': _cifar(_p(resnet_cifar.ResNet110, shortcut='none'), 'plain ResNet-110 (no figure)'),
    # The degradation study's depth ladder, 8 = 6*1+2 layers up: plain / residual (option A) /
    # highway merge / dense-additive (seed 002 In[7]) on the same bodies (resnet_cifar.py).
    'resnet8': _cifar(resnet_cifar.ResNet8, '1512.03385 sec. 4.2, n = 1'),
    'plain8': _cifar(_p(resnet_cifar.ResNet8, shortcut='none'), '1512.03385 fig. 6 (plain), n = 1'),
    **{f'{kind}{depth}': _cifar(_p(net, merge=merge), source)
       for depth, net in ((8, resnet_cifar.ResNet8), (20, resnet_cifar.ResNet20),
                          (56, resnet_cifar.ResNet56), (110, resnet_cifar.ResNet110))
       for kind, merge, source in (
           ('highway_resnet', 'highway', 'study: ResNet-CIFAR, highway merges (1505.00387 eq. 3)'),
           ('dense_additive_resnet', 'dense_additive',
            'study: ResNet-CIFAR, the seed 002 In[7] summing stack'))},
    # Stochastic depth (1603.09382): survival decays linearly to p_L = 0.5; rng 'stochastic_depth'.
    'resnet110_stochastic_depth': _cifar(resnet_cifar.ResNet110StochasticDepth,
                                         '1603.09382 table 1'),
    'resnet20_stochastic_depth': _cifar(_p(resnet_cifar.ResNet20, survival_prob_last=0.5),
                                        '1603.09382 on ResNet-20 (quick default)'),
    # Pre-activation ResNet (1603.05027): basic units (110) and bottleneck units (164, 1001).
    'preact_resnet20': _cifar(preact_resnet.PreActResNet20,
                              '1603.05027 units on ResNet-20 (quick default)'),
    'preact_resnet110': _cifar(preact_resnet.PreActResNet110, '1603.05027 tables 2-3'),
    'preact_resnet164': _cifar(preact_resnet.PreActResNet164, '1603.05027 tables 3-4'),
    'preact_resnet1001': _cifar(preact_resnet.PreActResNet1001, '1603.05027 tables 3-4'),
    # ResNeXt-29 (1611.05431 sec. 5.3), grouped 3x3 convolutions.
    'resnext29_8x64d': _cifar(resnext.ResNeXt29_8x64d, '1611.05431 table 7'),
    'resnext29_16x64d': _cifar(resnext.ResNeXt29_16x64d, '1611.05431 table 7'),
    'resnext29_2x8d': _cifar(resnext.ResNeXt29_2x8d, '1611.05431 blocks, small (quick default)'),
    # DenseNet and DenseNet-BC (1608.06993 table 2).
    'densenet40_k12': _cifar(densenet.DenseNet40_k12, '1608.06993 table 2'),
    'densenet_bc100_k12': _cifar(densenet.DenseNetBC100_k12, '1608.06993 table 2'),
    'densenet_bc250_k24': _cifar(densenet.DenseNetBC250_k24, '1608.06993 table 2'),
    'densenet_bc190_k40': _cifar(densenet.DenseNetBC190_k40, '1608.06993 table 2'),
    'densenet_bc22_k12': _cifar(densenet.DenseNetBC22_k12,
                                '1608.06993 DenseNet-BC, small (quick default)'),
    # Convolutional highway networks (1507.06228 table 2; layer lists reconstructed: highway.py).
    'highway_cifar19': _cifar(highway.HighwayCIFAR19, '1507.06228 table 2 (19 layers)'),
    'highway_cifar32': _cifar(highway.HighwayCIFAR32, '1507.06228 table 2 (32 layers)'),
    # The shortcut study (seed 000's questions; scripts/shortcut_study.py): one body, the shortcut
    # across each shape change swapped; digits (any image size) and 120x160 steering frames.
    **{f'shortcut_study_{kind}': ModelSpec(
        _p(shortcut_study.ShortcutStudyNet, shortcut=kind), (28, 28, 1), 'classification',
        f'study: shortcut study ({kind})', any_image_size=True) for kind in shortcut_study.SHORTCUTS},
    **{f'steering_shortcut_study_{kind}': ModelSpec(
        _p(shortcut_study.ShortcutStudyNet, shortcut=kind, head='flatten', input_pool=4),
        (120, 160, 3), 'regression', f'study: shortcut study on steering ({kind})')
       for kind in shortcut_study.SHORTCUTS},
}


def get_spec(name: str) -> ModelSpec:
  """The spec of a registered model; an unknown name lists the known ones."""
  try:
    return MODELS[name]
  except KeyError:
    raise UnknownNameError(
        f"unknown model {name!r}: use --config.model= one of {', '.join(sorted(MODELS))}"
    ) from None


# Computation dtypes a model may run in (parameters and BatchNorm statistics stay float32).
DTYPES = ('float32', 'bfloat16', 'float16')


def _computation_dtype(dtype) -> jnp.dtype:
  """``dtype`` (a name such as 'bfloat16' or a jnp dtype) as a ``jnp.dtype`` of ``DTYPES``."""
  try:
    canonical = jnp.dtype(dtype)
  except (TypeError, ValueError):  # not a dtype at all, e.g. 'bf16'
    canonical = None
  if canonical is None or canonical.name not in DTYPES:
    raise ConfigError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}: use "
                      '--config.dtype=float32 or bfloat16')
  return canonical


def build(name: str, *, num_outputs: int, axis_name: str | None = None,
          dtype=jnp.float32) -> nn.Module:
  """The Linen module registered as ``name``.

  ``axis_name`` syncs its BatchNorm under pmap. ``dtype`` is the computation dtype
  (``'bfloat16'`` or ``jnp.bfloat16`` for mixed precision): activations in ``dtype``, parameters,
  BatchNorm statistics and the output in float32.
  """
  spec = get_spec(name)
  dtype = _computation_dtype(dtype)
  module = spec.module(num_outputs=num_outputs)
  fields = {f.name for f in dataclasses.fields(module)}
  if dtype != jnp.float32:
    if 'dtype' not in fields:
      raise ConfigError(f'model {name!r} has no dtype field, so it cannot compute in {dtype.name}: '
                        'use --config.dtype=float32')
    module = module.clone(dtype=dtype)
  if axis_name is not None:
    if 'axis_name' not in fields:
      raise ConfigError(f'model {name!r} has no axis_name field, so its BatchNorm cannot sync '
                        'across devices under pmap: use --config.parallel=jit (the default)')
    module = module.clone(axis_name=axis_name)
  return module

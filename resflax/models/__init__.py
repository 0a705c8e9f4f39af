"""Networks built from ``resflax.blocks``, and the one registry of model presets.

A model is any Linen module with a ``num_outputs`` field and ``__call__(x, *, train: bool)``
(the contract; ``dtype`` and ``axis_name`` fields only if it wants mixed precision or synced
BatchNorm under pmap). ``config.model`` names it in one of two ways:

- a registered name, a *preset*: a factory plus default keyword arguments (``MODELS``; user code
  adds its own with ``register``), e.g. ``resnet56``;
- an import path ``package.module:Name`` of a Linen module class, or of a function returning one,
  from the user's own files (the package must be importable: on ``PYTHONPATH`` or installed).

``config.model_kwargs`` is passed to it on top of the preset's defaults, so
``--config.model=resnet56 --config.model_kwargs.width=32`` needs no new entry. ``build`` is the one
place that makes a module from these; ``train``, ``eval``, ``summary``, ``report``, ``export``,
``sweep`` and ``resflax.load`` all go through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import dataclasses
import functools
import importlib
import inspect
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from resflax.errors import ConfigError, UnknownNameError
from resflax.models import (densenet, highway, preact_resnet, resnet_cifar, resnext, seed,
                            shortcut_study)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A preset: how to build a model (``factory(num_outputs=..., **defaults)``) and what it expects."""

  factory: Callable[..., nn.Module]  # a Linen module class, or a function returning a module
  input_shape: tuple[int, ...] | None  # one example, without the batch axis; None: the dataset's
  task: str | None  # 'classification' | 'regression'; None: whatever the loss trains it for
  source: str  # the paper or seed cell it reproduces
  # True: the model takes images of any height, width and channel count (convolutions + global
  # pooling), e.g. the CIFAR nets on 28x28x1 digits; input_shape is then what it was made for.
  any_image_size: bool = False
  defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def module(self, **kwargs) -> nn.Module:
    """The module with the preset's defaults, overridden by ``kwargs``."""
    return self.factory(**{**self.defaults, **kwargs})


def preset(factory: Callable[..., nn.Module], input_shape: tuple[int, ...] | None, task: str | None,
           source: str, *, any_image_size: bool = False, **defaults) -> ModelSpec:
  """``ModelSpec`` with the default keyword arguments written as keywords."""
  return ModelSpec(factory, input_shape, task, source, any_image_size, dict(defaults))


def _cifar(factory: Callable[..., nn.Module], source: str, **defaults) -> ModelSpec:
  """A CIFAR-10 paper model: made for 32x32x3, takes any image size (28x28x1 too), logits out."""
  return preset(factory, (32, 32, 3), 'classification', source, any_image_size=True, **defaults)


MODELS: dict[str, ModelSpec] = {
    'mnist_resmlp': preset(seed.ResidualMLP, (784,), 'classification', 'seed 002 In[2]'),
    'mnist_rescnn_deep': preset(seed.SeedResCNN, (28, 28, 1), 'classification', 'seed 002 In[3]',
                                num_blocks=19, body='deep'),
    'cifar10_resmlp': preset(seed.ResidualMLP, (3072,), 'classification', 'seed 002 In[4]'),
    'cifar10_rescnn_shallow': preset(seed.SeedResCNN, (32, 32, 3), 'classification',
                                     'seed 002 In[5]', num_blocks=2, body='shallow'),
    'cifar10_rescnn_deep': preset(seed.SeedResCNN, (32, 32, 3), 'classification', 'seed 002 In[6]',
                                  num_blocks=19, body='deep'),
    # Not a seed cell: In[5]'s shallow CNN at the MNIST shape, for the seed-claims study's
    # shallow-vs-deep comparison on digits (the seed compares them on CIFAR-10 only).
    'mnist_rescnn_shallow': preset(seed.SeedResCNN, (28, 28, 1), 'classification',
                                   'study: seed 002 In[5] at 28x28x1', num_blocks=2, body='shallow'),
    'mnist_densesum_mlp': preset(seed.ResidualMLP, (784,), 'classification', 'seed 002 In[7]',
                                 dense_additive=True),
    'steering_conv_shortcut': preset(seed.SteeringNet, (120, 160, 3), 'regression',
                                     'seed 000 method 1', shortcut='pointwise_dense'),
    'steering_dense_shortcut': preset(seed.SteeringNet, (120, 160, 3), 'regression',
                                      'seed 000 method 2', shortcut='flatten_dense'),
    # ResNet v1 for CIFAR-10, depth 6n+2 (1512.03385 sec. 4.2): option A (zero-pad) shortcuts;
    # _b: option B (1x1 projection + BN); plain<depth>: no shortcuts (fig. 6, left).
    **{f'resnet{d}': _cifar(resnet_cifar.ResNetCIFAR, '1512.03385 table 6', depth=d, shortcut='zero_pad')
       for d in (20, 32, 44, 56, 110, 1202)},
    **{f'resnet{d}_b': _cifar(resnet_cifar.ResNetCIFAR, '1512.03385 sec. 3.3 option B', depth=d,
                              shortcut='projection') for d in (20, 56, 110)},
    **{f'plain{d}': _cifar(resnet_cifar.ResNetCIFAR, '1512.03385 fig. 6 (plain)', depth=d,
                           shortcut='none') for d in (8, 20, 32, 44, 56)},
    'plain110': _cifar(resnet_cifar.ResNetCIFAR, 'plain ResNet-110 (no figure)', depth=110,
                       shortcut='none'),
    # The degradation study's depth ladder, 8 = 6*1+2 layers up: plain / residual (option A) /
    # highway merge / dense-additive (seed 002 In[7]) on the same bodies (resnet_cifar.py).
    'resnet8': _cifar(resnet_cifar.ResNetCIFAR, '1512.03385 sec. 4.2, n = 1', depth=8,
                      shortcut='zero_pad'),
    **{f'{kind}{d}': _cifar(resnet_cifar.ResNetCIFAR, source, depth=d, shortcut='zero_pad', merge=merge)
       for d in (8, 20, 56, 110)
       for kind, merge, source in (
           ('highway_resnet', 'highway', 'study: ResNet-CIFAR, highway merges (1505.00387 eq. 3)'),
           ('dense_additive_resnet', 'dense_additive',
            'study: ResNet-CIFAR, the seed 002 In[7] summing stack'))},
    # Stochastic depth (1603.09382): survival decays linearly to p_L = 0.5; rng 'stochastic_depth'.
    'resnet110_stochastic_depth': _cifar(resnet_cifar.ResNetCIFAR, '1603.09382 table 1', depth=110,
                                         shortcut='zero_pad', survival_prob_last=0.5),
    'resnet20_stochastic_depth': _cifar(resnet_cifar.ResNetCIFAR,
                                        '1603.09382 on ResNet-20 (quick default)', depth=20,
                                        shortcut='zero_pad', survival_prob_last=0.5),
    # Pre-activation ResNet (1603.05027): basic units (110) and bottleneck units (164, 1001).
    'preact_resnet20': _cifar(preact_resnet.PreActResNet,
                              '1603.05027 units on ResNet-20 (quick default)', depth=20),
    'preact_resnet110': _cifar(preact_resnet.PreActResNet, '1603.05027 tables 2-3', depth=110),
    # Bottleneck units: the family's bottleneck partial, sized by depth (9n+2).
    'preact_resnet164': _cifar(preact_resnet.PreActResNet164, '1603.05027 tables 3-4', depth=164),
    'preact_resnet1001': _cifar(preact_resnet.PreActResNet164, '1603.05027 tables 3-4',
                                depth=1001),
    # ResNeXt-29 (1611.05431 sec. 5.3), grouped 3x3 convolutions.
    'resnext29_8x64d': _cifar(resnext.ResNeXt, '1611.05431 table 7', depth=29, cardinality=8,
                              base_width=64),
    'resnext29_16x64d': _cifar(resnext.ResNeXt, '1611.05431 table 7', depth=29, cardinality=16,
                               base_width=64),
    'resnext29_2x8d': _cifar(resnext.ResNeXt29_2x8d, '1611.05431 blocks, small (quick default)',
                             depth=29, cardinality=2, base_width=8),
    # DenseNet and DenseNet-BC (1608.06993 table 2).
    'densenet40_k12': _cifar(densenet.DenseNet, '1608.06993 table 2', depth=40, growth_rate=12),
    **{f'densenet_bc{d}_k{k}': _cifar(densenet.DenseNet, source, depth=d, growth_rate=k,
                                      bottleneck=True, compression=0.5)
       for d, k, source in ((100, 12, '1608.06993 table 2'), (250, 24, '1608.06993 table 2'),
                            (190, 40, '1608.06993 table 2'),
                            (22, 12, '1608.06993 DenseNet-BC, small (quick default)'))},
    # Convolutional highway networks (1507.06228 table 2; layer lists reconstructed: highway.py).
    'highway_cifar19': _cifar(highway.HighwayCIFAR19, '1507.06228 table 2 (19 layers)'),
    'highway_cifar32': _cifar(highway.HighwayCIFAR32, '1507.06228 table 2 (32 layers)'),
    # The shortcut study (seed 000's questions; scripts/shortcut_study.py): one body, the shortcut
    # across each shape change swapped; digits (any image size) and 120x160 steering frames.
    **{f'shortcut_study_{kind}': preset(
        shortcut_study.ShortcutStudyNet, (28, 28, 1), 'classification',
        f'study: shortcut study ({kind})', any_image_size=True, shortcut=kind)
       for kind in shortcut_study.SHORTCUTS},
    **{f'steering_shortcut_study_{kind}': preset(
        shortcut_study.ShortcutStudyNet, (120, 160, 3), 'regression',
        f'study: shortcut study on steering ({kind})', shortcut=kind, head='flatten', input_pool=4)
       for kind in shortcut_study.SHORTCUTS},
}
BUILT_IN = frozenset(MODELS)  # the names resflax ships; ``register`` adds others beside them


def register(name: str, factory: Callable[..., nn.Module], *, input_shape: tuple[int, ...] | None = None,
             task: str | None = None, source: str = '', **defaults) -> ModelSpec:
  """Adds the preset ``name`` = ``factory(**defaults)`` from user code (a module named in
  ``config.imports``, so that every command that rebuilds the run registers it first).

  ``input_shape``: what the model is made for (``resflax models`` counts its parameters there);
  None: it takes the dataset's shape. ``task``: 'classification' or 'regression' if only one fits.
  A built-in name cannot be replaced; registering a user name again replaces it (a re-import).
  """
  if name in BUILT_IN:
    raise ConfigError(f'model name {name!r} is built into resflax: register yours under another name')
  if ':' in name or not name:
    raise ConfigError(f"model name {name!r}: use a plain name (':' marks an import path)")
  spec = preset(factory, None if input_shape is None else tuple(input_shape), task,
                source or f'{getattr(factory, "__module__", "?")}.{_name_of(factory)}',
                any_image_size=input_shape is None, **defaults)
  MODELS[name] = spec
  return spec


def _name_of(factory) -> str:
  while isinstance(factory, functools.partial):
    factory = factory.func
  return getattr(factory, '__qualname__', type(factory).__name__)


def _import_path(path: str) -> Callable[..., nn.Module]:
  """The object at ``package.module:Name`` (``Name`` may be dotted: ``module:Outer.Inner``)."""
  module_name, _, attr = path.partition(':')
  if not module_name or not attr:
    raise ConfigError(f'--config.model={path!r}: an import path is package.module:Name')
  try:
    obj = importlib.import_module(module_name)
  except Exception as e:  # ImportError, or whatever the user's module raises on import
    raise ConfigError(f'--config.model={path!r}: cannot import {module_name} '
                      f'({type(e).__name__}: {e}): put its package on PYTHONPATH or pip install '
                      'it') from None
  for part in attr.split('.'):
    if not hasattr(obj, part):
      names = sorted(n for n in dir(obj) if not n.startswith('_'))
      raise ConfigError(f'--config.model={path!r}: {module_name} has no {attr!r}; it has '
                        f"{', '.join(names[:30])}{' ...' if len(names) > 30 else ''}")
    obj = getattr(obj, part)
  if not callable(obj):
    raise ConfigError(f'--config.model={path!r} is a {type(obj).__name__}, not a Linen module '
                      'class or a function that returns one')
  return obj


def get_spec(name: str) -> ModelSpec:
  """The spec of a registered name or of an import path ``package.module:Name``."""
  if ':' in name:
    return preset(_import_path(name), None, None, f'import path {name}', any_image_size=True)
  try:
    return MODELS[name]
  except KeyError:
    raise UnknownNameError(
        f"unknown model {name!r}: use --config.model= one of {', '.join(sorted(MODELS))}, or an "
        'import path package.module:Name of your own Linen module') from None


def accepted_keywords(factory) -> frozenset[str] | None:
  """The keyword arguments ``factory`` takes (a Linen class: its fields), or None: any (``**kw``)."""
  bound = set()
  while isinstance(factory, functools.partial):
    bound |= set(factory.keywords)
    factory = factory.func
  if isinstance(factory, type) and issubclass(factory, nn.Module):
    return frozenset({f.name for f in dataclasses.fields(factory)} - {'parent', 'name'})
  try:
    params = inspect.signature(factory).parameters.values()
  except (TypeError, ValueError):
    return None
  if any(p.kind is p.VAR_KEYWORD for p in params):
    return None
  return frozenset(bound | {p.name for p in params
                            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)})


def _frozen(value):
  """Lists (from ``config.json``) as tuples, so a module's fields stay hashable."""
  if isinstance(value, (list, tuple)):
    return tuple(_frozen(v) for v in value)
  if isinstance(value, Mapping):
    return {k: _frozen(v) for k, v in value.items()}
  return value


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


def build(name: str, *, num_outputs: int, axis_name: str | None = None, dtype=jnp.float32,
          **kwargs) -> nn.Module:
  """The Linen module ``name`` (a registered preset or ``package.module:Name``) with ``kwargs``
  (``config.model_kwargs``) over the preset's defaults.

  ``axis_name`` syncs its BatchNorm under pmap. ``dtype`` is the computation dtype
  (``'bfloat16'`` or ``jnp.bfloat16`` for mixed precision): activations in ``dtype``, parameters,
  BatchNorm statistics and the output in float32. Both are passed only to a model that declares
  the field; a model without them trains in float32 under jit.
  """
  spec = get_spec(name)
  dtype = _computation_dtype(dtype)
  kwargs = {**spec.defaults, **_frozen(dict(kwargs))}
  accepted = accepted_keywords(spec.factory)
  if accepted is not None:
    if 'num_outputs' not in accepted:
      raise ConfigError(f'model {name!r} has no num_outputs field: add `num_outputs: int` to it '
                        '(resflax sets it from the dataset; see "Use resflax as a library")')
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
      raise ConfigError(
          f'model {name!r} takes no keyword {unknown[0]!r} (--config.model_kwargs.{unknown[0]}): '
          f"it takes {', '.join(sorted(accepted - {'num_outputs', 'axis_name', 'dtype'}))}")
  try:
    module = spec.factory(num_outputs=num_outputs, **kwargs)
  except TypeError as e:
    raise ConfigError(f'model {name!r} rejects its keyword arguments ({e}): fix '
                      '--config.model_kwargs') from None
  if not isinstance(module, nn.Module):
    raise ConfigError(f'model {name!r} built a {type(module).__name__}, not a flax.linen.Module: '
                      'name a Linen module class, or a function that returns a module')
  call = inspect.signature(type(module).__call__).parameters
  if 'train' not in call and not any(p.kind is p.VAR_KEYWORD for p in call.values()):
    raise ConfigError(f'model {name!r}: its __call__ takes no `train` argument; define '
                      '`__call__(self, x, *, train: bool)` (resflax passes train=True/False)')
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


def from_config(config, *, num_outputs: int, axis_name: str | None = None) -> nn.Module:
  """``build`` with a run's ``model``, ``model_kwargs`` and ``dtype``."""
  kwargs = config.get('model_kwargs') or {}
  if hasattr(kwargs, 'to_dict'):
    kwargs = kwargs.to_dict()
  return build(config.model, num_outputs=num_outputs, axis_name=axis_name,
               dtype=config.get('dtype', 'float32'), **kwargs)


def count_params(module: nn.Module, input_shape: tuple[int, ...]) -> int:
  """Trainable parameters of ``module`` on one example of ``input_shape`` (traced, not run)."""
  x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  variables = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, train=False), x)
  return sum(int(leaf.size) for leaf in jax.tree.leaves(variables.get('params', {})))

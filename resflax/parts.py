"""One vocabulary of parts, shared by every model family and study.

A residual block is ``merge(body(x), shortcut(x))`` (1512.03385 eq. 1-2); its norm and activation
are passed in. Every model in ``resflax.models`` names these parts with the words of this module,
and turns a word into a factory with the functions below, so ``shortcut='projection'`` means the
same module in ResNet-CIFAR, ResNeXt, the shortcut study and SteeringNet:

- shortcuts (``SHORTCUTS``): ``identity``, ``zero_pad``, ``projection``, ``avgpool_projection``,
  ``pointwise_dense``, ``flatten_dense``, ``global_pool_dense``, ``none``;
- merges (``MERGES``): ``add``, ``concat``, ``highway``, ``dense_additive``, ``skipinit``,
  ``fixup``;
- norms (``NORMS``): ``batch``, ``layer``, ``group``, ``none``, ``batch_unbiased``;
- activations: any function of ``jax.nn`` by name (``relu``, ``gelu``, ``silu``, ...).

Instead of a name, user code may pass a factory (a callable), which is used as the built-in parts
are; see each function for how it is called. A model that cannot use a part refuses it with a
``ConfigError`` naming the parts it takes (``allowed=``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import functools
from typing import Any, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from resflax import blocks
from resflax.errors import ConfigError

# A name of this vocabulary, or a factory from user code.
Part = Union[str, Callable[..., Any]]

SHORTCUTS = ('identity', 'zero_pad', 'projection', 'avgpool_projection', 'pointwise_dense',
             'flatten_dense', 'global_pool_dense', 'none')
MERGES = ('add', 'concat', 'highway', 'dense_additive', 'skipinit', 'fixup')
NORMS = ('batch', 'layer', 'group', 'none', 'batch_unbiased')
# The shortcuts with no parameters of their own.
PARAMETER_FREE_SHORTCUTS = ('identity', 'zero_pad', 'none')


def _check(kind: str, part: Part, allowed: Sequence[str], where: str) -> None:
  """A one-line ConfigError unless ``part`` is a factory or one of the ``allowed`` names."""
  if callable(part) or part in allowed:
    return
  problem = f'{where} takes no {kind} {part!r}' if where else f'unknown {kind} {part!r}'
  raise ConfigError(f"{problem}: use one of {', '.join(allowed)} (or a factory)")


# ----------------------------------------------------------------------------------------------
# Shortcuts.
# ----------------------------------------------------------------------------------------------
def _reshaping_shortcut(name: str, *, in_features: int, features: int, strides: int, conv, norm,
                        dense, to_vector: bool):
  """The built-in shortcut ``name`` from ``[N, H, W, in_features]`` to the body's output."""
  if to_vector:  # the body ends in a vector [N, features]
    if name == 'flatten_dense':
      return functools.partial(blocks.FlattenDenseShortcut, features, dense=dense)
    if name == 'global_pool_dense':
      return functools.partial(blocks.GlobalPoolDenseShortcut, features, dense=dense)
    raise ConfigError(f'shortcut {name!r} keeps a map, but this body ends in a vector: use '
                      'flatten_dense or global_pool_dense (or a factory)')
  if name == 'identity':  # reached where the shape changes, or with always=True
    return blocks.IdentityShortcut if in_features == features and strides == 1 else None
  if name == 'zero_pad':
    return functools.partial(blocks.ZeroPadShortcut, features, strides)
  if name == 'projection':
    return functools.partial(blocks.ProjectionShortcut, features, strides, conv=conv, norm=norm)
  if name == 'avgpool_projection':
    return functools.partial(blocks.AvgPoolProjectionShortcut, features, strides, conv=conv,
                             norm=norm)
  if name == 'pointwise_dense':
    if strides == 1:
      return functools.partial(blocks.PointwiseDenseShortcut, features, dense=dense)
    return functools.partial(blocks.SubsampledPointwiseDense, features, strides, dense=dense)
  if name == 'flatten_dense':
    return functools.partial(blocks.FlattenDenseToMap, features, strides, dense=dense)
  if name == 'global_pool_dense':
    return functools.partial(blocks.GlobalPoolDenseToMap, features, strides, dense=dense)
  raise AssertionError(name)


def shortcut(part: Part, in_features: int, features: int, strides: int = 1, *,
             conv: blocks.ModuleFactory = nn.Conv, norm: blocks.ModuleFactory | None = None,
             dense: blocks.ModuleFactory = nn.Dense, to_vector: bool = False, always: bool = False,
             allowed: Sequence[str] = SHORTCUTS, where: str = '') -> blocks.ModuleFactory | None:
  """The factory of the shortcut ``part`` for a block from ``in_features`` channels to the body's
  ``features`` channels at ``strides``; ``None`` where the block has no shortcut (a plain block).

  Where the shape is kept (same channels, stride 1) every shortcut but ``'none'`` is the identity
  (1512.03385 eq. 1), unless ``always`` (seed 000 method 1 puts a Dense on a shape-keeping block).
  Where it changes:

  - ``identity``: no shortcut there (the block is plain);
  - ``zero_pad``: option A of 1512.03385 sec. 3.3, ``x[::s, ::s]`` + zero channels, no parameters;
  - ``projection``: option B (eq. 2), a strided 1x1 ``conv`` + ``norm`` (no norm: with a bias);
  - ``avgpool_projection``: ResNet-D (1812.01187 fig. 2c), avg-pool + 1x1 ``conv`` + ``norm``;
  - ``pointwise_dense``: seed 000 method 1, ``Dense(features)`` on the channel axis, after taking
    every ``strides``-th position;
  - ``flatten_dense``: seed 000 method 2, Flatten + ``Dense`` to the body's map (reshaped), or to
    the body's vector ``[N, features]`` with ``to_vector``;
  - ``global_pool_dense``: global average pool + ``Dense(features)``, broadcast over the body's map
    (or the vector itself with ``to_vector``);
  - ``none``: no shortcut in any block.

  A factory ``part`` is called as ``part(in_features=, features=, strides=, conv=, norm=, dense=,
  to_vector=)`` where the shape changes (or ``always``) and returns a module factory (called as
  ``f(name=...)(x)``) or ``None``; ``conv``, ``norm`` and ``dense`` come with the model's train
  mode and dtype bound. ``allowed`` and ``where`` word the ConfigError for a name the caller
  cannot use.
  """
  _check('shortcut', part, allowed, where)
  if part == 'none':
    return None
  if in_features == features and strides == 1 and not always and not to_vector:
    return blocks.IdentityShortcut
  kwargs = dict(in_features=in_features, features=features, strides=strides, conv=conv, norm=norm,
                dense=dense, to_vector=to_vector)
  if callable(part):
    return part(**kwargs)
  return _reshaping_shortcut(part, **kwargs)


# ----------------------------------------------------------------------------------------------
# Merges.
# ----------------------------------------------------------------------------------------------
def merge(part: Part, *, gate: blocks.ModuleFactory = nn.Dense, gate_bias: float = -2.0,
          allowed: Sequence[str] = MERGES, where: str = '') -> blocks.ModuleFactory:
  """The factory of the merge ``part``, called as ``f(name=...)(body_out, shortcut_out)``.

  - ``add``: ``body + shortcut`` (1512.03385 eq. 1);
  - ``concat``: ``[shortcut, body]`` on the channels (DenseNet, 1608.06993 eq. 2);
  - ``highway``: ``T * body + (1 - T) * shortcut`` with ``T = sigmoid(gate(shortcut))``, the gate
    bias starting at ``gate_bias`` (1505.00387 eq. 3; ``gate`` is ``nn.Dense`` for a pointwise gate,
    a 3x3 conv for 1507.06228's convolutional layers);
  - ``dense_additive``: block ``i`` outputs ``body(o_{i-1}) + sum_{j<i} o_j`` (seed 002 In[7]).
    The sum over every earlier output is the stack's business (``blocks.DenseAdditiveStack``,
    ``ResNetCIFAR``); the merge itself is an addition, so this returns ``blocks.AddMerge``;
  - ``skipinit``: ``shortcut + alpha * body``, a scalar ``alpha`` starting at 0 (SkipInit,
    2002.10444; ReZero, 2003.04887), for nets without normalisation (``norm='none'``);
  - ``fixup``: ``shortcut + scale * body + bias`` (scalars, 1 and 0): the merge half of Fixup
    (1901.09321); the model gives the block Fixup's branch (``blocks.FixupBasicBody``).

  A factory ``part`` is returned as it is.
  """
  _check('merge', part, allowed, where)
  if callable(part):
    return part
  if part == 'highway':
    return functools.partial(blocks.HighwayMerge, gate=gate, gate_bias=gate_bias)
  if part == 'skipinit':
    return blocks.SkipInitMerge
  if part == 'fixup':
    return blocks.FixupMerge
  return blocks.ConcatMerge if part == 'concat' else blocks.AddMerge


# ----------------------------------------------------------------------------------------------
# Norms and activations.
# ----------------------------------------------------------------------------------------------
def norm(part: Part, *, train: bool, axis_name: str | None = None, dtype: Any = jnp.float32,
         batch: blocks.ModuleFactory = blocks.torch_batch_norm, groups: int = 32,
         optional: bool = False, allowed: Sequence[str] = NORMS,
         where: str = '') -> blocks.ModuleFactory | None:
  """The factory of the norm ``part`` with the train mode bound, called as ``f(name=...)(x)``.

  - ``batch``: ``batch`` (BatchNorm: torch's momentum 0.9 / eps 1e-5 by default, Keras' for the
    seed replicas) with ``use_running_average=not train`` and ``axis_name`` for pmap
    (1502.03167);
  - ``layer``: ``nn.LayerNorm`` (1607.06450);
  - ``group``: ``blocks.GroupNorm``, ``gcd(groups, C)`` groups (1803.08494);
  - ``none``: no normalisation: ``blocks.Identity``, or ``None`` with ``optional`` (for the parts
    whose norm is optional, e.g. ``blocks.ConvAct``, which then give their conv a bias);
  - ``batch_unbiased``: ``blocks.BatchNormUnbiased``, BatchNorm whose running variance tracks the
    unbiased batch variance, as PyTorch and Torch7 (fb.resnet.torch) do; torch's momentum 0.9 and
    eps 1e-5 (``batch`` does not apply).

  A factory ``part`` is returned as it is (bind the train mode yourself).
  """
  _check('norm', part, allowed, where)
  if callable(part):
    return part
  if part == 'batch':
    return functools.partial(batch, use_running_average=not train, axis_name=axis_name,
                             dtype=dtype)
  if part == 'batch_unbiased':
    return functools.partial(blocks.BatchNormUnbiased, use_running_average=not train,
                             axis_name=axis_name, dtype=dtype)
  if part == 'layer':
    return functools.partial(nn.LayerNorm, dtype=dtype)
  if part == 'group':
    return functools.partial(blocks.GroupNorm, groups, dtype=dtype)
  return None if optional else blocks.Identity


def activation(part: Part, *, where: str = '') -> blocks.Activation:
  """The activation ``part``: a function of ``jax.nn`` by name (``'relu'``, ``'gelu'``,
  ``'silu'``, ...), or a callable returned as it is."""
  if callable(part):
    return part
  fn = getattr(jax.nn, part, None) if isinstance(part, str) and not part.startswith('_') else None
  if fn is None or not callable(fn) or isinstance(fn, type):
    problem = f'{where} takes no activation {part!r}' if where else f'unknown activation {part!r}'
    raise ConfigError(f'{problem}: use the name of a jax.nn function, e.g. relu, gelu, silu, '
                      'elu, tanh (or a callable)')
  return fn

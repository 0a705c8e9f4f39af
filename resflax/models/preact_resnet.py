"""Pre-activation ResNet ("ResNet v2", He et al. 2016, arXiv:1603.05027) for CIFAR-10.

A unit is ``x + F(x)`` with nothing after the addition; ``F`` starts with BN -> ReLU (full
pre-activation, fig. 4e). A 3x3 conv with 16 filters, three stages (stride 2 at the start of
stages 2 and 3), a final BN -> ReLU, global average pooling, a Dense classifier.

- ResNet-110 (basic units, 16/32/64 filters, n = 18 per stage): the 1512.03385 net re-arranged
  (table 2: 6.37% CIFAR-10 error), with its option-A zero-pad shortcuts.
- ResNet-164 / ResNet-1001 (bottleneck units, 9n+2 layers, outputs 64/128/256, n = 18 / 111;
  sec. 4.1, errors in table 3, sizes in table 4), as the authors' code builds them
  (KaimingHe/resnet-1k-layers, resnet-pre-act.lua): where a unit changes the shape, its
  BN -> ReLU is shared by both branches and the shortcut is a 1x1 projection
  (``shortcut='projection'``, no BN after it; here with a bias, +448 parameters for both nets).

Size-agnostic (global average pooling). Intermediates: ``block1_output`` (the stem conv),
``block{i}_output`` per unit, ``pre_logits``.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from resflax import blocks, parts
from resflax.errors import ConfigError
from resflax.models.resnet_cifar import stages_from_depth, with_stochastic_depth

# Layers per unit, for ``depth``: 6n+2 with basic units, 9n+2 with bottleneck units.
_LAYERS_PER_UNIT = {blocks.PreActBasicBody: 2, blocks.PreActBottleneckBody: 3}


class PreActResNet(nn.Module):
  """Pre-activation ResNet for CIFAR (1603.05027 fig. 4e, sec. 4.1), basic or bottleneck units.

  ``depth``: 6n+2 with basic units (20, 110), 9n+2 with bottleneck units (164, 1001); or
  ``stage_sizes``. ``shortcut`` (``resflax.parts``) where a unit changes the shape: a
  parameter-free one (``zero_pad``, ``identity``: none there) leaves the unit's BN -> ReLU in its
  body; any other (``projection``, the authors' choice for bottleneck nets, a factory, ...) shares
  it with the shortcut and gets no norm of its own (a 1x1 projection with a bias, as the authors').
  ``merge``: ``add`` or ``highway``.
  """

  depth: int | None = None  # 6n+2 (basic) or 9n+2 (bottleneck); None: from stage_sizes
  stage_sizes: Sequence[int] | None = None
  block_cls: blocks.ModuleFactory = blocks.PreActBasicBody
  stage_features: Sequence[int] = (16, 32, 64)  # unit outputs per stage
  shortcut: parts.Part = 'zero_pad'
  merge: parts.Part = 'add'  # 'add' | 'highway'
  norm: parts.Part = 'batch'
  act: parts.Part = 'relu'
  stem_features: int = 16
  survival_prob_last: float = 1.0  # p_L of stochastic depth (1603.09382); 1.0: off
  num_outputs: int = 10
  axis_name: str | None = None
  dtype: Any = jnp.float32  # computation dtype (bfloat16: mixed precision); params stay float32

  def stage_plan(self) -> tuple[int, ...]:
    """Units per stage, from ``depth`` or given directly."""
    if (self.depth is None) == (self.stage_sizes is None):
      raise ConfigError('PreActResNet takes depth (6n+2 basic, 9n+2 bottleneck) or stage_sizes, '
                        f'exactly one of them: got depth={self.depth!r}, '
                        f'stage_sizes={self.stage_sizes!r}')
    if self.stage_sizes is not None:
      return tuple(self.stage_sizes)
    if self.block_cls not in _LAYERS_PER_UNIT:
      raise ConfigError(f'PreActResNet cannot derive stage_sizes from depth for block_cls '
                        f'{self.block_cls!r}: give stage_sizes')
    return stages_from_depth(self.depth, _LAYERS_PER_UNIT[self.block_cls], 2, 'PreActResNet')

  @nn.compact
  def __call__(self, x, train: bool = False):  # x: [N, H, W, C]
    where = 'PreActResNet'
    stage_sizes = self.stage_plan()
    norm = parts.norm(self.norm, train=train, axis_name=self.axis_name, dtype=self.dtype,
                      where=where)
    conv = functools.partial(blocks.he_conv, dtype=self.dtype)
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    act = parts.activation(self.act, where=where)
    merge = parts.merge(self.merge, gate=dense, allowed=('add', 'highway'), where=where)
    x = conv(self.stem_features, (3, 3), padding=1, name='stem_conv')(x)  # units start with BN-ReLU
    self.sow('intermediates', 'block1_output', x)
    survival = blocks.linear_decay_survival(sum(stage_sizes), self.survival_prob_last)
    i = 0
    for stage, (n, features) in enumerate(zip(stage_sizes, self.stage_features)):
      for b in range(n):
        strides = 2 if stage > 0 and b == 0 else 1
        name = f'block{i + 2}'
        changes_shape = x.shape[-1] != features or strides != 1
        body = functools.partial(self.block_cls, features, strides=strides, conv=conv, norm=norm,
                                 act=act)
        # The shortcut's norm is the unit's shared pre-activation (None: no norm of its own).
        shortcut = parts.shortcut(self.shortcut, x.shape[-1], features, strides, conv=conv,
                                  norm=None, dense=dense, where=where)
        if shortcut is None:
          unit = body(name=name)
        elif not changes_shape or self.shortcut in parts.PARAMETER_FREE_SHORTCUTS:
          body = with_stochastic_depth(body, survival[i], train, self.axis_name)
          unit = blocks.ResidualBlock(body, shortcut, merge, name=name)
        else:
          body = with_stochastic_depth(functools.partial(body, preact=False), survival[i], train,
                                       self.axis_name)
          unit = blocks.PreActivation(functools.partial(blocks.ResidualBlock, body, shortcut, merge),
                                      norm=norm, act=act, name=name)
        x = unit(x)
        self.sow('intermediates', f'{name}_output', x)
        i += 1
    x = act(norm(name='final_norm')(x))
    x = jnp.mean(x, axis=(1, 2))  # global average pooling
    self.sow('intermediates', 'pre_logits', x)
    x = nn.Dense(self.num_outputs, dtype=self.dtype, name='logits')(x)
    return jnp.asarray(x, jnp.float32)  # the loss is computed in float32


_bottleneck = dict(block_cls=blocks.PreActBottleneckBody, stage_features=(64, 128, 256),
                   shortcut='projection')
PreActResNet20 = functools.partial(PreActResNet, depth=20)  # fast config default
PreActResNet110 = functools.partial(PreActResNet, depth=110)
PreActResNet164 = functools.partial(PreActResNet, depth=164, **_bottleneck)
PreActResNet1001 = functools.partial(PreActResNet, depth=1001, **_bottleneck)

# Used for testing only.
_PreActResNet11 = functools.partial(PreActResNet, depth=11, **_bottleneck)

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
from resflax.models.common import Skeleton, stage_sizes

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
    return stage_sizes('PreActResNet', self.depth, self.stage_sizes,
                       _LAYERS_PER_UNIT.get(self.block_cls), 2,
                       hint='6n+2 basic, 9n+2 bottleneck')

  @nn.compact
  def __call__(self, x, train: bool = False):  # x: [N, H, W, C]
    sk = Skeleton.of(self, train)
    x = sk.stem(x, self.stem_features, norm=False)  # units start with BN-ReLU

    def unit(x, slot):
      body = functools.partial(self.block_cls, slot.features, strides=slot.strides, conv=sk.conv,
                               norm=sk.norm, act=sk.act)
      # The shortcut's norm is the unit's shared pre-activation (None: no norm of its own).
      shortcut = sk.shortcut_for(slot, norm=None)
      if (shortcut is None or not slot.changes_shape
          or self.shortcut in parts.PARAMETER_FREE_SHORTCUTS):
        return sk.residual(x, slot, body, norm=None)
      body = sk.with_stochastic_depth(functools.partial(body, preact=False), slot)
      return blocks.PreActivation(functools.partial(blocks.ResidualBlock, body, shortcut, sk.merge),
                                  norm=sk.norm, act=sk.act, name=slot.name)(x)

    x = sk.stages(x, self.stage_plan(), self.stage_features, unit)
    return sk.head(x, final_norm=True)


_bottleneck = dict(block_cls=blocks.PreActBottleneckBody, stage_features=(64, 128, 256),
                   shortcut='projection')
PreActResNet20 = functools.partial(PreActResNet, depth=20)  # fast config default
PreActResNet110 = functools.partial(PreActResNet, depth=110)
PreActResNet164 = functools.partial(PreActResNet, depth=164, **_bottleneck)
PreActResNet1001 = functools.partial(PreActResNet, depth=1001, **_bottleneck)

# Used for testing only.
_PreActResNet11 = functools.partial(PreActResNet, depth=11, **_bottleneck)

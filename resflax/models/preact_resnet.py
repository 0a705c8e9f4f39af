"""Pre-activation ResNet ("ResNet v2", He et al. 2016, arXiv:1603.05027) for CIFAR-10.

A unit is ``x + F(x)`` with nothing after the addition; ``F`` starts with BN -> ReLU (full
pre-activation, fig. 4e). A 3x3 conv with 16 filters, three stages (stride 2 at the start of
stages 2 and 3), a final BN -> ReLU, global average pooling, a Dense classifier.

- ResNet-110 (basic units, 16/32/64 filters, n = 18 per stage): the 1512.03385 net re-arranged
  (table 2: 6.37% CIFAR-10 error), with its option-A zero-pad shortcuts.
- ResNet-164 / ResNet-1001 (bottleneck units, 9n+2 layers, outputs 64/128/256, n = 18 / 111;
  sec. 4.1, errors in table 3, sizes in table 4), as the authors' code builds them
  (KaimingHe/resnet-1k-layers, resnet-pre-act.lua): where a unit changes the shape, its
  BN -> ReLU is shared by both branches and the shortcut is a 1x1 projection (``shortcut='B'``, no
  BN after it; here with a bias, +448 parameters for both nets).

Size-agnostic (global average pooling). Intermediates: ``block1_output`` (the stem conv),
``block{i}_output`` per unit, ``pre_logits``.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from resflax import blocks
from resflax.models.resnet_cifar import with_stochastic_depth


class PreActResNet(nn.Module):
  """Pre-activation ResNet for CIFAR (1603.05027 fig. 4e, sec. 4.1), basic or bottleneck units."""

  stage_sizes: Sequence[int]
  block_cls: blocks.ModuleFactory = blocks.PreActBasicBody
  stage_features: Sequence[int] = (16, 32, 64)  # unit outputs per stage
  # Where the shape changes: 'A' zero-pads x; 'B' shares the pre-activation with a 1x1 projection.
  shortcut: str = 'A'
  stem_features: int = 16
  survival_prob_last: float = 1.0  # p_L of stochastic depth (1603.09382); 1.0: off
  num_outputs: int = 10
  axis_name: str | None = None
  dtype: Any = jnp.float32  # computation dtype (bfloat16: mixed precision); params stay float32

  @nn.compact
  def __call__(self, x, train: bool = False):  # x: [N, H, W, C]
    norm = functools.partial(blocks.torch_batch_norm, use_running_average=not train,
                             axis_name=self.axis_name, dtype=self.dtype)
    conv, act = functools.partial(blocks.he_conv, dtype=self.dtype), nn.relu
    x = conv(self.stem_features, (3, 3), padding=1, name='stem_conv')(x)  # units start with BN-ReLU
    self.sow('intermediates', 'block1_output', x)
    survival = blocks.linear_decay_survival(sum(self.stage_sizes), self.survival_prob_last)
    i = 0
    for stage, (n, features) in enumerate(zip(self.stage_sizes, self.stage_features)):
      for b in range(n):
        strides = 2 if stage > 0 and b == 0 else 1
        name = f'block{i + 2}'
        changes_shape = x.shape[-1] != features or strides != 1
        body = functools.partial(self.block_cls, features, strides=strides, conv=conv, norm=norm,
                                 act=act)
        if not changes_shape or self.shortcut == 'A':
          body = with_stochastic_depth(body, survival[i], train, self.axis_name)
          shortcut = (blocks.IdentityShortcut if not changes_shape
                      else functools.partial(blocks.ZeroPadShortcut, features, strides))
          unit = blocks.ResidualBlock(body, shortcut, name=name)
        elif self.shortcut == 'B':
          body = with_stochastic_depth(functools.partial(body, preact=False), survival[i], train,
                                       self.axis_name)
          projection = functools.partial(blocks.ProjectionShortcut, features, strides, conv=conv)
          unit = blocks.PreActivation(functools.partial(blocks.ResidualBlock, body, projection),
                                      norm=norm, act=act, name=name)
        else:
          raise ValueError(f"shortcut must be 'A' or 'B', got {self.shortcut!r}")
        x = unit(x)
        self.sow('intermediates', f'{name}_output', x)
        i += 1
    x = act(norm(name='final_norm')(x))
    x = jnp.mean(x, axis=(1, 2))  # global average pooling
    self.sow('intermediates', 'pre_logits', x)
    x = nn.Dense(self.num_outputs, dtype=self.dtype, name='logits')(x)
    return jnp.asarray(x, jnp.float32)  # the loss is computed in float32


_bottleneck = dict(block_cls=blocks.PreActBottleneckBody, stage_features=(64, 128, 256),
                   shortcut='B')
PreActResNet20 = functools.partial(PreActResNet, stage_sizes=(3, 3, 3))  # fast config default
PreActResNet110 = functools.partial(PreActResNet, stage_sizes=(18, 18, 18))
PreActResNet164 = functools.partial(PreActResNet, stage_sizes=(18, 18, 18), **_bottleneck)
PreActResNet1001 = functools.partial(PreActResNet, stage_sizes=(111, 111, 111), **_bottleneck)

# Used for testing only.
_PreActResNet11 = functools.partial(PreActResNet, stage_sizes=(1, 1, 1), **_bottleneck)

"""ResNet v1 for CIFAR-10 (He et al. 2015, arXiv:1512.03385 sec. 4.2), its plain counterparts, and
stochastic depth on it (Huang et al. 2016, arXiv:1603.09382).

Depth 6n + 2: a 3x3 conv with 16 filters, three stages of n basic blocks with 16, 32, 64 filters
(the first block of stages 2 and 3 has stride 2: 32x32 -> 16x16 -> 8x8), global average pooling, a
Dense classifier. Where a block changes the shape, the shortcut is option A (zero-padding, the
paper's CIFAR choice, parameter-free) or option B (1x1 projection + BN); elsewhere the identity.
The plain nets (fig. 6 left, the degradation experiment) are the same stacks without shortcuts.

The nets are size-agnostic (global average pooling): 28x28x1 inputs give 28 -> 14 -> 7 maps.

Intermediates (``mutable=['intermediates']``): ``block1_output`` (the stem), ``block{i}_output``
for the blocks ``i = 2 .. 3n+1`` (after the post-addition ReLU), ``pre_logits``; with stochastic
depth also each block's ``keep`` mask (``block{i}/body/keep``).
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from resflax import blocks


def shortcut_for(kind: str, in_features: int, features: int, strides: int, conv, norm):
  """The identity where the shape is kept; else option A (``'A'``) or B (``'B'``) of 1512.03385."""
  if in_features == features and strides == 1:
    return blocks.IdentityShortcut
  if kind == 'A':
    return functools.partial(blocks.ZeroPadShortcut, features, strides)
  if kind == 'B':
    return functools.partial(blocks.ProjectionShortcut, features, strides, conv=conv, norm=norm)
  raise ValueError(f"shortcut must be 'A' (zero-pad) or 'B' (projection), got {kind!r}")


def with_stochastic_depth(body, survival_prob: float, train: bool, axis_name: str | None):
  """``body`` wrapped in ``blocks.StochasticDepth`` when ``survival_prob < 1``, else unchanged."""
  if survival_prob >= 1.0:
    return body
  return functools.partial(blocks.StochasticDepth, body=body, survival_prob=survival_prob,
                           deterministic=not train, axis_name=axis_name)


class ResNetCIFAR(nn.Module):
  """ResNet v1, 6n+2 layers, for CIFAR-10 (1512.03385 sec. 4.2, table 6); plain if shortcut='none'.

  ``survival_prob_last < 1`` turns on stochastic depth (1603.09382 sec. 3): block ``l`` of ``L``
  keeps its residual branch with probability ``1 - l/L (1 - p_L)``.

  Two more merges on the same skeleton, for the degradation study (same bodies, same depth):
  ``shortcut='highway'``: ``act(T(x) * body(x) + (1 - T(x)) * A(x))`` with a pointwise gate
  ``T`` whose bias starts at -2 (1505.00387 eq. 3, ``blocks.HighwayMerge``), ``A`` the option-A
  shortcut; ``shortcut='dense_additive'``: the summing stack of seed 002 In[7] on conv maps: in
  each stage, block ``i`` outputs ``act(body(o_{i-1}) + sum_{j<i} o_j)`` over the stage's earlier
  outputs ``o_j``, where ``o_0`` is the stage input through the option-A shortcut.
  """

  stage_sizes: Sequence[int]  # n per stage
  block_cls: blocks.ModuleFactory = blocks.ConvNormActConvNorm
  shortcut: str = 'A'  # 'A' zero-pad | 'B' projection + BN | 'none' (plain) | 'highway' |
  #                       'dense_additive'
  stage_features: Sequence[int] = (16, 32, 64)
  survival_prob_last: float = 1.0  # p_L; 1.0: no stochastic depth
  num_outputs: int = 10
  axis_name: str | None = None  # BatchNorm's cross-device axis under pmap
  dtype: Any = jnp.float32  # computation dtype (bfloat16: mixed precision); params stay float32

  @nn.compact
  def __call__(self, x, train: bool = False):  # x: [N, H, W, C]
    if self.shortcut == 'none' and self.survival_prob_last < 1.0:
      raise ValueError('stochastic depth needs shortcuts: a plain block has no branch to drop')
    norm = functools.partial(blocks.torch_batch_norm, use_running_average=not train,
                             axis_name=self.axis_name, dtype=self.dtype)
    conv, act = functools.partial(blocks.he_conv, dtype=self.dtype), nn.relu
    x = conv(self.stage_features[0], (3, 3), padding=1, name='stem_conv')(x)
    x = act(norm(name='stem_norm')(x))  # [N, H, W, 16]
    self.sow('intermediates', 'block1_output', x)
    survival = blocks.linear_decay_survival(sum(self.stage_sizes), self.survival_prob_last)
    i = 0
    for stage, (n, features) in enumerate(zip(self.stage_sizes, self.stage_features)):
      earlier = []  # dense_additive: this stage's earlier outputs o_0, o_1, ...
      for b in range(n):
        strides = 2 if stage > 0 and b == 0 else 1
        body = functools.partial(self.block_cls, features, strides=strides, conv=conv, norm=norm,
                                 act=act)
        name = f'block{i + 2}'
        if self.shortcut == 'none':
          x = act(body(name=name)(x))
        elif self.shortcut == 'highway':
          merge = functools.partial(blocks.HighwayMerge,
                                    gate=functools.partial(nn.Dense, dtype=self.dtype),
                                    gate_bias=-2.0)
          shortcut = shortcut_for('A', x.shape[-1], features, strides, conv, norm)
          x = act(blocks.ResidualBlock(body, shortcut, merge, name=name)(x))
        elif self.shortcut == 'dense_additive':
          if not earlier:  # o_0: the stage input, reshaped by option A where the stage starts
            earlier.append(
                shortcut_for('A', x.shape[-1], features, strides, conv, norm)(name=f'{name}_in')(x))
          y = body(name=name)(x)  # x = o_{i-1}
          for o in earlier:
            y = y + o
          x = act(y)
          earlier.append(x)
        else:
          body = with_stochastic_depth(body, survival[i], train, self.axis_name)
          shortcut = shortcut_for(self.shortcut, x.shape[-1], features, strides, conv, norm)
          x = act(blocks.ResidualBlock(body, shortcut, name=name)(x))
        self.sow('intermediates', f'{name}_output', x)
        i += 1
    x = jnp.mean(x, axis=(1, 2))  # global average pooling: [N, 64]
    self.sow('intermediates', 'pre_logits', x)
    x = nn.Dense(self.num_outputs, dtype=self.dtype, name='logits')(x)
    return jnp.asarray(x, jnp.float32)  # the loss is computed in float32


# Depth 6n + 2 (table 6). Option A shortcuts; shortcut='B' for option B, 'none' for the plain net.
ResNet20 = functools.partial(ResNetCIFAR, stage_sizes=(3, 3, 3))
ResNet32 = functools.partial(ResNetCIFAR, stage_sizes=(5, 5, 5))
ResNet44 = functools.partial(ResNetCIFAR, stage_sizes=(7, 7, 7))
ResNet56 = functools.partial(ResNetCIFAR, stage_sizes=(9, 9, 9))
ResNet110 = functools.partial(ResNetCIFAR, stage_sizes=(18, 18, 18))
ResNet1202 = functools.partial(ResNetCIFAR, stage_sizes=(200, 200, 200))
# 1603.09382 table 1: ResNet-110 with linearly decaying survival, p_L = 0.5.
ResNet110StochasticDepth = functools.partial(ResNet110, survival_prob_last=0.5)

# n = 1: the smallest of the family (the degradation study's shallowest point; also the tests').
ResNet8 = functools.partial(ResNetCIFAR, stage_sizes=(1, 1, 1))
_ResNet8 = ResNet8

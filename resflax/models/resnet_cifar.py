"""ResNet v1 for CIFAR-10 (He et al. 2015, arXiv:1512.03385 sec. 4.2), its plain counterparts, and
stochastic depth on it (Huang et al. 2016, arXiv:1603.09382).

Depth 6n + 2: a 3x3 conv with 16 filters, three stages of n basic blocks with 16, 32, 64 filters
(the first block of stages 2 and 3 has stride 2: 32x32 -> 16x16 -> 8x8), global average pooling, a
Dense classifier. Where a block changes the shape, the shortcut is option A (``zero_pad``, the
paper's CIFAR choice, parameter-free) or option B (``projection``: 1x1 conv + BN), or any other
shortcut of ``resflax.parts``; elsewhere the identity.
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

from resflax import blocks, parts
from resflax.errors import ConfigError
from resflax.models.common import Skeleton, stage_sizes


class ResNetCIFAR(nn.Module):
  """ResNet v1, 6n+2 layers, for CIFAR-10 (1512.03385 sec. 4.2, table 6); plain if shortcut='none'.

  Size: ``depth`` (6n+2: n blocks per stage) and ``width`` (the first stage's filters; the stages
  have ``width, 2 width, 4 width``), or ``stage_sizes`` / ``stage_features`` spelled out.

  Parts (``resflax.parts``): ``shortcut`` where a block changes the shape (``zero_pad``, option A,
  the paper's CIFAR choice; ``projection``, option B; ``none``: the plain net; any other shortcut
  of the vocabulary or a factory), the identity elsewhere; ``norm`` and ``act`` everywhere.
  ``merge``: ``add`` (``act(body(x) + shortcut(x))``), or, for the degradation study (same bodies,
  same depth), ``highway``: ``act(T(x) * body(x) + (1 - T(x)) * s(x))`` with a pointwise gate ``T``
  whose bias starts at -2 (1505.00387 eq. 3, ``blocks.HighwayMerge``), ``s`` the shortcut;
  ``dense_additive``: the summing stack of seed 002 In[7] on conv maps: in each stage, block ``i``
  outputs ``act(body(o_{i-1}) + sum_{j<i} o_j)`` over the stage's earlier outputs ``o_j``, where
  ``o_0`` is the stage input through the shortcut. A block with no shortcut (``identity`` where the
  shape changes) is plain, whatever the merge.
  Without normalisation (``norm='none'``): ``skipinit``, ``act(s(x) + alpha body(x))`` with a
  scalar ``alpha`` starting at 0 (SkipInit 2002.10444, ReZero 2003.04887); ``fixup`` (Zhang et al.
  2019, 1901.09321), Fixup's branch ``blocks.FixupBasicBody`` (scalar biases, the first conv
  rescaled by ``L^(-1/2)`` for ``L`` blocks, the last one zero) with its multiplier and bias in the
  merge, a scalar bias after the stem and before the classifier, whose weights start at zero.

  ``survival_prob_last < 1`` turns on stochastic depth (1603.09382 sec. 3): block ``l`` of ``L``
  keeps its residual branch with probability ``1 - l/L (1 - p_L)``.
  """

  depth: int | None = None  # 6n + 2; None: from stage_sizes
  width: int | None = None  # first-stage filters (16); None: 16, or from stage_features
  stage_sizes: Sequence[int] | None = None  # n per stage, instead of depth
  stage_features: Sequence[int] | None = None  # filters per stage, instead of width
  block_cls: blocks.ModuleFactory = blocks.ConvNormActConvNorm
  shortcut: parts.Part = 'zero_pad'
  merge: parts.Part = 'add'  # 'add' | 'highway' | 'dense_additive' | 'skipinit' | 'fixup'
  norm: parts.Part = 'batch'
  act: parts.Part = 'relu'
  survival_prob_last: float = 1.0  # p_L; 1.0: no stochastic depth
  num_outputs: int = 10
  axis_name: str | None = None  # BatchNorm's cross-device axis under pmap
  dtype: Any = jnp.float32  # computation dtype (bfloat16: mixed precision); params stay float32

  def stage_plan(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(blocks per stage, filters per stage), from ``depth`` / ``width`` or given directly."""
    sizes = stage_sizes('ResNetCIFAR', self.depth, self.stage_sizes, 2, 2, hint='6n+2, e.g. 20')
    if self.width is not None and self.stage_features is not None:
      raise ConfigError('ResNetCIFAR takes width or stage_features, not both')
    if self.stage_features is not None:
      return sizes, tuple(self.stage_features)
    width = 16 if self.width is None else self.width
    return sizes, tuple(width * 2**stage for stage in range(len(sizes)))

  @nn.compact
  def __call__(self, x, train: bool = False):  # x: [N, H, W, C]
    sizes, widths = self.stage_plan()
    dense_additive, fixup = self.merge == 'dense_additive', self.merge == 'fixup'
    if self.survival_prob_last < 1.0 and (self.shortcut == 'none' or dense_additive):
      raise ConfigError('stochastic depth needs residual blocks: use survival_prob_last=1 with '
                        f'shortcut={self.shortcut!r}, merge={self.merge!r}')
    sk = Skeleton.of(self, train, merges=('add', 'highway', 'dense_additive', 'skipinit', 'fixup'))
    if fixup and (self.norm != 'none' or self.block_cls is not blocks.ConvNormActConvNorm):
      raise ConfigError("ResNetCIFAR merge 'fixup' replaces normalisation: use norm='none' and "
                        f'the basic block (got norm={self.norm!r})')
    if fixup and self.shortcut in ('none', 'identity'):
      raise ConfigError(f"ResNetCIFAR merge 'fixup' needs a shortcut in every block (its branches "
                        f'start at zero), not {self.shortcut!r}: use zero_pad or projection')
    x = sk.stem(x, widths[0], bias=fixup)  # [N, H, W, 16]
    earlier = []  # dense_additive: the stage's earlier outputs o_0, o_1, ...

    def block(x, slot):
      if fixup:
        body = functools.partial(blocks.FixupBasicBody, slot.features, strides=slot.strides,
                                 num_branches=slot.num_blocks, conv=sk.conv, act=sk.act)
      else:
        body = functools.partial(self.block_cls, slot.features, strides=slot.strides,
                                 conv=sk.conv, norm=sk.norm, act=sk.act)
      if not dense_additive:
        return sk.act(sk.residual(x, slot, body))
      if slot.block == 0:  # o_0: the stage input, reshaped by the shortcut where the stage starts
        shortcut = sk.shortcut_for(slot)
        if shortcut is None:
          raise ConfigError(f"ResNetCIFAR merge 'dense_additive' needs a shortcut where the "
                            f'shape changes, not {self.shortcut!r}: use zero_pad or projection')
        earlier[:] = [shortcut(name=f'{slot.name}_in')(x)]
      y = body(name=slot.name)(x)  # x = o_{i-1}
      for o in earlier:
        y = y + o
      earlier.append(sk.act(y))
      return earlier[-1]

    x = sk.stages(x, sizes, widths, block)
    # Fixup (1901.09321 sec. 3 rule 1): a scalar bias before the classifier, which starts at zero.
    return sk.head(x, bias=fixup, kernel_init=nn.initializers.zeros if fixup else None)


# Depth 6n + 2 (table 6). Option A shortcuts; shortcut='projection' for option B, 'none' for the
# plain net.
ResNet20 = functools.partial(ResNetCIFAR, depth=20)
ResNet32 = functools.partial(ResNetCIFAR, depth=32)
ResNet44 = functools.partial(ResNetCIFAR, depth=44)
ResNet56 = functools.partial(ResNetCIFAR, depth=56)
ResNet110 = functools.partial(ResNetCIFAR, depth=110)
ResNet1202 = functools.partial(ResNetCIFAR, depth=1202)
# 1603.09382 table 1: ResNet-110 with linearly decaying survival, p_L = 0.5.
ResNet110StochasticDepth = functools.partial(ResNet110, survival_prob_last=0.5)

# n = 1: the smallest of the family (the degradation study's shallowest point; also the tests').
ResNet8 = functools.partial(ResNetCIFAR, depth=8)
_ResNet8 = ResNet8

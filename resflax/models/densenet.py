"""DenseNet and DenseNet-BC for CIFAR (Huang et al. 2016, arXiv:1608.06993 sec. 3-4 / table 2).

A 3x3 conv (16 filters; 2k for DenseNet-BC), three dense blocks of N layers joined by transitions
(BN -> ReLU -> 1x1 conv -> 2x2 average pool; DenseNet-BC keeps floor(0.5 m) channels), then
BN -> ReLU -> global average pooling -> Dense. Each dense layer concatenates k new channels to its
input: ``ResidualBlock(body, merge=ConcatMerge)``, stacked with ``ResidualStack``.

- DenseNet (L=40, k=12): N = (L-4)/3 = 12 layers of BN-ReLU-Conv3x3.
- DenseNet-BC (L, k): N = (L-4)/6 bottleneck layers BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k),
  compression 0.5: (100, 12), (250, 24), (190, 40).

Dropout (rate 0.2 after each conv but the first) is the paper's choice without data augmentation;
the table-2 "C10+" numbers are without it (``dropout_rate=0``, the default).

Size-agnostic (global average pooling; 28x28 inputs give 28 -> 14 -> 7). Intermediates:
``block1_output`` (the stem), ``block{i}_output`` per dense layer, ``transition{s}_output``,
``pre_logits``.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from resflax import blocks, parts
from resflax.errors import ConfigError
from resflax.models.common import Skeleton, stage_sizes


class DenseNet(nn.Module):
  """DenseNet(-BC) for CIFAR (1608.06993 sec. 3, "Implementation Details"; table 2).

  Size: ``depth`` L (N = (L-4)/3 layers per dense block, (L-4)/6 with ``bottleneck``) or
  ``stage_sizes``, and ``growth_rate`` k. Parts (``resflax.parts``): a dense layer is
  ``merge(body(x), shortcut(x))`` with the ``identity`` shortcut and the ``concat`` merge (the only
  ones that keep DenseNet a DenseNet; a merge factory is taken too); ``norm``, ``act``.
  """

  depth: int | None = None  # L; None: from stage_sizes
  stage_sizes: Sequence[int] | None = None  # dense layers per block: (L-4)/3, or (L-4)/6 (B)
  growth_rate: int = 12  # k
  bottleneck: bool = False  # B: a 1x1 conv to 4k before each 3x3
  compression: float = 1.0  # C: theta, a transition keeps floor(theta * m) channels
  stem_features: int | None = None  # None: 16, or 2k with bottleneck and compression (BC)
  block_cls: blocks.ModuleFactory = blocks.DenseNetLayerBody
  shortcut: parts.Part = 'identity'
  merge: parts.Part = 'concat'
  norm: parts.Part = 'batch'
  act: parts.Part = 'relu'
  dropout_rate: float = 0.0
  num_outputs: int = 10
  axis_name: str | None = None
  dtype: Any = jnp.float32  # computation dtype (bfloat16: mixed precision); params stay float32

  def stage_plan(self) -> tuple[int, ...]:
    """Dense layers per block, from ``depth`` or given directly."""
    return stage_sizes('DenseNet', self.depth, self.stage_sizes, 2 if self.bottleneck else 1, 4,
                       hint='3n+4, 6n+4 with bottleneck; e.g. 40, 100')

  @nn.compact
  def __call__(self, x, train: bool = False):  # x: [N, H, W, C]
    sizes = self.stage_plan()
    if callable(self.shortcut):
      raise ConfigError('DenseNet takes no shortcut factory: a dense layer concatenates its input '
                        "itself: use shortcut='identity'")
    shortcut = parts.shortcut(self.shortcut, 1, 1, allowed=('identity',), where='DenseNet')
    sk = Skeleton.of(self, train, merges=('concat',))
    dropout = functools.partial(sk.dropout, self.dropout_rate) if self.dropout_rate else None
    k = self.growth_rate
    stem = self.stem_features or (2 * k if self.bottleneck and self.compression < 1 else 16)
    x = sk.stem(x, stem, norm=False)  # [N, H, W, stem]
    body = functools.partial(self.block_cls, k,
                             bottleneck_features=4 * k if self.bottleneck else None,
                             conv=sk.conv, norm=sk.norm, act=sk.act, dropout=dropout)
    first = 2
    for stage, n in enumerate(sizes):
      x = blocks.ResidualStack([body] * n, shortcut=shortcut, merge=sk.merge, first_index=first,
                               name=f'dense{stage + 1}')(x)  # [N, H, W, m + n k]
      first += n
      if stage < len(sizes) - 1:
        features = math.floor(self.compression * x.shape[-1])
        x = blocks.DenseNetTransition(features, conv=sk.conv, norm=sk.norm, act=sk.act,
                                      dropout=dropout,
                                      name=f'transition{stage + 1}')(x)  # [N, H/2, W/2, features]
        self.sow('intermediates', f'transition{stage + 1}_output', x)
    return sk.head(x, final_norm=True)


DenseNet40_k12 = functools.partial(DenseNet, depth=40, growth_rate=12)
_bc = dict(bottleneck=True, compression=0.5)
DenseNetBC100_k12 = functools.partial(DenseNet, depth=100, growth_rate=12, **_bc)
DenseNetBC250_k24 = functools.partial(DenseNet, depth=250, growth_rate=24, **_bc)
DenseNetBC190_k40 = functools.partial(DenseNet, depth=190, growth_rate=40, **_bc)
# Not in the paper: a DenseNet-BC small enough for a quick run (the config's default).
DenseNetBC22_k12 = functools.partial(DenseNet, depth=22, growth_rate=12, **_bc)

# Used for testing only (the BC path is compiled by the config smoke test on DenseNetBC22_k12).
_DenseNet7_k4 = functools.partial(DenseNet, depth=7, growth_rate=4)

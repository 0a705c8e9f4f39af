"""ResNeXt for CIFAR (Xie et al. 2016, arXiv:1611.05431 sec. 5.3 / table 7).

ResNeXt-29 (C x d): a 3x3 conv with 64 filters -> BN -> ReLU, three stages of 3 bottleneck blocks
with outputs 256, 512, 1024 and grouped 3x3 convolutions of width C*d, 2C*d, 4C*d (C groups;
stride 2 at the start of stages 2 and 3), global average pooling, a Dense classifier. Blocks are
``relu(body(x) + shortcut(x))`` with a 1x1 projection + BN shortcut where the shape changes, as in
the authors' code (facebookresearch/ResNeXt, models/resnext.lua, shortcutType 'B';
``shortcut='projection'`` here).

Size-agnostic (global average pooling). Intermediates: ``block1_output`` (the stem),
``block{i}_output`` per block, ``pre_logits``.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from resflax import blocks, parts
from resflax.models.common import Skeleton, stage_sizes


class ResNeXt(nn.Module):
  """ResNeXt for CIFAR (1611.05431 sec. 5.3): C groups of width ``base_width * 2**stage``.

  Size: ``depth`` (9n+2 with n bottleneck blocks per stage; 29: n = 3) or ``stage_sizes``,
  ``cardinality`` C and ``base_width`` d (the bottleneck width of the first stage). Parts
  (``resflax.parts``): ``shortcut`` where the shape changes (``projection`` as the authors'),
  ``merge`` (``add`` or ``highway``), ``norm``, ``act``.
  """

  depth: int | None = None  # 9n + 2; None: 29, or from stage_sizes
  stage_sizes: Sequence[int] | None = None
  block_cls: blocks.ModuleFactory = blocks.BottleneckBody
  cardinality: int = 8  # C
  base_width: int = 64  # d of the first stage
  stage_features: Sequence[int] = (256, 512, 1024)  # block outputs per stage
  stem_features: int = 64
  shortcut: parts.Part = 'projection'
  merge: parts.Part = 'add'  # 'add' | 'highway'
  norm: parts.Part = 'batch'
  act: parts.Part = 'relu'
  survival_prob_last: float = 1.0  # p_L of stochastic depth (1603.09382); 1.0: off
  num_outputs: int = 10
  axis_name: str | None = None
  dtype: Any = jnp.float32  # computation dtype (bfloat16: mixed precision); params stay float32

  def stage_plan(self) -> tuple[int, ...]:
    """Blocks per stage, from ``depth`` (29 when neither is given) or given directly."""
    return stage_sizes('ResNeXt', self.depth, self.stage_sizes, 3, 2, hint='9n+2, e.g. 29',
                       default_depth=29)

  @nn.compact
  def __call__(self, x, train: bool = False):  # x: [N, H, W, C]
    sk = Skeleton.of(self, train)
    x = sk.stem(x, self.stem_features)  # [N, H, W, 64]

    def block(x, slot):
      width = self.cardinality * self.base_width * 2**slot.stage  # C * d: 512, 1024, 2048 (8x64d)
      body = functools.partial(self.block_cls, slot.features, width, strides=slot.strides,
                               groups=self.cardinality, conv=sk.conv, norm=sk.norm, act=sk.act)
      return sk.act(sk.residual(x, slot, body))

    x = sk.stages(x, self.stage_plan(), self.stage_features, block)  # [N, H/4, W/4, 1024]
    return sk.head(x)


ResNeXt29_8x64d = functools.partial(ResNeXt, depth=29, cardinality=8, base_width=64)
ResNeXt29_16x64d = functools.partial(ResNeXt, depth=29, cardinality=16, base_width=64)
# A ResNeXt-29 small enough for a quick run and for tests (not in the paper): the config's default.
ResNeXt29_2x8d = functools.partial(ResNeXt, depth=29, cardinality=2, base_width=8,
                                   stage_features=(64, 128, 256), stem_features=16)

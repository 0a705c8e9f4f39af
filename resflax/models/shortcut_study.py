"""The shortcut study's net: one small ResNet body, the shortcut across each shape change swappable.

Seed 000 asks "What are the advantages of each method?" (of building a residual shortcut) and
"What is the best practice for reshaping 3D tensors to a standard size?". This net holds everything
but that shortcut fixed, so that a comparison measures the shortcut alone:

  [input avg-pool] -> 3x3 conv 16, stride 2 -> BN -> ReLU          (28x28x1 -> 14x14x16)
  -> block 16 (identity) -> block 32, stride 2 (*) -> block 32 (identity)
  -> block 64, stride 2 (*) -> block 64 (identity) -> head

with ResNet v1 basic bodies (``blocks.ConvNormActConvNorm``, ReLU after the merge, 1512.03385) and
``(*)`` the blocks whose output shape differs from their input's, where the shortcut under study is
(the names of ``resflax.parts``, which builds them):

- ``none``: no shortcut in any block (the plain net, for reference);
- ``identity``: identity shortcuts where the shape is kept, none across the shape changes;
- ``zero_pad``: option A of 1512.03385 sec. 3.3, ``x[::2, ::2]`` + zero channels (no parameters);
- ``projection``: option B, strided 1x1 conv + BN (1512.03385 eq. 2);
- ``avgpool_projection``: ResNet-D (1812.01187 fig. 2c), 2x2 avg-pool + 1x1 conv + BN;
- ``pointwise_dense``: seed 000 method 1, a Dense layer on the channel axis (``Dense(64)(conv1)``)
  after taking every 2nd position: the same function as a strided 1x1 conv with a bias, no BN;
- ``flatten_dense``: seed 000 method 2, Flatten + Dense to the branch's H*W*C, reshaped to its map;
- ``global_pool_dense``: global average pool + Dense to the branch's channels, broadcast over space.

The head is global average pooling + Dense (classification), or Flatten + Dense (``head='flatten'``,
the steering nets: where the road is matters). ``input_pool`` average-pools the input first
(4 for 120x160 camera frames, so that the Flatten + Dense shortcut stays near seed 000's 12.6M
parameters). Blocks are ``block2`` .. ``block6`` (``block1_output``: the stem).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from resflax import blocks, parts
from resflax.models.common import Skeleton

# The study's order (the plain reference first); the names are resflax.parts.SHORTCUTS.
SHORTCUTS = ('none',) + tuple(kind for kind in parts.SHORTCUTS if kind != 'none')


class ShortcutStudyNet(nn.Module):
  """The shortcut study's net (module docstring); ``shortcut`` one of ``SHORTCUTS`` (or a factory).

  Also ``merge`` (``add`` or ``highway``), ``norm`` and ``act`` from ``resflax.parts``.
  """

  shortcut: parts.Part = 'projection'
  merge: parts.Part = 'add'  # 'add' | 'highway'
  norm: parts.Part = 'batch'
  act: parts.Part = 'relu'
  head: str = 'gap'  # 'gap' | 'flatten'
  input_pool: int = 1
  stage_features: tuple[int, ...] = (16, 32, 64)
  num_outputs: int = 10
  axis_name: str | None = None
  dtype: Any = jnp.float32  # computation dtype (bfloat16: mixed precision); params stay float32

  @nn.compact
  def __call__(self, x, train: bool = False):  # x: [N, H, W, C]
    sk = Skeleton.of(self, train)
    if self.input_pool > 1:
      p = (self.input_pool, self.input_pool)
      x = nn.avg_pool(x, p, strides=p)
    x = sk.stem(x, self.stage_features[0], strides=2)

    def block(x, slot):
      body = functools.partial(blocks.ConvNormActConvNorm, slot.features, strides=slot.strides,
                               conv=sk.conv, norm=sk.norm, act=sk.act)
      return sk.act(sk.residual(x, slot, body))

    sizes = [1] + [2] * (len(self.stage_features) - 1)  # strides 1; then 2, 1 in each stage
    x = sk.stages(x, sizes, self.stage_features, block)
    return sk.head(x, pool='mean' if self.head == 'gap' else 'flatten', name='head')

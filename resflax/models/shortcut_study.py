"""The shortcut study's net: one small ResNet body, the shortcut across each shape change swappable.

Seed 000 asks "What are the advantages of each method?" (of building a residual shortcut) and
"What is the best practice for reshaping 3D tensors to a standard size?". This net holds everything
but that shortcut fixed, so that a comparison measures the shortcut alone:

  [input avg-pool] -> 3x3 conv 16, stride 2 -> BN -> ReLU          (28x28x1 -> 14x14x16)
  -> block 16 (identity) -> block 32, stride 2 (*) -> block 32 (identity)
  -> block 64, stride 2 (*) -> block 64 (identity) -> head

with ResNet v1 basic bodies (``blocks.ConvNormActConvNorm``, ReLU after the merge, 1512.03385) and
``(*)`` the blocks whose output shape differs from their input's, where the shortcut under study is:

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

from resflax import blocks

SHORTCUTS = ('none', 'identity', 'zero_pad', 'projection', 'avgpool_projection', 'pointwise_dense',
             'flatten_dense', 'global_pool_dense')


class SubsampledPointwiseDense(nn.Module):
  """``PointwiseDenseShortcut`` on every ``strides``-th position: seed 000 method 1 where the branch
  halves the map."""

  features: int
  strides: int = 1
  dense: blocks.ModuleFactory = nn.Dense

  @nn.compact
  def __call__(self, x):  # [N, H, W, C] -> [N, H/s, W/s, features]
    x = x[:, :: self.strides, :: self.strides, :]
    return blocks.PointwiseDenseShortcut(self.features, dense=self.dense, name='pointwise')(x)


class FlattenDenseToMap(nn.Module):
  """``FlattenDenseShortcut`` to ``prod(shape)`` units, reshaped to the map ``shape`` [H', W', C']."""

  shape: tuple[int, int, int]
  dense: blocks.ModuleFactory = nn.Dense

  @nn.compact
  def __call__(self, x):  # [N, H, W, C] -> [N, *shape]
    y = blocks.FlattenDenseShortcut(self.shape[0] * self.shape[1] * self.shape[2],
                                    dense=self.dense, name='flatten')(x)
    return y.reshape((x.shape[0], *self.shape))


class GlobalPoolDenseToMap(nn.Module):
  """``GlobalPoolDenseShortcut`` to ``shape[-1]`` channels, broadcast over the map ``shape``."""

  shape: tuple[int, int, int]
  dense: blocks.ModuleFactory = nn.Dense

  @nn.compact
  def __call__(self, x):  # [N, H, W, C] -> [N, *shape]
    y = blocks.GlobalPoolDenseShortcut(self.shape[-1], dense=self.dense, name='pool')(x)  # [N, C']
    return jnp.broadcast_to(y[:, None, None, :], (x.shape[0], *self.shape))


def shape_changing_shortcut(kind: str, features: int, out_hw: tuple[int, int], conv, norm,
                            dense=nn.Dense):
  """The factory of the shortcut ``kind`` for a stride-2 block to ``[*out_hw, features]``."""
  out_shape = (*out_hw, features)
  return {
      'zero_pad': functools.partial(blocks.ZeroPadShortcut, features, 2),
      'projection': functools.partial(blocks.ProjectionShortcut, features, 2, conv=conv, norm=norm),
      'avgpool_projection': functools.partial(blocks.AvgPoolProjectionShortcut, features, 2,
                                              conv=conv, norm=norm),
      'pointwise_dense': functools.partial(SubsampledPointwiseDense, features, 2, dense=dense),
      'flatten_dense': functools.partial(FlattenDenseToMap, out_shape, dense=dense),
      'global_pool_dense': functools.partial(GlobalPoolDenseToMap, out_shape, dense=dense),
  }[kind]


class ShortcutStudyNet(nn.Module):
  """The shortcut study's net (module docstring); ``shortcut`` one of ``SHORTCUTS``."""

  shortcut: str = 'projection'
  head: str = 'gap'  # 'gap' | 'flatten'
  input_pool: int = 1
  stage_features: tuple[int, ...] = (16, 32, 64)
  num_outputs: int = 10
  axis_name: str | None = None
  dtype: Any = jnp.float32  # computation dtype (bfloat16: mixed precision); params stay float32

  @nn.compact
  def __call__(self, x, train: bool = False):  # x: [N, H, W, C]
    if self.shortcut not in SHORTCUTS:
      raise ValueError(f'shortcut must be one of {SHORTCUTS}, got {self.shortcut!r}')
    norm = functools.partial(blocks.torch_batch_norm, use_running_average=not train,
                             axis_name=self.axis_name, dtype=self.dtype)
    conv, act = functools.partial(blocks.he_conv, dtype=self.dtype), nn.relu
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    if self.input_pool > 1:
      p = (self.input_pool, self.input_pool)
      x = nn.avg_pool(x, p, strides=p)
    x = conv(self.stage_features[0], (3, 3), strides=(2, 2), padding=1, name='stem_conv')(x)
    x = act(norm(name='stem_norm')(x))
    self.sow('intermediates', 'block1_output', x)
    i = 2
    for stage, features in enumerate(self.stage_features):
      for strides in ((1,) if stage == 0 else (2, 1)):
        body = functools.partial(blocks.ConvNormActConvNorm, features, strides=strides, conv=conv,
                                 norm=norm, act=act)
        name = f'block{i}'
        same_shape = strides == 1 and x.shape[-1] == features
        if self.shortcut == 'none' or (self.shortcut == 'identity' and not same_shape):
          x = act(body(name=name)(x))
        else:
          out_hw = (-(-x.shape[1] // strides), -(-x.shape[2] // strides))
          shortcut = (blocks.IdentityShortcut if same_shape else shape_changing_shortcut(
              self.shortcut, features, out_hw, conv, norm, dense))
          x = act(blocks.ResidualBlock(body, shortcut, name=name)(x))
        self.sow('intermediates', f'{name}_output', x)
        i += 1
    if self.head == 'gap':
      x = jnp.mean(x, axis=(1, 2))
    else:
      x = x.reshape(x.shape[0], -1)
    self.sow('intermediates', 'pre_logits', x)
    x = dense(self.num_outputs, name='head')(x)
    return jnp.asarray(x, jnp.float32)  # the loss is computed in float32

"""Faithful replicas of the seed notebooks' Keras models.

Same layers, widths, kernel sizes, strides, paddings, activations, BatchNorm placement and Keras
defaults (glorot-uniform kernels, zero biases, BN momentum 0.99 / epsilon 1e-3), so the trainable
and non-trainable parameter counts equal the Keras originals (checked in tests/test_keras_parity.py).

The models return logits (or the regression output) in float32; the seeds' final ``softmax`` is
folded into the loss. ``dtype`` is the computation dtype (``jnp.bfloat16`` for mixed precision):
parameters stay float32 and BatchNorm keeps its statistics in float32. Block outputs are sown into
the ``intermediates`` collection as ``block{i}_output``, numbered as in the seed
(``block1_output`` is the stem's output, as the seed's ``block_1_output``).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from resflax import blocks, parts
from resflax.models.common import Skeleton


def _keras_skeleton(model: nn.Module, train: bool, **kwargs) -> Skeleton:
  """The model's skeleton with Keras' layers: glorot-uniform kernels, Keras' BatchNorm."""
  return Skeleton.of(model, train, conv=blocks.keras_conv, dense=blocks.keras_dense,
                     batch=blocks.keras_batch_norm, **kwargs)


class ResidualMLP(nn.Module):
  """Seed 002 In[2] (MNIST) and In[4] (CIFAR-10); with ``dense_additive`` In[7].

  Dense128-relu x2 (stem, ``block_1_output``) -> ``num_blocks`` residual blocks of
  2 x (Dense128 -> BN -> relu -> Dropout .5) -> Dense128-relu -> Dropout .5 -> Dense(num_outputs).
  ``dense_additive=True`` adds every earlier block output back, not only the previous one.
  """

  num_outputs: int = 10
  width: int = 128
  num_blocks: int = 3
  dropout_rate: float = 0.5
  dense_additive: bool = False
  axis_name: str | None = None  # BatchNorm's cross-device axis under pmap
  dtype: Any = jnp.float32  # computation dtype (bfloat16: mixed precision); params stay float32

  @nn.compact
  def __call__(self, x, train: bool = False):  # x: [N, D]
    sk = _keras_skeleton(self, train)
    x = sk.stem(x, layers=(sk.dense(self.width, name='stem0'), nn.relu,
                           sk.dense(self.width, name='stem1'), nn.relu))
    body = functools.partial(blocks.DenseNormActDropout, self.width, depth=2, dense=sk.dense,
                             norm=sk.norm, dropout=functools.partial(sk.dropout, self.dropout_rate))
    stack = blocks.DenseAdditiveStack if self.dense_additive else blocks.ResidualStack
    x = stack([body] * self.num_blocks, name='stack')(x)
    return sk.head(x, pool=None, hidden=(sk.dense(self.width, name='head'), nn.relu),
                   dropout=self.dropout_rate)


class SeedResCNN(nn.Module):
  """Seed 002 In[3] (MNIST, deep), In[5] (CIFAR-10, shallow), In[6] (CIFAR-10, deep).

  Conv32-3-valid-relu -> Conv64-3-valid-relu -> MaxPool3 (``block_1_output``) -> ``num_blocks``
  residual blocks at 64 channels -> Conv64-3-valid-relu -> global average pool -> Dense256-relu ->
  Dropout .5 -> Dense(num_outputs).
  Deep body (In[3]/In[6], 19 blocks: block_2 .. block_20): Conv-relu, BN, Conv-relu, add.
  Shallow body (In[5], 2 blocks): (Conv -> BN -> relu) x 2, add.
  """

  num_blocks: int = 19
  body: str = 'deep'  # 'deep' | 'shallow'
  num_outputs: int = 10
  dropout_rate: float = 0.5
  axis_name: str | None = None
  dtype: Any = jnp.float32  # computation dtype (bfloat16: mixed precision); params stay float32

  @nn.compact
  def __call__(self, x, train: bool = False):  # x: [N, H, W, C]
    sk = _keras_skeleton(self, train)
    x = sk.stem(x, layers=(
        sk.conv(32, (3, 3), padding='VALID', name='stem0'), nn.relu,  # [N, H-2, W-2, 32]
        sk.conv(64, (3, 3), padding='VALID', name='stem1'), nn.relu,  # [N, H-4, W-4, 64]
        lambda x: blocks.window_max_pool(x, 3)))  # MaxPooling2D(3): [N, (H-4)//3, (W-4)//3, 64]
    if self.body == 'deep':
      body = functools.partial(blocks.ConvActNormConvAct, 64, conv=sk.conv, norm=sk.norm)
    elif self.body == 'shallow':
      body = functools.partial(blocks.ConvNormAct, 64, depth=2, conv=sk.conv, norm=sk.norm)
    else:
      raise ValueError(f"SeedResCNN body must be 'deep' or 'shallow', got {self.body!r}")
    x = blocks.ResidualStack([body] * self.num_blocks, name='stack')(x)
    x = nn.relu(sk.conv(64, (3, 3), padding='VALID', name='head_conv')(x))
    return sk.head(x, hidden=(sk.dense(256, name='head_dense'), nn.relu),  # GlobalAveragePooling2D
                   dropout=self.dropout_rate)


class SteeringBranch(nn.Module):
  """The residual branch of seed 000: Conv(3x3, same) -> [norm] -> Dropout .2 -> [Flatten] -> Dense64."""

  conv_features: int
  strides: int
  flatten: bool
  features: int = 64
  dropout: blocks.ModuleFactory = nn.Dropout
  conv: blocks.ModuleFactory = blocks.keras_conv
  dense: blocks.ModuleFactory = blocks.keras_dense
  norm: blocks.ModuleFactory | None = None  # none in seed 000

  @nn.compact
  def __call__(self, x):
    x = self.conv(self.conv_features, (3, 3), strides=(self.strides, self.strides),
                  padding='SAME', name='conv2')(x)
    if self.norm is not None:
      x = self.norm(name='norm2')(x)
    x = self.dropout(0.2)(x)
    if self.flatten:
      x = x.reshape(x.shape[0], -1)
    return self.dense(self.features, name='dense')(x)


# The shortcuts whose output is a vector: with them the branch flattens (seed 000 method 2).
_VECTOR_SHORTCUTS = ('flatten_dense', 'global_pool_dense')


class SteeringNet(nn.Module):
  """Seed 000: a 120x160x3 camera frame -> one steering angle, with a residual shortcut.

  conv1 = Conv64 6x6 stride 3 valid (linear, as in Keras 1) -> Dropout .2 -> residual block
  ``merge(branch(x), shortcut(x))`` (``SteeringBranch``), with ``shortcut`` (``resflax.parts``):
  - ``'pointwise_dense'`` (method 1): ``PointwiseDenseShortcut(64)`` on the 39x52x64 map; the
    branch keeps the shape (Conv64 3x3 stride 1, Dense64 per position); the sum is flattened before
    Dense(1). Every shortcut but the vector ones below takes this branch, applied even though the
    shape is kept (``identity``, ``zero_pad``: the identity; ``projection``: a 1x1 conv; ``none``:
    the branch alone; a factory);
  - ``'flatten_dense'`` (method 2): ``FlattenDenseShortcut(64)``; the branch is Conv128 3x3
    stride 2, Flatten, Dense64; ``'global_pool_dense'`` takes this branch too.
  ``merge``: ``add`` (the seed's), ``concat`` or ``highway``. ``norm``: ``none`` (the seed's), or
  e.g. ``batch`` (Keras' BatchNormalization) after conv1 and the branch's conv.
  """

  shortcut: parts.Part = 'pointwise_dense'
  merge: parts.Part = 'add'  # 'add' | 'concat' | 'highway'
  norm: parts.Part = 'none'
  num_outputs: int = 1
  axis_name: str | None = None  # BatchNorm's cross-device axis (no BatchNorm by default)
  dtype: Any = jnp.float32  # computation dtype (bfloat16: mixed precision); params stay float32

  @nn.compact
  def __call__(self, x, train: bool = False):  # x: [N, 120, 160, 3]
    sk = _keras_skeleton(self, train, optional_norm=True, merges=('add', 'concat', 'highway'))
    conv1 = sk.conv(64, (6, 6), strides=(3, 3), padding='VALID', name='conv1')  # linear
    norm1 = [] if sk.norm is None else [sk.norm(name='norm1')]
    x = sk.stem(x, layers=(conv1, *norm1, sk.dropout(0.2)))  # [N, 39, 52, 64]
    to_vector = self.shortcut in _VECTOR_SHORTCUTS
    # method 2: [N, 39, 52, 64] -> [N, 20, 26, 128] -> [N, 64]; method 1: the same map out.
    branch = functools.partial(SteeringBranch, *((128, 2) if to_vector else (64, 1)),
                               flatten=to_vector, dropout=sk.dropout, conv=sk.conv,
                               dense=sk.dense, norm=sk.norm)

    def block(x, slot):  # the shortcut applied even though the shape is kept (seed 000)
      return sk.residual(x, slot, branch, to_vector=to_vector, always=True)

    x = sk.stages(x, (1,), (64,), block)  # block2
    return sk.head(x, pool='flatten', name='angle_out')

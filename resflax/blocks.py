"""Residual and dense-additive building blocks (pure Flax Linen).

A residual block is ``merge(body(x), shortcut(x))`` (He et al. 2015, arXiv:1512.03385, eq. 1-2).
Each of the three parts is a small module passed in as a factory, so a researcher can swap one
without touching the others::

    block = ResidualBlock(body=partial(ConvActNormConvAct, features=64, norm=norm),
                          shortcut=partial(ProjectionShortcut, features=64, strides=2, norm=norm))

Blocks never see a ``train`` flag: the model binds the train mode into the factories it passes
(``norm=partial(nn.BatchNorm, use_running_average=not train)``), as flax's ImageNet example does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

# A factory that builds a Linen module, e.g. ``nn.Dense`` or ``partial(nn.BatchNorm, momentum=0.9)``.
ModuleFactory = Callable[..., nn.Module]
Activation = Callable[[jax.Array], jax.Array]

# Keras' default initialisers (glorot-uniform kernels, zero biases): the seed replicas use them.
keras_dense = functools.partial(nn.Dense, kernel_init=nn.initializers.glorot_uniform())
keras_conv = functools.partial(nn.Conv, kernel_init=nn.initializers.glorot_uniform())
# Keras BatchNormalization defaults (momentum 0.99, epsilon 1e-3).
keras_batch_norm = functools.partial(nn.BatchNorm, momentum=0.99, epsilon=1e-3)


# ----------------------------------------------------------------------------------------------
# Shortcuts: how x reaches the merge.
# ----------------------------------------------------------------------------------------------
class IdentityShortcut(nn.Module):
  """``x`` unchanged (1512.03385 eq. 1). Needs the body to keep the shape."""

  @nn.compact
  def __call__(self, x):
    return x


class ZeroPadShortcut(nn.Module):
  """ResNet option A (1512.03385 sec. 3.3): subsample by ``strides`` and zero-pad the channels.

  Parameter-free. Extra channels are split evenly before and after the existing ones, as in the
  common CIFAR implementations.
  """

  features: int
  strides: int = 1

  @nn.compact
  def __call__(self, x):  # [N, H, W, C] -> [N, H/s, W/s, features]
    x = x[:, :: self.strides, :: self.strides, :]
    extra = self.features - x.shape[-1]
    if extra < 0:
      raise ValueError(f'ZeroPadShortcut cannot shrink {x.shape[-1]} channels to {self.features}')
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(extra // 2, extra - extra // 2)])


class ProjectionShortcut(nn.Module):
  """ResNet option B (1512.03385 eq. 2): a strided 1x1 convolution, then an optional norm."""

  features: int
  strides: int = 1
  conv: ModuleFactory = nn.Conv
  norm: ModuleFactory | None = None

  @nn.compact
  def __call__(self, x):
    x = self.conv(self.features, (1, 1), strides=(self.strides, self.strides),
                  use_bias=self.norm is None, name='conv')(x)
    return x if self.norm is None else self.norm(name='norm')(x)


class AvgPoolProjectionShortcut(nn.Module):
  """ResNet-D shortcut (He et al. 2018, arXiv:1812.01187 fig. 2c): avg-pool, then 1x1 conv (+norm).

  Unlike the strided 1x1 projection, it looks at every input position instead of 1 in ``strides**2``.
  """

  features: int
  strides: int = 2
  conv: ModuleFactory = nn.Conv
  norm: ModuleFactory | None = None

  @nn.compact
  def __call__(self, x):
    if self.strides > 1:
      s = (self.strides, self.strides)
      x = nn.avg_pool(x, s, strides=s, padding='SAME', count_include_pad=False)
    return ProjectionShortcut(self.features, 1, conv=self.conv, norm=self.norm, name='proj')(x)


class PointwiseDenseShortcut(nn.Module):
  """A Dense layer on the channel axis only (seed 000, method 1: ``aux1 = Dense(64)(conv1)``).

  Keeps the spatial shape: ``[N, H, W, C] -> [N, H, W, features]``; parameters ``C*features + features``.
  """

  features: int
  dense: ModuleFactory = nn.Dense

  @nn.compact
  def __call__(self, x):
    return self.dense(self.features, name='dense')(x)


class FlattenDenseShortcut(nn.Module):
  """Flatten, then Dense to a vector (seed 000, method 2: ``Dense(64)(Flatten()(conv0))``).

  ``[N, H, W, C] -> [N, features]``; parameters ``H*W*C*features + features`` (large).
  """

  features: int
  dense: ModuleFactory = nn.Dense

  @nn.compact
  def __call__(self, x):
    return self.dense(self.features, name='dense')(x.reshape(x.shape[0], -1))


class GlobalPoolDenseShortcut(nn.Module):
  """Global average pool over space, then Dense: ``[N, H, W, C] -> [N, features]``."""

  features: int
  dense: ModuleFactory = nn.Dense

  @nn.compact
  def __call__(self, x):
    return self.dense(self.features, name='dense')(jnp.mean(x, axis=tuple(range(1, x.ndim - 1))))


# ----------------------------------------------------------------------------------------------
# Merges: how the body's output and the shortcut's output combine.
# ----------------------------------------------------------------------------------------------
class AddMerge(nn.Module):
  """``body + shortcut`` (Keras ``add([x, shortcut])``)."""

  @nn.compact
  def __call__(self, body_out, shortcut_out):
    return body_out + shortcut_out


class ConcatMerge(nn.Module):
  """Concatenate on the channel axis (DenseNet, arXiv:1608.06993 eq. 2)."""

  @nn.compact
  def __call__(self, body_out, shortcut_out):
    return jnp.concatenate([shortcut_out, body_out], axis=-1)


# ----------------------------------------------------------------------------------------------
# Bodies: the residual branch F(x).
# ----------------------------------------------------------------------------------------------
class DenseNormActDropout(nn.Module):
  """``depth`` x (Dense -> norm -> act -> dropout): the seed 002 In[2] residual MLP body."""

  features: int
  depth: int = 2
  dense: ModuleFactory = nn.Dense
  norm: ModuleFactory = nn.BatchNorm
  act: Activation = nn.relu
  dropout: ModuleFactory | None = None

  @nn.compact
  def __call__(self, x):
    for i in range(self.depth):
      x = self.dense(self.features, name=f'dense{i}')(x)
      x = self.act(self.norm(name=f'norm{i}')(x))
      if self.dropout is not None:
        x = self.dropout()(x)
    return x


class ConvActNormConvAct(nn.Module):
  """Conv -> act, norm, Conv -> act: the seed 002 In[3]/In[6] deep-CNN body (BN between convs)."""

  features: int
  kernel_size: tuple[int, int] = (3, 3)
  conv: ModuleFactory = nn.Conv
  norm: ModuleFactory = nn.BatchNorm
  act: Activation = nn.relu

  @nn.compact
  def __call__(self, x):
    x = self.act(self.conv(self.features, self.kernel_size, padding='SAME', name='conv0')(x))
    x = self.norm(name='norm0')(x)
    return self.act(self.conv(self.features, self.kernel_size, padding='SAME', name='conv1')(x))


class ConvNormAct(nn.Module):
  """``depth`` x (Conv -> norm -> act): the seed 002 In[5] shallow-CNN body."""

  features: int
  depth: int = 2
  kernel_size: tuple[int, int] = (3, 3)
  strides: int = 1
  conv: ModuleFactory = nn.Conv
  norm: ModuleFactory = nn.BatchNorm
  act: Activation = nn.relu

  @nn.compact
  def __call__(self, x):
    for i in range(self.depth):
      s = self.strides if i == 0 else 1
      x = self.conv(self.features, self.kernel_size, strides=(s, s), padding='SAME',
                    name=f'conv{i}')(x)
      x = self.act(self.norm(name=f'norm{i}')(x))
    return x


# ----------------------------------------------------------------------------------------------
# Blocks and stacks.
# ----------------------------------------------------------------------------------------------
class ResidualBlock(nn.Module):
  """``merge(body(x), shortcut(x))`` (1512.03385 fig. 2), each part a swappable factory."""

  body: ModuleFactory
  shortcut: ModuleFactory = IdentityShortcut
  merge: ModuleFactory = AddMerge

  @nn.compact
  def __call__(self, x):
    return self.merge(name='merge')(self.body(name='body')(x), self.shortcut(name='shortcut')(x))


class ResidualStack(nn.Module):
  """``len(bodies)`` residual blocks in sequence; block outputs are sown as ``block{i}_output``.

  Block numbering starts at ``first_index`` so the names can follow a paper or a seed
  (seed 002 calls the stem output ``block_1_output`` and the residual blocks ``block_2 ..``).
  """

  bodies: Sequence[ModuleFactory]
  shortcut: ModuleFactory = IdentityShortcut
  merge: ModuleFactory = AddMerge
  first_index: int = 2

  @nn.compact
  def __call__(self, x):
    for i, body in enumerate(self.bodies, start=self.first_index):
      x = ResidualBlock(body, self.shortcut, self.merge, name=f'block{i}')(x)
      self.sow('intermediates', f'block{i}_output', x)
    return x


class DenseAdditiveStack(nn.Module):
  """"DenseNet-like" summing stack (seed 002 In[7]).

  With ``o_1 = x`` (the stem output), block ``i`` outputs ``o_i = body_i(o_{i-1}) + sum_{j<i} o_j``:
  every earlier block output is added back, not only the previous one. With a single earlier
  output this is an ordinary residual block. Shapes never change, so every body keeps its width.
  """

  bodies: Sequence[ModuleFactory]
  first_index: int = 2

  @nn.compact
  def __call__(self, x):
    outputs = [x]
    for i, body in enumerate(self.bodies, start=self.first_index):
      y = body(name=f'block{i}')(outputs[-1])
      for earlier in outputs:  # same summation order as Keras add([x, o_1, ..., o_{i-1}])
        y = y + earlier
      self.sow('intermediates', f'block{i}_output', y)
      outputs.append(y)
    return outputs[-1]

"""Residual and dense-additive building blocks (pure Flax Linen).

A residual block is ``merge(body(x), shortcut(x))`` (He et al. 2015, arXiv:1512.03385, eq. 1-2).
Each of the three parts is a small module passed in as a factory, so a researcher can swap one
without touching the others::

    block = ResidualBlock(body=partial(ConvActNormConvAct, features=64, norm=norm),
                          shortcut=partial(ProjectionShortcut, features=64, strides=2, norm=norm))

Blocks never see a ``train`` flag: the model binds the train mode into the factories it passes
(``norm=partial(nn.BatchNorm, use_running_average=not train)``), as flax's ImageNet example does.
Nor a ``dtype``: the model binds its computation dtype the same way
(``conv=partial(nn.Conv, dtype=jnp.bfloat16)``), and the blocks' own arithmetic (sums, zero
padding, gates, masks) keeps the dtype of its inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import functools
import math
from typing import Any

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


class Dropout(nn.Dropout):
  """``nn.Dropout`` whose masks do not depend on how the batch is split over devices.

  Under ``jax.jit`` on a mesh (``axis_name=None``) it is exactly ``nn.Dropout``: with
  ``jax_threefry_partitionable`` the mask of the global batch is the same on 1 or 8 devices. Under
  ``jax.pmap`` (``axis_name='data'``) each device draws the mask of the whole global batch from the
  same key and keeps its own rows, so the pmap path drops the same units as the jit path.
  """

  axis_name: str | None = None

  @nn.compact
  def __call__(self, inputs, deterministic: bool | None = None, rng=None):
    deterministic = nn.merge_param('deterministic', self.deterministic, deterministic)
    if deterministic or self.rate == 0.0:
      return inputs
    if self.rate == 1.0:
      return jnp.zeros_like(inputs)
    keep_prob = 1.0 - self.rate
    rng = self.make_rng(self.rng_collection) if rng is None else rng
    b = inputs.shape[0]
    n = 1 if self.axis_name is None else jax.lax.psum(1, self.axis_name)
    shape = [n * b, *inputs.shape[1:]]
    for dim in self.broadcast_dims:
      shape[dim] = 1
    mask = jax.random.bernoulli(rng, p=keep_prob, shape=shape)  # [global batch, ...]
    if n > 1 and mask.shape[0] > 1:
      mask = jax.lax.dynamic_slice_in_dim(mask, jax.lax.axis_index(self.axis_name) * b, b)
    mask = jnp.broadcast_to(mask, inputs.shape)
    return jax.lax.select(mask, inputs / keep_prob, jnp.zeros_like(inputs))


def window_max_pool(x: jax.Array, window: int) -> jax.Array:
  """``nn.max_pool(x, (w, w), strides=(w, w), padding='VALID')`` as crop + reshape + max.

  The same numbers (windows do not overlap), but its gradient is a plain compare-and-select where
  ``nn.max_pool``'s is a select-and-scatter with index bookkeeping: 11% of the seed deep CNN's
  train step on a 2-core CPU (scripts/conv_bench.py). Exact ties inside a window share the
  gradient instead of giving it to one element (after a ReLU, tied zeros get none either way).
  """
  n, h, w, c = x.shape  # [N, H, W, C] -> [N, H // window, W // window, C]
  ho, wo = h // window, w // window
  x = x[:, :ho * window, :wo * window, :].reshape(n, ho, window, wo, window, c)
  return jnp.max(x, axis=(2, 4))


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


class SubsampledPointwiseDense(nn.Module):
  """``PointwiseDenseShortcut`` on every ``strides``-th position: seed 000 method 1 where the body
  subsamples the map (the same function as a strided 1x1 conv with a bias, no norm)."""

  features: int
  strides: int = 1
  dense: ModuleFactory = nn.Dense

  @nn.compact
  def __call__(self, x):  # [N, H, W, C] -> [N, H/s, W/s, features]
    x = x[:, :: self.strides, :: self.strides, :]
    return PointwiseDenseShortcut(self.features, dense=self.dense, name='pointwise')(x)


def _strided_hw(x, strides: int) -> tuple[int, int]:
  """The map size after a stride-``strides`` conv with 'SAME'-like padding: ``ceil(H / s)``."""
  return -(-x.shape[1] // strides), -(-x.shape[2] // strides)


class FlattenDenseToMap(nn.Module):
  """``FlattenDenseShortcut`` to ``H' * W' * features`` units, reshaped to the body's map
  ``[H', W', features]`` with ``H' = ceil(H / strides)``: seed 000 method 2 on a conv map."""

  features: int
  strides: int = 1
  dense: ModuleFactory = nn.Dense

  @nn.compact
  def __call__(self, x):  # [N, H, W, C] -> [N, H', W', features]
    shape = (*_strided_hw(x, self.strides), self.features)
    y = FlattenDenseShortcut(shape[0] * shape[1] * shape[2], dense=self.dense, name='flatten')(x)
    return y.reshape((x.shape[0], *shape))


class GlobalPoolDenseToMap(nn.Module):
  """``GlobalPoolDenseShortcut`` to ``features`` channels, broadcast over the body's map
  ``[ceil(H / strides), ceil(W / strides)]``."""

  features: int
  strides: int = 1
  dense: ModuleFactory = nn.Dense

  @nn.compact
  def __call__(self, x):  # [N, H, W, C] -> [N, H', W', features]
    y = GlobalPoolDenseShortcut(self.features, dense=self.dense, name='pool')(x)  # [N, features]
    shape = (x.shape[0], *_strided_hw(x, self.strides), self.features)
    return jnp.broadcast_to(y[:, None, None, :], shape)


# ----------------------------------------------------------------------------------------------
# Norms beyond flax's own (``nn.BatchNorm``, ``nn.LayerNorm``).
# ----------------------------------------------------------------------------------------------
class Identity(nn.Module):
  """``x`` unchanged, parameter-free: the ``'none'`` norm of ``resflax.parts`` (no path in the
  parameter tree)."""

  @nn.compact
  def __call__(self, x):
    return x


class GroupNorm(nn.Module):
  """``nn.GroupNorm`` with ``gcd(num_groups, C)`` groups (Wu & He 2018, arXiv:1803.08494; G = 32
  there), so that narrow layers (16 channels, a growth rate of 12) work too.

  Its ``scale`` and ``bias`` sit directly under the module's name, as ``nn.GroupNorm``'s would.
  """

  num_groups: int = 32
  epsilon: float = 1e-5
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    norm = nn.GroupNorm(math.gcd(self.num_groups, x.shape[-1]), epsilon=self.epsilon,
                        dtype=self.dtype)
    nn.share_scope(self, norm)
    return norm(x)


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


# ----------------------------------------------------------------------------------------------
# Parts of the CIFAR paper models (resflax/models: resnet_cifar, preact_resnet, resnext, densenet,
# highway): bodies, the highway merge, stochastic depth, DenseNet layers and transitions.
# ----------------------------------------------------------------------------------------------
# The papers' Torch code (fb.resnet.torch and the code built on it): He-normal kernels with
# std sqrt(2 / (k*k*out_channels)) and no bias (BatchNorm follows), BatchNorm momentum 0.9
# (torch's 0.1) and epsilon 1e-5. 3x3 convs pad 1 on each side, as torch does, so a stride-2 conv
# looks at the same positions (0, 2, 4, ...) as the option-A shortcut ``x[::2, ::2]``.
he_conv = functools.partial(
    nn.Conv, use_bias=False,
    kernel_init=nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'))
torch_batch_norm = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)


class ConvNormActConvNorm(nn.Module):
  """3x3 conv (stride) -> norm -> act -> 3x3 conv -> norm: the ResNet v1 basic body.

  1512.03385 fig. 2 (left) and sec. 4.2. The activation after the addition belongs to the model:
  a v1 block is ``act(body(x) + shortcut(x))``; a plain block (no shortcut) ``act(body(x))``.
  """

  features: int
  strides: int = 1
  conv: ModuleFactory = nn.Conv
  norm: ModuleFactory = nn.BatchNorm
  act: Activation = nn.relu

  @nn.compact
  def __call__(self, x):  # [N, H, W, C] -> [N, H/s, W/s, features]
    s = (self.strides, self.strides)
    x = self.conv(self.features, (3, 3), strides=s, padding=1, name='conv0')(x)
    x = self.act(self.norm(name='norm0')(x))
    x = self.conv(self.features, (3, 3), padding=1, name='conv1')(x)
    return self.norm(name='norm1')(x)


class BottleneckBody(nn.Module):
  """1x1 conv -> norm -> act -> 3x3 conv (stride, groups) -> norm -> act -> 1x1 conv -> norm.

  With ``groups=1`` the ResNet v1 bottleneck (1512.03385 fig. 5 right). With ``groups=C`` and
  ``width=C*d`` the ResNeXt block (1611.05431 fig. 3c): the C paths of width d are one grouped 3x3
  convolution (``feature_group_count=C``), not a loop over groups.
  """

  features: int  # output channels
  width: int  # channels of the 3x3 convolution
  strides: int = 1
  groups: int = 1
  conv: ModuleFactory = nn.Conv
  norm: ModuleFactory = nn.BatchNorm
  act: Activation = nn.relu

  @nn.compact
  def __call__(self, x):  # [N, H, W, C] -> [N, H/s, W/s, features]
    s = (self.strides, self.strides)
    x = self.act(self.norm(name='norm0')(self.conv(self.width, (1, 1), padding=0, name='conv0')(x)))
    x = self.conv(self.width, (3, 3), strides=s, padding=1, feature_group_count=self.groups,
                  name='conv1')(x)
    x = self.act(self.norm(name='norm1')(x))
    x = self.conv(self.features, (1, 1), padding=0, name='conv2')(x)
    return self.norm(name='norm2')(x)


class PreActBasicBody(nn.Module):
  """[norm -> act] -> 3x3 conv (stride) -> norm -> act -> 3x3 conv: full pre-activation.

  1603.05027 fig. 1b / fig. 4e. The block is ``body(x) + shortcut(x)`` with nothing after the
  addition. ``preact=False`` leaves out the leading norm -> act, for a unit whose pre-activation is
  shared with its projection shortcut (``PreActivation``).
  """

  features: int
  strides: int = 1
  preact: bool = True
  conv: ModuleFactory = nn.Conv
  norm: ModuleFactory = nn.BatchNorm
  act: Activation = nn.relu

  @nn.compact
  def __call__(self, x):
    if self.preact:
      x = self.act(self.norm(name='norm0')(x))
    x = self.conv(self.features, (3, 3), strides=(self.strides, self.strides), padding=1,
                  name='conv0')(x)
    x = self.act(self.norm(name='norm1')(x))
    return self.conv(self.features, (3, 3), padding=1, name='conv1')(x)


class PreActBottleneckBody(nn.Module):
  """[norm -> act] -> 1x1 conv (stride) -> norm -> act -> 3x3 conv -> norm -> act -> 1x1 conv.

  The ResNet-164 / ResNet-1001 unit of 1603.05027 (fig. 4e, sec. 4.1): 1x1 to ``features // 4``,
  3x3, 1x1 back to ``features``. The stride sits on the first 1x1, as in the authors' code
  (KaimingHe/resnet-1k-layers, resnet-pre-act.lua). ``preact`` as in ``PreActBasicBody``.
  """

  features: int
  strides: int = 1
  preact: bool = True
  conv: ModuleFactory = nn.Conv
  norm: ModuleFactory = nn.BatchNorm
  act: Activation = nn.relu

  @nn.compact
  def __call__(self, x):
    width = self.features // 4
    if self.preact:
      x = self.act(self.norm(name='norm0')(x))
    x = self.conv(width, (1, 1), strides=(self.strides, self.strides), padding=0, name='conv0')(x)
    x = self.act(self.norm(name='norm1')(x))
    x = self.conv(width, (3, 3), padding=1, name='conv1')(x)
    x = self.act(self.norm(name='norm2')(x))
    return self.conv(self.features, (1, 1), padding=0, name='conv2')(x)


class PreActivation(nn.Module):
  """``inner(act(norm(x)))``: one norm -> act shared by both branches of the unit ``inner``.

  In 1603.05027 (authors' code, resnet-pre-act.lua) a unit that changes the shape applies its
  first BN -> ReLU before it splits, so the 1x1 projection shortcut sees the pre-activated input;
  ``inner`` is then ``ResidualBlock(body(preact=False), ProjectionShortcut)``.
  """

  inner: ModuleFactory
  norm: ModuleFactory = nn.BatchNorm
  act: Activation = nn.relu

  @nn.compact
  def __call__(self, x):
    return self.inner(name='inner')(self.act(self.norm(name='norm')(x)))


class ConvAct(nn.Module):
  """Conv -> [norm] -> act: one plain layer (with a bias when there is no norm).

  The ``H`` of a convolutional highway layer (1507.06228 sec. 4.1) and the plain layers around
  the highway layers.
  """

  features: int
  kernel_size: tuple[int, int] = (3, 3)
  strides: int = 1
  conv: ModuleFactory = nn.Conv
  norm: ModuleFactory | None = None
  act: Activation = nn.relu

  @nn.compact
  def __call__(self, x):
    pad = self.kernel_size[0] // 2
    x = self.conv(self.features, self.kernel_size, strides=(self.strides, self.strides),
                  padding=pad, use_bias=self.norm is None, name='conv')(x)
    return self.act(x if self.norm is None else self.norm(name='norm')(x))


class HighwayMerge(nn.Module):
  """``T(x) * H(x) + (1 - T(x)) * x`` with ``T(x) = sigmoid(gate(x))``: the highway merge.

  1505.00387 eq. 3 / 1507.06228 eq. 3, as a merge for ``ResidualBlock(body=H, merge=...)``: ``x``
  is the shortcut's output (the identity for a highway layer, which keeps the shape), ``H(x)`` the
  body's. ``gate`` is called as ``gate(features, bias_init=...)``: ``nn.Dense`` (the default)
  for MLPs and a pointwise gate on conv maps, ``partial(nn.Conv, kernel_size=(3, 3), padding=1)``
  for the convolutional highway layer (1507.06228 sec. 4.1). The gate bias starts negative
  (1507.06228 sec. 2.2: "e.g. -1, -3"), so a new layer mostly carries ``x`` through. The gate
  values are sown as ``transform_gate``.
  """

  gate: ModuleFactory = nn.Dense
  gate_bias: float = -2.0

  @nn.compact
  def __call__(self, body_out, shortcut_out):
    gate = self.gate(shortcut_out.shape[-1], bias_init=nn.initializers.constant(self.gate_bias),
                     name='gate')
    t = nn.sigmoid(gate(shortcut_out))
    self.sow('intermediates', 'transform_gate', t)
    return t * body_out + (1.0 - t) * shortcut_out


def linear_decay_survival(num_blocks: int, last: float) -> list[float]:
  """``p_l = 1 - l / L * (1 - p_L)`` for blocks ``l = 1 .. L`` (1603.09382 eq. 4); ``p_0 = 1``."""
  return [1.0 - l / num_blocks * (1.0 - last) for l in range(1, num_blocks + 1)]


class StochasticDepth(nn.Module):
  """Wraps a residual branch: drops it at random in training, scales it at eval (1603.09382).

  Use it as the body of any residual block, ``ResidualBlock(body=partial(StochasticDepth, body=f,
  survival_prob=p_l, deterministic=not train))``: in training the block is
  ``shortcut(x) + b * f(x)`` with ``b ~ Bernoulli(p_l)`` (eq. 2), so a dropped block is exactly its
  shortcut (the identity where the shape is kept); at eval it is ``shortcut(x) + p_l * f(x)``
  (eq. 5).

  ``per_example=True`` draws ``b`` per example (as timm's DropPath / torchvision's "row" mode);
  ``False`` draws one ``b`` per mini-batch, as the paper (sec. 3) and its code do. The branch is
  computed either way (a jit-compiled step has fixed shapes), so there is no speed-up, and the
  branch's BatchNorm statistics see the dropped examples too. The keep mask is sown as ``keep``.

  Randomness comes from its own rng collection, ``'stochastic_depth'`` (``rng_collection``):
  ``apply(..., rngs={'dropout': k1, 'stochastic_depth': k2})``. Under ``jax.pmap``
  (``axis_name`` set) every device draws the mask of the whole global batch from the same key and
  keeps its own rows, as ``Dropout`` does, so the drops do not depend on the device count.
  """

  body: ModuleFactory
  survival_prob: float = 1.0
  deterministic: bool | None = None
  per_example: bool = True
  rng_collection: str = 'stochastic_depth'
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, deterministic: bool | None = None):
    deterministic = nn.merge_param('deterministic', self.deterministic, deterministic)
    y = self.body(name='body')(x)
    if self.survival_prob >= 1.0:
      return y
    if deterministic:
      return y * self.survival_prob
    rng = self.make_rng(self.rng_collection)
    if self.per_example:
      b = y.shape[0]
      n = 1 if self.axis_name is None else jax.lax.psum(1, self.axis_name)
      keep = jax.random.bernoulli(rng, self.survival_prob, (n * b,))  # [global batch]
      if n > 1:
        keep = jax.lax.dynamic_slice_in_dim(keep, jax.lax.axis_index(self.axis_name) * b, b)
    else:
      keep = jax.random.bernoulli(rng, self.survival_prob, (1,))
    self.sow('intermediates', 'keep', keep)
    keep = keep.reshape((-1,) + (1,) * (y.ndim - 1))
    return jnp.where(keep, y, jnp.zeros_like(y))


class DenseNetLayerBody(nn.Module):
  """One DenseNet layer: norm -> act -> 3x3 conv (``features`` = the growth rate k).

  1608.06993 sec. 3, "Composite function". With ``bottleneck_features`` (DenseNet-B/BC: 4k) a
  norm -> act -> 1x1 conv to that width comes first ("Bottleneck layers"). ``dropout`` (if given)
  follows each conv (rate 0.2 without data augmentation). A dense layer is
  ``ResidualBlock(body, merge=ConcatMerge)``: its output is ``[x, body(x)]`` on the channels.
  """

  features: int
  bottleneck_features: int | None = None
  conv: ModuleFactory = nn.Conv
  norm: ModuleFactory = nn.BatchNorm
  act: Activation = nn.relu
  dropout: ModuleFactory | None = None

  @nn.compact
  def __call__(self, x):
    if self.bottleneck_features:
      x = self.act(self.norm(name='norm0')(x))
      x = self.conv(self.bottleneck_features, (1, 1), padding=0, name='conv0')(x)
      if self.dropout is not None:
        x = self.dropout()(x)
    x = self.act(self.norm(name='norm1')(x))
    x = self.conv(self.features, (3, 3), padding=1, name='conv1')(x)
    if self.dropout is not None:
      x = self.dropout()(x)
    return x


class DenseNetTransition(nn.Module):
  """norm -> act -> 1x1 conv to ``features`` -> [dropout] -> 2x2 average pool, stride 2.

  1608.06993 sec. 3, "Pooling layers"; DenseNet-C/BC passes ``features = floor(theta * m)``
  ("Compression", theta = 0.5).
  """

  features: int
  conv: ModuleFactory = nn.Conv
  norm: ModuleFactory = nn.BatchNorm
  act: Activation = nn.relu
  dropout: ModuleFactory | None = None

  @nn.compact
  def __call__(self, x):  # [N, H, W, C] -> [N, H/2, W/2, features]
    x = self.act(self.norm(name='norm')(x))
    x = self.conv(self.features, (1, 1), padding=0, name='conv')(x)
    if self.dropout is not None:
      x = self.dropout()(x)
    return nn.avg_pool(x, (2, 2), strides=(2, 2))


# ----------------------------------------------------------------------------------------------
# Normalisation-free residual nets (SkipInit, ReZero, Fixup), and BatchNorm as PyTorch keeps it.
# ----------------------------------------------------------------------------------------------
class SkipInitMerge(nn.Module):
  """``shortcut + alpha * body`` with a learnable scalar ``alpha`` that starts at 0.

  SkipInit (De & Smith 2020, arXiv:2002.10444 sec. 4): at initialisation every residual block is
  its shortcut, so a deep net without normalisation trains; ReZero (Bachlechner et al. 2020,
  arXiv:2003.04887 eq. 4) is the same ``x + alpha F(x)``. The merge ``'skipinit'`` of
  ``resflax.parts``.
  """

  alpha_init: float = 0.0

  @nn.compact
  def __call__(self, body_out, shortcut_out):
    alpha = self.param('alpha', nn.initializers.constant(self.alpha_init), ())
    return shortcut_out + alpha.astype(body_out.dtype) * body_out


class FixupMerge(nn.Module):
  """``shortcut + (scale * body + bias)``: the multiplier (init 1) and the last scalar bias
  (init 0) of a Fixup branch (Zhang et al. 2019, arXiv:1901.09321 sec. 3, "Fixup", rule 3). The
  merge ``'fixup'`` of ``resflax.parts``; the branch itself is ``FixupBasicBody``."""

  @nn.compact
  def __call__(self, body_out, shortcut_out):
    scale = self.param('scale', nn.initializers.ones, ()).astype(body_out.dtype)
    bias = self.param('bias', nn.initializers.zeros, ()).astype(body_out.dtype)
    return shortcut_out + scale * body_out + bias


def fixup_scale(num_branches: int, layers_per_branch: int = 2) -> float:
  """``L^(-1 / (2m - 2))``: Fixup's rescaling of a branch's layers (1901.09321 sec. 3, rule 2)
  for ``L`` residual branches of ``m`` layers each."""
  return float(num_branches) ** (-1.0 / (2 * layers_per_branch - 2))


class FixupBasicBody(nn.Module):
  """The Fixup basic branch without normalisation: ``conv1(x + b1a) -> act(. + b1b) ->
  conv2(. + b2a)`` (1901.09321 sec. 3 and fig. 1; the authors' ``FixupBasicBlock``,
  hongyi-zhang/Fixup ``cifar/models/fixup_resnet_cifar.py``), with scalar biases ``b``.

  Rule 2: ``conv1`` starts He-normal (``conv``'s own init) times ``fixup_scale(num_branches)``;
  ``conv2`` starts at zero, so the block is its shortcut at initialisation. The multiplier and the
  last bias are the block's merge (``FixupMerge``). One difference from the authors' code: the
  shortcut of a block that changes the shape sees ``x``, not ``x + b1a``.
  """

  features: int
  strides: int = 1
  num_branches: int = 1  # L, every residual branch of the net
  conv: ModuleFactory = nn.Conv
  norm: ModuleFactory | None = None  # refused: Fixup has no normalisation
  act: Activation = nn.relu

  @nn.compact
  def __call__(self, x):  # [N, H, W, C] -> [N, H/s, W/s, features]
    bias = lambda name: self.param(name, nn.initializers.zeros, ()).astype(x.dtype)
    scale = fixup_scale(self.num_branches, 2)
    he = nn.initializers.variance_scaling(2.0 * scale**2, 'fan_out', 'normal')
    s = (self.strides, self.strides)
    x = self.conv(self.features, (3, 3), strides=s, padding=1, kernel_init=he,
                  name='conv0')(x + bias('bias0a'))
    x = self.act(x + bias('bias0b'))
    return self.conv(self.features, (3, 3), padding=1, kernel_init=nn.initializers.zeros,
                     name='conv1')(x + bias('bias1a'))


class BatchNormUnbiased(nn.Module):
  """BatchNorm whose running variance tracks the *unbiased* batch variance, as PyTorch's
  ``nn.BatchNorm2d`` and Torch7's ``nn.SpatialBatchNormalization`` (fb.resnet.torch) do:

      running_var <- momentum * running_var + (1 - momentum) * var * n / (n - 1)

  with ``n`` the number of values per channel in the (global) batch; the batch itself is
  normalised with the biased variance, as there. ``nn.BatchNorm`` keeps the biased one. The same
  fields and variables (``scale``, ``bias``; ``batch_stats`` ``mean``, ``var``) as
  ``nn.BatchNorm``, torch's momentum 0.9 and epsilon 1e-5 by default. The norm
  ``'batch_unbiased'`` of ``resflax.parts``.
  """

  use_running_average: bool | None = None
  axis_name: str | None = None
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Any = None

  @nn.compact
  def __call__(self, x, use_running_average: bool | None = None):
    use_running_average = nn.merge_param('use_running_average', self.use_running_average,
                                         use_running_average)
    features = x.shape[-1]
    axes = tuple(range(x.ndim - 1))
    ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros(features, jnp.float32))
    ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones(features, jnp.float32))
    scale = self.param('scale', nn.initializers.ones, (features,))
    bias = self.param('bias', nn.initializers.zeros, (features,))
    if use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      x32 = jnp.asarray(x, jnp.float32)
      mean, mean_sq = jnp.mean(x32, axes), jnp.mean(jnp.square(x32), axes)
      n = math.prod(x.shape[:-1])
      if self.axis_name is not None:
        mean, mean_sq = jax.lax.pmean((mean, mean_sq), self.axis_name)
        n = n * jax.lax.psum(1, self.axis_name)
      var = jnp.maximum(mean_sq - jnp.square(mean), 0.0)
      if not self.is_initializing():
        unbiased = var * (n / max(n - 1, 1)) if isinstance(n, int) else var * n / (n - 1)
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * unbiased
    y = (jnp.asarray(x, jnp.float32) - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
    return y.astype(self.dtype or x.dtype)

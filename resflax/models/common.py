"""The skeleton every model family shares: stem -> stages of blocks -> global pool -> head.

A model binds its parts once, inside its ``@nn.compact`` ``__call__``, with ``Skeleton.of(self,
train)``: the norm, activation, merge and shortcut words of ``resflax.parts`` (read from the
model's own ``norm``, ``act``, ``merge``, ``shortcut`` fields), its ``dtype`` and ``axis_name``,
and its stochastic depth (``survival_prob_last``). The skeleton then builds the layers every
family had written out again::

    @nn.compact
    def __call__(self, x, train: bool = False):
      sk = Skeleton.of(self, train)
      x = sk.stem(x, 16)                                    # 3x3 conv -> norm -> act
      def block(x, slot):                                   # one block of the stage loop
        body = functools.partial(blocks.ConvNormActConvNorm, slot.features, strides=slot.strides,
                                 conv=sk.conv, norm=sk.norm, act=sk.act)
        return sk.act(sk.residual(x, slot, body))           # merge(body(x), shortcut(x))
      x = sk.stages(x, (3, 3, 3), (16, 32, 64), block)
      return sk.head(x)                                     # global pool -> Dense(num_outputs)

Modules are created in the calling model's scope under the names the families always used
(``stem_conv``, ``stem_norm``, ``block{i}``, ``final_norm``, ``logits``), so parameter trees and
checkpoints do not depend on the skeleton. Intermediates: ``block1_output`` (the stem),
``block{i}_output`` per block, ``pre_logits``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from resflax import blocks, parts
from resflax.errors import ConfigError

Layer = Callable[[Any], Any]  # a module or a function of one array


def stages_from_depth(depth: int, layers_per_block: int, extra: int, where: str,
                      num_stages: int = 3) -> tuple[int, ...]:
  """``n`` blocks in each of ``num_stages`` stages for a net of ``depth`` layers, where ``depth =
  num_stages * layers_per_block * n + extra`` (6n+2 for ResNet-CIFAR, 1512.03385 sec. 4.2)."""
  step = num_stages * layers_per_block
  n, rest = divmod(depth - extra, step) if isinstance(depth, int) else (0, 1)
  if rest or n < 1:
    examples = ', '.join(str(step * k + extra) for k in (1, 3, 9))
    raise ConfigError(f'{where} depth {depth!r} is not of the form {step}n+{extra} (n >= 1): use '
                      f'e.g. {examples}')
  return (n,) * num_stages


def stage_sizes(where: str, depth: int | None, given: Sequence[int] | None,
                layers_per_block: int | None, extra: int, *, hint: str,
                default_depth: int | None = None) -> tuple[int, ...]:
  """Blocks per stage: ``given`` (a model's ``stage_sizes``) or ``stages_from_depth(depth, ...)``.

  A model takes exactly one of the two (``default_depth``: neither is fine, that depth is meant).
  ``hint`` says the depths the family takes, e.g. ``'6n+2, e.g. 20'``; ``layers_per_block`` None:
  the depth cannot be turned into stages (the caller has said why)."""
  if depth is not None and given is not None:
    raise ConfigError(f'{where} takes depth ({hint}) or stage_sizes, '
                      + ('not both' if default_depth else 'exactly one of them: got '
                         f'depth={depth!r}, stage_sizes={given!r}'))
  if given is not None:
    return tuple(given)
  if depth is None and default_depth is None:
    raise ConfigError(f'{where} takes depth ({hint}) or stage_sizes, exactly one of them: got '
                      f'depth={depth!r}, stage_sizes={given!r}')
  if layers_per_block is None:
    raise ConfigError(f'{where} cannot derive stage_sizes from depth here: give stage_sizes')
  return stages_from_depth(default_depth if depth is None else depth, layers_per_block, extra,
                           where)


def with_stochastic_depth(body, survival_prob: float, train: bool, axis_name: str | None):
  """``body`` wrapped in ``blocks.StochasticDepth`` when ``survival_prob < 1``, else unchanged."""
  if survival_prob >= 1.0:
    return body
  return functools.partial(blocks.StochasticDepth, body=body, survival_prob=survival_prob,
                           deterministic=not train, axis_name=axis_name)


@dataclasses.dataclass(frozen=True)
class Slot:
  """Where one block of the stage loop sits, and what the loop gives it."""

  stage: int  # from 0
  block: int  # within the stage, from 0
  index: int  # over the whole loop, from 0
  name: str  # its module name, block{index + first_index}
  in_features: int  # channels coming in
  features: int  # the stage's width
  strides: int  # 2 at the start of every stage but the first, else 1
  survival_prob: float  # stochastic depth's p_l (1603.09382 eq. 4); 1.0: always kept
  num_blocks: int  # L, every block of the loop

  @property
  def changes_shape(self) -> bool:
    return self.in_features != self.features or self.strides != 1


@dataclasses.dataclass(frozen=True)
class Skeleton:
  """A model's parts with its train mode bound, and the layers every family shares (module doc).

  Made by ``Skeleton.of`` inside the model's ``@nn.compact`` ``__call__``; every module it
  creates belongs to ``model``.
  """

  model: nn.Module
  train: bool
  where: str  # the model's name in error messages
  conv: blocks.ModuleFactory
  dense: blocks.ModuleFactory
  norm: blocks.ModuleFactory | None
  act: blocks.Activation
  merge: blocks.ModuleFactory
  dropout: blocks.ModuleFactory  # called as dropout(rate)
  shortcut: parts.Part
  survival_prob_last: float
  axis_name: str | None
  dtype: Any

  @classmethod
  def of(cls, model: nn.Module, train: bool, *, conv: blocks.ModuleFactory = blocks.he_conv,
         dense: blocks.ModuleFactory = nn.Dense,
         batch: blocks.ModuleFactory = blocks.torch_batch_norm, optional_norm: bool = False,
         merges: Sequence[str] = ('add', 'highway'), gate: blocks.ModuleFactory | None = None,
         gate_bias: float = -2.0) -> Skeleton:
    """The skeleton of ``model`` in train mode ``train``.

    Reads the model's fields ``norm`` (default ``'batch'``), ``act`` (``'relu'``), ``merge``
    (``'add'``), ``shortcut`` (``'identity'``), ``survival_prob_last`` (1.0), ``axis_name`` and
    ``dtype``. ``conv``, ``dense``: the layer factories, the dtype bound here (He-normal convs
    without bias by default, the CIFAR papers'); ``batch``: what ``norm='batch'`` means;
    ``optional_norm``: ``norm='none'`` gives ``None`` (parts with a bias instead); ``merges``: the
    merge words the model takes; ``gate``, ``gate_bias``: the highway merge's gate (``dense``).
    """
    where = type(model).__name__
    dtype = getattr(model, 'dtype', jnp.float32)
    axis_name = getattr(model, 'axis_name', None)
    conv = functools.partial(conv, dtype=dtype)
    dense = functools.partial(dense, dtype=dtype)
    return cls(
        model=model, train=train, where=where, conv=conv, dense=dense,
        norm=parts.norm(getattr(model, 'norm', 'batch'), train=train, axis_name=axis_name,
                        dtype=dtype, batch=batch, optional=optional_norm, where=where),
        act=parts.activation(getattr(model, 'act', 'relu'), where=where),
        merge=parts.merge(getattr(model, 'merge', 'add'), gate=gate or dense, gate_bias=gate_bias,
                          allowed=merges, where=where),
        dropout=functools.partial(blocks.Dropout, deterministic=not train, axis_name=axis_name),
        shortcut=getattr(model, 'shortcut', 'identity'),
        survival_prob_last=getattr(model, 'survival_prob_last', 1.0), axis_name=axis_name,
        dtype=dtype)

  def scalar(self, name: str):
    """A learnable scalar of the model, starting at 0, in the computation dtype."""
    return self.model.param(name, nn.initializers.zeros, ()).astype(self.dtype)

  def stem(self, x, features: int | None = None, *, strides: int = 1, norm: bool = True,
           bias: bool = False, layers: Sequence[Layer] = ()):
    """The stem, sown as ``block1_output``: a 3x3 conv ``stem_conv`` to ``features`` at
    ``strides`` (+ a scalar ``stem_bias`` with ``bias``, Fixup's), then norm ``stem_norm`` -> act
    unless ``norm=False`` (pre-activation nets); or, for other stems, ``layers`` in order."""
    if features is not None:
      x = self.conv(features, (3, 3), strides=(strides, strides), padding=1, name='stem_conv')(x)
      if bias:
        x = x + self.scalar('stem_bias')
      if norm:
        x = self.act(self.norm(name='stem_norm')(x))
    for layer in layers:
      x = layer(x)
    self.model.sow('intermediates', 'block1_output', x)
    return x

  def stages(self, x, stage_sizes: Sequence[int], widths: Sequence[int],
             block_fn: Callable[[Any, Slot], Any], *, first_index: int = 2):
    """``stage_sizes[s]`` blocks of width ``widths[s]`` per stage: ``x = block_fn(x, slot)``, each
    output sown as ``{slot.name}_output``; blocks are named from ``block{first_index}``."""
    num_blocks = sum(stage_sizes)
    survival = blocks.linear_decay_survival(num_blocks, self.survival_prob_last)
    i = 0
    for stage, (n, features) in enumerate(zip(stage_sizes, widths)):
      for b in range(n):
        slot = Slot(stage=stage, block=b, index=i, name=f'block{i + first_index}',
                    in_features=x.shape[-1], features=features,
                    strides=2 if stage > 0 and b == 0 else 1, survival_prob=survival[i],
                    num_blocks=num_blocks)
        x = block_fn(x, slot)
        self.model.sow('intermediates', f'{slot.name}_output', x)
        i += 1
    return x

  def shortcut_for(self, slot: Slot, *, kind: parts.Part | None = None,
                   norm: blocks.ModuleFactory | None | str = 'model', **kwargs):
    """The factory of the model's shortcut (or ``kind``) for ``slot``'s shape change, None: no
    shortcut (``parts.shortcut``, which takes ``kwargs`` too); ``norm``: the projection's norm
    (the model's by default)."""
    return parts.shortcut(self.shortcut if kind is None else kind, slot.in_features,
                          slot.features, slot.strides, conv=self.conv,
                          norm=self.norm if norm == 'model' else norm, dense=self.dense,
                          where=self.where, **kwargs)

  def with_stochastic_depth(self, body, slot: Slot):
    """``body`` with stochastic depth at ``slot``'s survival probability (unchanged at 1)."""
    return with_stochastic_depth(body, slot.survival_prob, self.train, self.axis_name)

  def residual(self, x, slot: Slot, body: blocks.ModuleFactory, kind: parts.Part | None = None,
               *, norm: blocks.ModuleFactory | None | str = 'model', **kwargs):
    """The block at ``slot``: ``merge(body(x), shortcut(x))`` (``blocks.ResidualBlock``, its body
    under stochastic depth), or ``body(x)`` alone where there is no shortcut (a plain block).
    ``kind``, ``norm``, ``kwargs``: the shortcut, as ``shortcut_for`` (the model's by default)."""
    shortcut = self.shortcut_for(slot, kind=kind, norm=norm, **kwargs)
    if shortcut is None:
      return body(name=slot.name)(x)
    body = self.with_stochastic_depth(body, slot)
    return blocks.ResidualBlock(body, shortcut, self.merge, name=slot.name)(x)

  def head(self, x, *, final_norm: bool = False, pool: str | None = 'mean',
           hidden: Sequence[Layer] = (), dropout: float | None = None, bias: bool = False,
           kernel_init=None, name: str = 'logits'):
    """The classifier, its input sown as ``pre_logits``: [norm ``final_norm`` -> act] -> global
    average pool (``pool='mean'``; ``'flatten'``; None: ``x`` is a vector) -> ``hidden`` layers ->
    [dropout] -> [a scalar ``pre_logits_bias``] -> ``Dense(model.num_outputs)`` named ``name``
    (``kernel_init``: its kernel's init), in float32 (the loss is computed in float32)."""
    if final_norm:
      x = self.act(self.norm(name='final_norm')(x))
    if pool == 'mean':
      x = jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))  # global average pooling: [N, C]
    elif pool == 'flatten':
      x = x.reshape(x.shape[0], -1)
    for layer in hidden:
      x = layer(x)
    self.model.sow('intermediates', 'pre_logits', x)
    if dropout is not None:
      x = self.dropout(dropout)(x)
    if bias:
      x = x + self.scalar('pre_logits_bias')
    dense = self.dense if kernel_init is None else functools.partial(self.dense,
                                                                      kernel_init=kernel_init)
    return jnp.asarray(dense(self.model.num_outputs, name=name)(x), jnp.float32)

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


def with_stochastic_depth(body, survival_prob: float, train: bool, axis_name: str | None):
  """``body`` wrapped in ``blocks.StochasticDepth`` when ``survival_prob < 1``, else unchanged."""
  if survival_prob >= 1.0:
    return body
  return functools.partial(blocks.StochasticDepth, body=body, survival_prob=survival_prob,
                           deterministic=not train, axis_name=axis_name)


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
    if (self.depth is None) == (self.stage_sizes is None):
      raise ConfigError('ResNetCIFAR takes depth (6n+2, e.g. 20) or stage_sizes, exactly one of '
                        f'them: got depth={self.depth!r}, stage_sizes={self.stage_sizes!r}')
    if self.width is not None and self.stage_features is not None:
      raise ConfigError('ResNetCIFAR takes width or stage_features, not both')
    sizes = (tuple(self.stage_sizes) if self.stage_sizes is not None
             else stages_from_depth(self.depth, 2, 2, 'ResNetCIFAR'))
    if self.stage_features is not None:
      return sizes, tuple(self.stage_features)
    width = 16 if self.width is None else self.width
    return sizes, tuple(width * 2**stage for stage in range(len(sizes)))

  @nn.compact
  def __call__(self, x, train: bool = False):  # x: [N, H, W, C]
    where = 'ResNetCIFAR'
    stage_sizes, stage_features = self.stage_plan()
    dense_additive = self.merge == 'dense_additive'
    if self.survival_prob_last < 1.0 and (self.shortcut == 'none' or dense_additive):
      raise ConfigError('stochastic depth needs residual blocks: use survival_prob_last=1 with '
                        f'shortcut={self.shortcut!r}, merge={self.merge!r}')
    norm = parts.norm(self.norm, train=train, axis_name=self.axis_name, dtype=self.dtype,
                      where=where)
    conv = functools.partial(blocks.he_conv, dtype=self.dtype)
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    act = parts.activation(self.act, where=where)
    merge = parts.merge(self.merge, gate=dense, gate_bias=-2.0,
                        allowed=('add', 'highway', 'dense_additive', 'skipinit', 'fixup'),
                        where=where)
    fixup = self.merge == 'fixup'
    if fixup and (self.norm != 'none' or self.block_cls is not blocks.ConvNormActConvNorm):
      raise ConfigError("ResNetCIFAR merge 'fixup' replaces normalisation: use norm='none' and "
                        f'the basic block (got norm={self.norm!r})')
    if fixup and self.shortcut in ('none', 'identity'):
      raise ConfigError(f"ResNetCIFAR merge 'fixup' needs a shortcut in every block (its branches "
                        f'start at zero), not {self.shortcut!r}: use zero_pad or projection')
    scalar = lambda name: self.param(name, nn.initializers.zeros, ()).astype(self.dtype)
    x = conv(stage_features[0], (3, 3), padding=1, name='stem_conv')(x)
    if fixup:
      x = x + scalar('stem_bias')
    x = act(norm(name='stem_norm')(x))  # [N, H, W, 16]
    self.sow('intermediates', 'block1_output', x)
    survival = blocks.linear_decay_survival(sum(stage_sizes), self.survival_prob_last)
    i = 0
    for stage, (n, features) in enumerate(zip(stage_sizes, stage_features)):
      earlier = []  # dense_additive: this stage's earlier outputs o_0, o_1, ...
      for b in range(n):
        strides = 2 if stage > 0 and b == 0 else 1
        body = functools.partial(self.block_cls, features, strides=strides, conv=conv, norm=norm,
                                 act=act)
        if fixup:
          body = functools.partial(blocks.FixupBasicBody, features, strides=strides,
                                   num_branches=sum(stage_sizes), conv=conv, act=act)
        shortcut = parts.shortcut(self.shortcut, x.shape[-1], features, strides, conv=conv,
                                  norm=norm, dense=dense, where=where)
        name = f'block{i + 2}'
        if dense_additive:
          if not earlier:  # o_0: the stage input, reshaped by the shortcut where the stage starts
            if shortcut is None:
              raise ConfigError(f"ResNetCIFAR merge 'dense_additive' needs a shortcut where the "
                                f'shape changes, not {self.shortcut!r}: use zero_pad or projection')
            earlier.append(shortcut(name=f'{name}_in')(x))
          y = body(name=name)(x)  # x = o_{i-1}
          for o in earlier:
            y = y + o
          x = act(y)
          earlier.append(x)
        elif shortcut is None:
          x = act(body(name=name)(x))
        else:
          body = with_stochastic_depth(body, survival[i], train, self.axis_name)
          x = act(blocks.ResidualBlock(body, shortcut, merge, name=name)(x))
        self.sow('intermediates', f'{name}_output', x)
        i += 1
    x = jnp.mean(x, axis=(1, 2))  # global average pooling: [N, 64]
    self.sow('intermediates', 'pre_logits', x)
    if fixup:  # 1901.09321 sec. 3 rule 1: the classifier starts at zero
      x = x + scalar('pre_logits_bias')
      dense = functools.partial(dense, kernel_init=nn.initializers.zeros)
    x = dense(self.num_outputs, name='logits')(x)
    return jnp.asarray(x, jnp.float32)  # the loss is computed in float32


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

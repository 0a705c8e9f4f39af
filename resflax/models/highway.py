"""Convolutional highway networks for CIFAR-10 (Srivastava et al. 2015, arXiv:1505.00387 and
arXiv:1507.06228 sec. 4.1 / table 2).

A highway layer is ``T(x) * H(x) + (1 - T(x)) * x`` with ``H`` a 3x3 conv -> ReLU and
``T = sigmoid(3x3 conv + b_T)``, the gate bias starting negative (b_T = -2 here; 1507.06228 sec. 2.2
suggests "-1, -3 etc."): ``ResidualBlock(body=ConvAct, merge=HighwayMerge)``.

Architecture (an assumption: the papers give depth and parameter counts, the layer list is in
their supplementary material, which we reconstruct): three stages, each a plain 3x3 conv -> ReLU
that sets the width followed by n highway layers of that width, 2x2 max-pooling after stages 1 and
2; then a 1x1 conv (100) -> ReLU, global average pooling and a softmax (Dense) layer. Depth counts
every conv layer (plain or highway) plus the 1x1 and the softmax layer:

- 19 layers (table 2 "Highway B", the Fitnet-B-sized net: 92.46% accuracy, ~2.3M parameters):
  widths 32, 80, 128 (Fitnet 4's), n = 4, 5, 5 -> 2,256,838 parameters;
- 32 layers (table 2 "Highway C": 91.20%, ~1.25M): widths 32, 48, 64, n = 9, 9, 9 -> 1,255,270.

No BatchNorm (the 2015 nets have none), so kernels are He-normal over the fan-in and every conv has
a bias; ``dropout_rate`` adds dropout after each pooling and before the classifier (0 by default;
the papers' rate is not stated in the main text).

Size-agnostic (global average pooling). Intermediates: ``block{i}_output`` per layer (plain and
highway, from 1), each highway layer's ``transform_gate``, ``pre_logits``.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from resflax import blocks, parts
from resflax.models.common import Skeleton


class HighwayCIFAR(nn.Module):
  """Convolutional highway net for CIFAR-10 (1507.06228 sec. 4.1, table 2).

  Parts (``resflax.parts``): ``merge`` ``highway`` (the papers') or ``add`` (the same net with
  residual layers); ``shortcut`` ``identity`` (every shortcut but ``none`` is the identity here: a
  highway layer keeps the shape) or ``none`` (the plain net: each layer is ``H(x)`` alone);
  ``norm`` (``none``, the papers', or e.g. ``batch`` after every conv); ``act``.
  """

  stage_sizes: Sequence[int]  # highway layers per stage
  stage_features: Sequence[int]
  block_cls: blocks.ModuleFactory = blocks.ConvAct  # H
  head_features: int = 100  # the 1x1 conv before pooling
  gate_bias: float = -2.0  # b_T at init
  shortcut: parts.Part = 'identity'
  merge: parts.Part = 'highway'  # 'highway' | 'add'
  norm: parts.Part = 'none'
  act: parts.Part = 'relu'
  dropout_rate: float = 0.0
  num_outputs: int = 10
  axis_name: str | None = None  # BatchNorm's cross-device axis (no BatchNorm by default)
  dtype: Any = jnp.float32  # computation dtype (bfloat16: mixed precision); params stay float32

  @nn.compact
  def __call__(self, x, train: bool = False):  # x: [N, H, W, C]
    # No BatchNorm, so the kernels must keep the forward signal: He-normal over the fan-in
    # (1502.01852), not the fan-out init of the BN nets (10x smaller logits at init here).
    conv = functools.partial(nn.Conv, kernel_init=nn.initializers.he_normal(), dtype=self.dtype)
    gate = functools.partial(conv, kernel_size=(3, 3), padding=1)
    sk = Skeleton.of(self, train, conv=conv, optional_norm=True,  # no norm: convs with a bias
                     merges=('highway', 'add'), gate=gate, gate_bias=self.gate_bias)
    layer = functools.partial(blocks.ConvAct, conv=sk.conv, norm=sk.norm, act=sk.act)

    def block(x, slot):  # each stage: [2x2 max-pool] -> a plain layer -> n highway layers
      if slot.block > 0:
        body = functools.partial(self.block_cls, slot.features, conv=sk.conv, norm=sk.norm,
                                 act=sk.act)
        return sk.residual(x, slot, body)
      if slot.strides > 1:
        s = (slot.strides, slot.strides)
        x = sk.dropout(self.dropout_rate)(nn.max_pool(x, s, strides=s))  # [N, H/2, W/2, C]
      return layer(slot.features, name=slot.name)(x)  # plain: sets the width

    x = sk.stages(x, [n + 1 for n in self.stage_sizes], self.stage_features, block, first_index=1)
    x = layer(self.head_features, (1, 1), name='head')(x)
    return sk.head(x, dropout=self.dropout_rate)


HighwayCIFAR19 = functools.partial(HighwayCIFAR, stage_sizes=(4, 5, 5),
                                   stage_features=(32, 80, 128))
HighwayCIFAR32 = functools.partial(HighwayCIFAR, stage_sizes=(9, 9, 9),
                                   stage_features=(32, 48, 64))

# Used for testing only.
_HighwayCIFAR8 = functools.partial(HighwayCIFAR, stage_sizes=(1, 1, 1), stage_features=(4, 8, 8),
                                   head_features=8)

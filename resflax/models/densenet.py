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

from resflax import blocks


class DenseNet(nn.Module):
  """DenseNet(-BC) for CIFAR (1608.06993 sec. 3, "Implementation Details"; table 2)."""

  stage_sizes: Sequence[int]  # dense layers per block: (L-4)/3, or (L-4)/6 with bottlenecks
  growth_rate: int = 12  # k
  bottleneck: bool = False  # B: a 1x1 conv to 4k before each 3x3
  compression: float = 1.0  # C: theta, a transition keeps floor(theta * m) channels
  stem_features: int | None = None  # None: 16, or 2k with bottleneck and compression (BC)
  block_cls: blocks.ModuleFactory = blocks.DenseNetLayerBody
  dropout_rate: float = 0.0
  num_outputs: int = 10
  axis_name: str | None = None
  dtype: Any = jnp.float32  # computation dtype (bfloat16: mixed precision); params stay float32

  @nn.compact
  def __call__(self, x, train: bool = False):  # x: [N, H, W, C]
    norm = functools.partial(blocks.torch_batch_norm, use_running_average=not train,
                             axis_name=self.axis_name, dtype=self.dtype)
    dropout = (functools.partial(blocks.Dropout, self.dropout_rate, deterministic=not train,
                                 axis_name=self.axis_name) if self.dropout_rate else None)
    conv = functools.partial(blocks.he_conv, dtype=self.dtype)
    act, k = nn.relu, self.growth_rate
    stem = self.stem_features or (2 * k if self.bottleneck and self.compression < 1 else 16)
    x = conv(stem, (3, 3), padding=1, name='stem_conv')(x)  # [N, H, W, stem]
    self.sow('intermediates', 'block1_output', x)
    body = functools.partial(self.block_cls, k,
                             bottleneck_features=4 * k if self.bottleneck else None,
                             conv=conv, norm=norm, act=act, dropout=dropout)
    first = 2
    for stage, n in enumerate(self.stage_sizes):
      x = blocks.ResidualStack([body] * n, merge=blocks.ConcatMerge, first_index=first,
                               name=f'dense{stage + 1}')(x)  # [N, H, W, m + n k]
      first += n
      if stage < len(self.stage_sizes) - 1:
        features = math.floor(self.compression * x.shape[-1])
        x = blocks.DenseNetTransition(features, conv=conv, norm=norm, act=act, dropout=dropout,
                                      name=f'transition{stage + 1}')(x)  # [N, H/2, W/2, features]
        self.sow('intermediates', f'transition{stage + 1}_output', x)
    x = act(norm(name='final_norm')(x))
    x = jnp.mean(x, axis=(1, 2))  # global average pooling
    self.sow('intermediates', 'pre_logits', x)
    x = nn.Dense(self.num_outputs, dtype=self.dtype, name='logits')(x)
    return jnp.asarray(x, jnp.float32)  # the loss is computed in float32


DenseNet40_k12 = functools.partial(DenseNet, stage_sizes=(12, 12, 12), growth_rate=12)
_bc = dict(bottleneck=True, compression=0.5)
DenseNetBC100_k12 = functools.partial(DenseNet, stage_sizes=(16,) * 3, growth_rate=12, **_bc)
DenseNetBC250_k24 = functools.partial(DenseNet, stage_sizes=(41,) * 3, growth_rate=24, **_bc)
DenseNetBC190_k40 = functools.partial(DenseNet, stage_sizes=(31,) * 3, growth_rate=40, **_bc)
# Not in the paper: a DenseNet-BC small enough for a quick run (the config's default).
DenseNetBC22_k12 = functools.partial(DenseNet, stage_sizes=(3,) * 3, growth_rate=12, **_bc)

# Used for testing only (the BC path is compiled by the config smoke test on DenseNetBC22_k12).
_DenseNet7_k4 = functools.partial(DenseNet, stage_sizes=(1, 1, 1), growth_rate=4)

"""A researcher's own block, in their own file: resflax is not edited.

The block is a pre-norm gated residual feed-forward block: ``x + W_o (gelu(W_g n(x)) * W_v n(x))``
with ``n`` a LayerNorm, the GEGLU feed-forward layer of Shazeer 2020 (arXiv:2002.05202, eq. 5-6),
after the gated linear units of Dauphin et al. 2017 (arXiv:1612.08083), in the pre-activation
arrangement of He et al. 2016 (arXiv:1603.05027). It is built as resflax builds its blocks, as the
body of ``resflax.blocks.ResidualBlock`` (identity shortcut, add merge), and the file registers a
preset for the net, so a config may name the model either way:

- by import path: ``config.model = 'my_block:GatedMLP'`` (this folder on ``PYTHONPATH``);
- by name: ``config.imports = ('my_block',)`` and ``config.model = 'gated_mlp'``.

The contract resflax asks of a model: a ``num_outputs`` field and ``__call__(x, *, train)``.

  PYTHONPATH=examples/my_block resflax train --config examples/my_block/config.py \\
      --workdir runs/my_block
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

from resflax import blocks
from resflax import models


class GEGLUBody(nn.Module):
  """``W_o (gelu(W_g n(x)) * W_v n(x))``, ``n`` a LayerNorm (2002.05202 eq. 6, pre-norm)."""

  features: int
  hidden: int
  dropout: blocks.ModuleFactory = nn.Dropout

  @nn.compact
  def __call__(self, x):  # [N, features] -> [N, features]
    h = nn.LayerNorm(name='norm')(x)
    gate = nn.gelu(nn.Dense(self.hidden, name='gate')(h))  # [N, hidden]
    value = nn.Dense(self.hidden, name='value')(h)  # [N, hidden]
    return nn.Dense(self.features, name='out')(self.dropout()(gate * value))


class GatedMLP(nn.Module):
  """Flatten, Dense to ``width``, ``depth`` blocks ``x + GEGLUBody(x)``, LayerNorm, Dense out."""

  num_outputs: int = 10
  depth: int = 3
  width: int = 128
  hidden: int = 256
  dropout_rate: float = 0.1

  @nn.compact
  def __call__(self, x, *, train: bool):  # x: [N, ...] (images are flattened)
    x = nn.Dense(self.width, name='embed')(x.reshape(x.shape[0], -1))  # [N, width]
    # The train mode is bound once, into the factory the blocks get (they never see `train`).
    dropout = functools.partial(blocks.Dropout, self.dropout_rate, deterministic=not train)
    body = functools.partial(GEGLUBody, self.width, self.hidden, dropout=dropout)
    x = blocks.ResidualStack([body] * self.depth, name='blocks')(x)  # merge(body(x), x), sown
    return nn.Dense(self.num_outputs, name='logits')(nn.LayerNorm(name='final_norm')(x))


# A preset: `--config.model=gated_mlp` once `config.imports` names this module; its keyword
# arguments are defaults that --config.model_kwargs.* override (e.g. depth=6).
models.register('gated_mlp', GatedMLP, source='2002.05202 GEGLU residual MLP (example)',
                input_shape=(28, 28, 1), task='classification', depth=3, width=128)

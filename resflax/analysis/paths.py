"""Residual networks as ensembles of paths: the gradient by path length (Veit et al. 2016,
"Residual networks behave like ensembles of relatively shallow networks", arXiv:1605.06431 sec. 4,
fig. 6).

A net of ``n`` residual blocks ``merge(body(x), x)`` unrolls into ``2^n`` paths; ``C(n, k)`` of
them go through ``k`` residual branches. For each length ``k`` we sample paths: the forward pass is
the whole net's, and in the backward pass each of the ``k`` sampled blocks passes the gradient only
through its branch (``body``), the other ``n - k`` only through their skip (``shortcut``). The
gradient magnitude at the input (the per-example L2 norm of ``d loss / d image``) is averaged over
the sampled paths and the examples (``gradient_by_length``); times the number of paths it gives
the total gradient each length contributes (``total_gradient_by_length``, fig. 6c), and the
narrowest range of lengths holding ``mass`` of it is the net's effective range (Veit: 5-17 blocks
of ResNet-110's 54).

The model stays pure: a Linen method interceptor rewrites the outputs of each block's ``body`` and
``shortcut`` as ``m * y + (1 - m) * stop_gradient(y)`` with a 0/1 mask argument (the same value
forward, the gradient through one side only), so one compiled function serves every path. Blocks
whose shortcut is not the identity (where the shape changes) pass the gradient through both sides
and are listed in ``skipped``.
"""

from __future__ import annotations

import math
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from resflax import report
from resflax.analysis import common


def path_gradient_fn(subject: common.Subject, names: list[str]):
  """``f(variables, mask, x, y, w) -> sum_i w_i ||d loss_i / d x_i||``: the gradient of each
  example's loss at its input along the paths ``mask`` selects (``mask[k] = 1``: block
  ``names[k]``'s branch, 0: its skip)."""
  index = {name: k for k, name in enumerate(names)}

  def forward(variables, mask, x):
    def intercept(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      path = context.module.path
      if context.method_name != '__call__' or len(path) < 2:
        return out
      k = index.get('/'.join(path[:-1]))
      if k is None or path[-1] not in ('body', 'shortcut'):
        return out
      m = mask[k] if path[-1] == 'body' else 1.0 - mask[k]
      return m * out + (1.0 - m) * jax.lax.stop_gradient(out)

    with nn.intercept_methods(intercept):
      return subject.apply(variables, x)

  def f(variables, mask, x, y, w):
    loss = lambda x: jnp.sum(subject.per_example_loss(forward(variables, mask, x), y))
    g = jax.grad(loss)(x).reshape(x.shape[0], -1)  # each row: its own example's gradient
    return jnp.sum(jnp.linalg.norm(g, axis=-1) * w)

  return jax.jit(f)


def effective_range(total: np.ndarray, mass: float) -> tuple[int, int]:
  """The narrowest ``[lo, hi]`` of path lengths whose ``total`` sums to at least ``mass`` of all
  (the largest sum among equally narrow ones)."""
  total = np.asarray(total, np.float64)
  whole = total.sum()
  best = (0, len(total) - 1)
  for width in range(1, len(total) + 1):
    sums = [total[lo:lo + width].sum() for lo in range(len(total) - width + 1)]
    lo = int(np.argmax(sums))
    if sums[lo] >= mass * whole:
      return lo, lo + width - 1
  return best


def analyze(subject: common.Subject, *, seed: int = 0, batch_size: int = 100,
            repeats: int = 1, mass: float = 0.9) -> dict:
  """The gradient by path length. For each length ``k`` every chunk of ``batch_size`` examples
  gets its own sampled path (``repeats`` times), so each length sees every example ``repeats``
  times and ``ceil(N / batch_size) * repeats`` paths."""
  found = common.residual_blocks(subject)
  names = [b['name'] for b in found if b['identity_shortcut']]
  skipped = [{'name': b['name'], 'reason': 'no identity shortcut' if b['body'] else
              'not merge(body(x), shortcut(x))'} for b in found if not b['identity_shortcut']]
  n = len(names)
  fn = path_gradient_fn(subject, names)
  rng = np.random.default_rng(seed)
  num = subject.images.shape[0]
  gradient, sampled = [], []
  for k in range(n + 1):
    total, count = 0.0, 0
    for _ in range(repeats):
      for x, y, w in common.chunks(subject, batch_size):
        mask = np.zeros(n, np.float32)
        mask[rng.choice(n, k, replace=False)] = 1.0
        total += float(fn(subject.variables, jnp.asarray(mask), x, y, w))
        count += 1
    gradient.append(total / (num * repeats))
    sampled.append(count)
  counts = [math.comb(n, k) for k in range(n + 1)]
  totals = [g * c for g, c in zip(gradient, counts)]
  lo, hi = effective_range(np.asarray(totals), mass)
  return {
      'num_blocks': n, 'blocks': names, 'skipped': skipped,
      'path_counts': counts, 'gradient_by_length': gradient,
      'total_gradient_by_length': totals, 'effective_range': [lo, hi], 'effective_mass': mass,
      'paths_sampled_per_length': sampled, 'seed': seed, 'batch_size': batch_size,
      'gradient': 'mean over sampled paths and examples of the L2 norm of d loss / d input',
  }


def plot(result: dict, out) -> list[str]:
  """``paths.png``: Veit et al. fig. 6 (a) paths by length, (b) gradient magnitude by length,
  (c) total gradient by length."""
  plt = common.pyplot()
  k = np.arange(result['num_blocks'] + 1)
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
  counts = np.asarray(result['path_counts'], np.float64)
  axes[0].bar(k, counts / counts.sum())
  axes[0].set(title='(a) paths by length', xlabel='path length', ylabel='fraction of paths')
  axes[1].semilogy(k, np.maximum(result['gradient_by_length'], 1e-30), 'o-')
  axes[1].set(title='(b) gradient magnitude per path', xlabel='path length',
              ylabel='mean |d loss / d input|')
  axes[2].bar(k, result['total_gradient_by_length'])
  lo, hi = result['effective_range']
  axes[2].axvspan(lo - 0.5, hi + 0.5, alpha=0.15, color='tab:orange',
                  label=f"{result['effective_mass']:.0%} of the gradient")
  axes[2].set(title='(c) total gradient by length', xlabel='path length',
              ylabel='total gradient magnitude')
  axes[2].legend()
  path = str(report.save_figure(fig, pathlib.Path(f'{out}/paths.png')))
  return [path]

"""Signal propagation plots (Brock, De & Smith 2021, "Characterizing signal propagation to close
the performance gap in unnormalized ResNets", arXiv:2101.08692 sec. 3, fig. 1), plus the gradient
and the Jacobian of each block.

For each block (the modules named ``block<i>``; their outputs are the residual stream), over the
examples in train mode by default, as Brock et al. draw their plots (BatchNorm normalises each
chunk of ``batch_size`` examples with its own statistics, as in a training step; dropout draws
from ``seed``); ``train=False``: in eval mode (BatchNorm's running statistics):

- ``mean_squared``: the mean of ``x^2`` over examples, positions and channels;
- ``channel_squared_mean``: the average over channels of the squared channel mean (Brock et al.'s
  "average channel squared mean", which grows when the stream drifts away from zero);
- ``channel_variance``: the average over channels of the channel variance (over examples and
  positions; Brock et al.'s "average channel variance");
- ``gradient_norm``: the L2 norm of ``d mean loss / d block output``;
- ``jacobian_singular_values``: the ``top_k`` largest singular values of the block's input-output
  Jacobian on the first ``jacobian_examples`` examples (subspace iteration on ``jax.jvp`` /
  ``jax.vjp``, ``iterations`` rounds, then Rayleigh-Ritz).

``network_jacobian_singular_values``: all singular values of the whole net's Jacobian (outputs in
the inputs) of each of those examples, one at a time in eval mode (``jax.jacrev``).
"""

from __future__ import annotations

import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from resflax import report
from resflax.analysis import common


def _instrumented(subject: common.Subject, names: list[str], train: bool, rng: jax.Array):
  """``f(variables, x, in_deltas, out_deltas) -> (outputs, block outputs)``: each block's input
  plus ``in_deltas[k]`` and its output plus ``out_deltas[k]`` (None: nothing added)."""
  index = {name: k for k, name in enumerate(names)}

  def forward(variables, x, in_deltas, out_deltas):
    outs = [None] * len(names)

    def intercept(next_fun, args, kwargs, context):
      k = index.get('/'.join(context.module.path)) if context.method_name == '__call__' else None
      if k is None:
        return next_fun(*args, **kwargs)
      if in_deltas is not None:
        args = (args[0] + in_deltas[k], *args[1:])
      out = next_fun(*args, **kwargs)
      if out_deltas is not None:
        out = out + out_deltas[k]
      outs[k] = out
      return out

    with nn.intercept_methods(intercept):
      outputs = subject.apply(variables, x, train=train, rng=rng)
    return outputs, outs

  return forward


def _orthonormal(v: jax.Array) -> jax.Array:
  """The rows of ``v`` ``[r, ...]`` orthonormalised (QR)."""
  flat = v.reshape(v.shape[0], -1)
  q, _ = jnp.linalg.qr(flat.T)
  return q.T.reshape(v.shape)


def analyze(subject: common.Subject, *, seed: int = 0, batch_size: int = 250,
            jacobian_examples: int = 4, top_k: int = 4, iterations: int = 8,
            train: bool = True) -> dict:
  found = common.residual_blocks(subject)
  names = [b['name'] for b in found]
  n_total = subject.images.shape[0]
  rng = jax.random.key(seed)
  forward = _instrumented(subject, names, train, rng)
  variables = subject.variables

  @jax.jit
  def stats(x, y, w):
    b = x.shape[0]
    zeros = [jnp.zeros((b, *blk['out_shape'][1:]), jnp.float32) for blk in found]

    def loss(out_deltas):
      outputs, outs = forward(variables, x, None, out_deltas)
      return jnp.sum(subject.per_example_loss(outputs, y) * w) / n_total, outs

    grads, outs = jax.grad(loss, has_aux=True)(zeros)
    result = []
    for out, g in zip(outs, grads):
      weights = w.reshape((b,) + (1,) * (out.ndim - 1))
      axes = tuple(range(out.ndim - 1))
      per_example = np.prod(out.shape[1:-1]) if out.ndim > 2 else 1
      result.append({'sum': jnp.sum(out * weights, axis=axes),
                     'sum_sq': jnp.sum(out * out * weights, axis=axes),
                     'count': jnp.sum(w) * per_example,
                     'grad_sq': jnp.sum(g * g)})
    return result

  totals = common.chunked_sum(stats, subject, batch_size, pad=not train)
  per_block = []
  for blk, t in zip(found, totals):
    mean = np.asarray(t['sum'], np.float64) / float(t['count'])
    mean_sq = np.asarray(t['sum_sq'], np.float64) / float(t['count'])
    per_block.append({'name': blk['name'], 'shape': blk['out_shape'][1:],
                      'mean_squared': float(mean_sq.mean()),
                      'channel_squared_mean': float(np.mean(mean ** 2)),
                      'channel_variance': float(np.mean(mean_sq - mean ** 2)),
                      'gradient_norm': float(np.sqrt(float(t['grad_sq'])))})

  # Jacobians on a few examples.
  m = min(jacobian_examples, n_total)
  x = jnp.asarray(subject.images[:m])
  in_zeros = [jnp.zeros((m, *blk['in_shape'][1:]), jnp.float32) for blk in found]

  def outs_of(in_deltas):
    return forward(variables, x, in_deltas, None)[1]

  @jax.jit
  def jvp(tangents):  # tangents: per block [r, m, ...] -> every block output's [r, m, ...]
    return jax.vmap(lambda t: jax.jvp(outs_of, (in_zeros,), (t,))[1])(tangents)

  @jax.jit
  def vjp(cotangents):
    _, pullback = jax.vjp(outs_of, in_zeros)
    return jax.vmap(lambda c: pullback(c)[0])(cotangents)

  rng = np.random.default_rng(seed)
  for k, blk in enumerate(found):
    in_shape = (m, *blk['in_shape'][1:])
    r = min(top_k, int(np.prod(in_shape)))
    v = _orthonormal(jnp.asarray(rng.standard_normal((r, *in_shape)), jnp.float32))
    place = lambda arr, shapes, k=k, r=r: [
        arr if j == k else jnp.zeros((r, *s), jnp.float32) for j, s in enumerate(shapes)]
    in_shapes = [(m, *b['in_shape'][1:]) for b in found]
    out_shapes = [(m, *b['out_shape'][1:]) for b in found]
    for _ in range(iterations):
      u = jvp(place(v, in_shapes))[k]
      v = _orthonormal(vjp(place(u, out_shapes))[k])
    u = jvp(place(v, in_shapes))[k]
    sv = np.linalg.svd(np.asarray(u, np.float64).reshape(r, -1), compute_uv=False)
    per_block[k]['jacobian_singular_values'] = sorted(sv.tolist(), reverse=True)

  def net(xi):  # one example -> its outputs
    return subject.apply(variables, xi[None], train=False)[0]

  jac = jax.jit(jax.vmap(jax.jacrev(net)))(x)  # [m, outputs, *input]
  net_sv = [np.linalg.svd(np.asarray(j, np.float64).reshape(j.shape[0], -1),
                          compute_uv=False).tolist() for j in jac]
  return {'blocks': per_block, 'network_jacobian_singular_values': net_sv,
          'jacobian_examples': m, 'seed': seed, 'iterations': iterations,
          'mode': 'train' if train else 'eval', 'batch_size': batch_size}


def plot(result: dict, out) -> list[str]:
  """``signal.png``: the signal propagation plot (2101.08692 fig. 1) and the gradient norms."""
  plt = common.pyplot()
  blocks = result['blocks']
  depth = np.arange(1, len(blocks) + 1)
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
  axes[0].semilogy(depth, [b['channel_squared_mean'] for b in blocks], 'o-')
  axes[0].set(title='average channel squared mean', xlabel='block')
  axes[1].semilogy(depth, [b['channel_variance'] for b in blocks], 'o-')
  axes[1].set(title='average channel variance', xlabel='block')
  axes[2].semilogy(depth, [max(b['gradient_norm'], 1e-30) for b in blocks], 'o-', label='gradient')
  axes[2].semilogy(depth, [b['jacobian_singular_values'][0] for b in blocks], 's-',
                   label='Jacobian top singular value')
  axes[2].set(title='gradient norm, Jacobian', xlabel='block')
  axes[2].legend()
  path = str(report.save_figure(fig, pathlib.Path(f'{out}/signal.png')))
  return [path]

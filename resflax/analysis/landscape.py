"""The loss landscape around the weights (Li et al. 2018, "Visualizing the loss landscape of neural
nets", arXiv:1712.09913 sec. 4-5).

Random Gaussian directions ``d``, filter-normalised (sec. 4, eq. 1): each filter of ``d`` (a slice
along a kernel's output axis, the last one of flax's conv ``[h, w, in, out]`` and Dense
``[in, out]`` kernels) is rescaled to the norm of the same filter of the weights,
``d_ij <- d_ij / ||d_ij|| * ||theta_ij||``. As in the paper's BatchNorm recipe, the directions are
zero on the vector parameters (biases, BatchNorm scales and offsets) and BatchNorm's running
statistics are kept as trained. The loss is the mean over the examples in eval mode at
``theta + alpha d1`` (the 1-D profile) and ``theta + alpha d1 + beta d2`` (the 2-D grid).
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from resflax import report
from resflax.analysis import common


def filter_normalized_direction(rng: jax.Array, params) -> dict:
  """A Gaussian direction shaped as ``params``, filter-normalised; zero on 0-D / 1-D leaves."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(rng, len(leaves))
  out = []
  for key, p in zip(keys, leaves):
    p = jnp.asarray(p, jnp.float32)
    if p.ndim <= 1:
      out.append(jnp.zeros_like(p))
      continue
    d = jax.random.normal(key, p.shape, jnp.float32)
    axes = tuple(range(p.ndim - 1))  # one filter per output unit (the last axis)
    d_norm = jnp.sqrt(jnp.sum(d * d, axis=axes, keepdims=True))
    p_norm = jnp.sqrt(jnp.sum(p * p, axis=axes, keepdims=True))
    out.append(d / (d_norm + 1e-10) * p_norm)
  return jax.tree.unflatten(treedef, out)


def analyze(subject: common.Subject, *, seed: int = 0, span: float = 1.0, profile_points: int = 17,
            grid_points: int = 9, batch_size: int = 250) -> dict:
  """The 1-D profile on ``profile_points`` alphas and the 2-D grid on ``grid_points`` x
  ``grid_points`` (alpha, beta), both over ``[-span, span]``; a point the two share (the profile
  is the grid's ``beta = 0`` line, refined) is evaluated once."""
  params = subject.variables['params']
  k1, k2 = jax.random.split(jax.random.key(seed))
  d1 = filter_normalized_direction(k1, params)
  d2 = filter_normalized_direction(k2, params)
  loss = common.mean_loss_fn(subject)

  @jax.jit
  def loss_at(a, b, x, y, w):
    moved = jax.tree.map(lambda p, u, v: p + a * u + b * v, params, d1, d2)
    return loss(moved, x, y, w)

  cache = {}

  def total(a, b):
    key = (round(float(a), 9), round(float(b), 9))
    if key not in cache:
      cache[key] = float(common.chunked_sum(loss_at, subject, batch_size, jnp.float32(a),
                                            jnp.float32(b)))
    return cache[key]

  profile_alphas = np.linspace(-span, span, profile_points)
  alphas = np.linspace(-span, span, grid_points)
  betas = np.linspace(-span, span, grid_points)
  profile = [total(a, 0.0) for a in profile_alphas]
  grid = [[total(a, b) for b in betas] for a in alphas]
  return {
      **nonconvexity(alphas, betas, np.asarray(grid, np.float64)),
      'alphas': alphas.tolist(), 'betas': betas.tolist(),
      'loss': [common.finite(row) for row in grid],  # loss[i][j] at (alphas[i], betas[j])
      'profile_alphas': profile_alphas.tolist(), 'profile_loss': common.finite(profile),
      'loss_at_weights': total(0.0, 0.0), 'seed': seed, 'evaluations': len(cache),
      'directions': 'filter-normalised Gaussian, zero on biases and norm parameters (1712.09913)',
  }


def nonconvexity(alphas: np.ndarray, betas: np.ndarray, loss: np.ndarray) -> dict:
  """How far the surface is from convex, in the plane of the two directions (1712.09913 sec. 6,
  fig. 7 maps |lambda_min / lambda_max| of the Hessian; here of the 2x2 Hessian of the plotted
  surface, by central differences at each interior grid point). ``nonconvexity``: the mean over
  those points of ``max(0, -lambda_min) / |lambda_max|`` (0 for a convex surface);
  ``nonconvex_fraction``: the fraction of points with a negative eigenvalue. ``loss``:
  ``[len(alphas), len(betas)]``; non-finite points are left out."""
  ha, hb = float(alphas[1] - alphas[0]), float(betas[1] - betas[0])
  ratios = []
  for i in range(1, loss.shape[0] - 1):
    for j in range(1, loss.shape[1] - 1):
      patch = loss[i - 1:i + 2, j - 1:j + 2]
      if not np.all(np.isfinite(patch)):
        continue
      faa = (patch[2, 1] - 2 * patch[1, 1] + patch[0, 1]) / ha**2
      fbb = (patch[1, 2] - 2 * patch[1, 1] + patch[1, 0]) / hb**2
      fab = (patch[2, 2] - patch[2, 0] - patch[0, 2] + patch[0, 0]) / (4 * ha * hb)
      lo, hi = np.linalg.eigvalsh(np.array([[faa, fab], [fab, fbb]]))
      top = max(abs(lo), abs(hi))
      ratios.append(max(0.0, -lo) / top if top > 0 else 0.0)
  if not ratios:
    return {'nonconvexity': None, 'nonconvex_fraction': None}
  return {'nonconvexity': float(np.mean(ratios)),
          'nonconvex_fraction': float(np.mean(np.asarray(ratios) > 0))}


def plot(result: dict, out) -> list[str]:
  """``landscape_1d.png`` (the profile) and ``landscape_2d.png`` (contours, as 1712.09913 fig. 5)."""
  plt = common.pyplot()
  fig, ax = plt.subplots(figsize=(5, 3.6))
  profile = np.asarray([np.nan if v is None else v for v in result['profile_loss']])
  ax.plot(result['profile_alphas'], profile, 'o-')
  ax.set(xlabel='alpha', ylabel='loss', title='loss along a filter-normalised direction')
  one = str(report.save_figure(fig, pathlib.Path(f'{out}/landscape_1d.png')))
  grid = np.asarray([[np.nan if v is None else v for v in row] for row in result['loss']])
  fig, ax = plt.subplots(figsize=(5, 4.4))
  b, a = np.meshgrid(result['betas'], result['alphas'])
  finite = grid[np.isfinite(grid)]
  levels = np.linspace(finite.min(), finite.max(), 20) if finite.size and np.ptp(finite) > 0 else 20
  contour = ax.contour(a, b, grid, levels=levels)
  ax.clabel(contour, fontsize=6)
  ax.plot([0], [0], 'k+')
  ax.set(xlabel='alpha', ylabel='beta', title='loss contours')
  two = str(report.save_figure(fig, pathlib.Path(f'{out}/landscape_2d.png')))
  return [one, two]

"""The Hessian of the loss in the weights, from Hessian-vector products (as PyHessian, Yao et al.
2020, arXiv:1912.07145 sec. 3).

``H v`` is forward-over-reverse, ``jax.jvp`` of ``jax.grad`` of the mean loss over the examples
(eval mode: BatchNorm's running statistics fixed), summed over chunks of examples; the Hessian
itself is never formed. From it:

- ``density``: stochastic Lanczos quadrature (sec. 3.3, alg. 3; Ghorbani et al. 2019): ``runs``
  Lanczos runs of ``steps`` steps (full reorthogonalisation) from Rademacher vectors; each gives the
  Ritz values ``theta_j`` (the eigenvalues of its tridiagonal ``T``) with weights ``tau_j`` (the
  squared first components of ``T``'s eigenvectors); the density is their average, broadened by a
  Gaussian of variance ``sigma^2`` (PyHessian: ``1e-5 * max(1, lambda_max - lambda_min)``);
- ``top_eigenvalues``: the ``top_k`` largest Ritz values of the first Lanczos run (Lanczos finds
  the extreme eigenvalues first; with ``steps`` >= the number of weights they are exact);
- ``trace``: Hutchinson's estimator (sec. 3.2, alg. 2), ``mean_i v_i^T H v_i`` over
  ``trace_samples`` Rademacher vectors ``v_i``, with its standard error.
"""

from __future__ import annotations

import pathlib

from jax.flatten_util import ravel_pytree
import jax
import jax.numpy as jnp
import numpy as np

from resflax import report
from resflax.analysis import common
from resflax.errors import NonFiniteLossError


def hvp_fn(subject: common.Subject, batch_size: int = 250):
  """``hvp(v) -> H v`` on flat float64 numpy vectors over all of ``params``, and their size."""
  params = subject.variables['params']
  flat, unravel = ravel_pytree(params)
  loss = common.mean_loss_fn(subject)

  @jax.jit
  def chunk(v, x, y, w):
    grad = lambda p: jax.grad(loss)(p, x, y, w)
    return ravel_pytree(jax.jvp(grad, (params,), (unravel(v),))[1])[0]

  def hvp(v: np.ndarray) -> np.ndarray:
    v = jnp.asarray(v, flat.dtype)
    return np.asarray(common.chunked_sum(chunk, subject, batch_size, v), np.float64)

  return hvp, int(flat.size)


def lanczos(matvec, v0: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
  """``(alphas, betas)`` of the Lanczos tridiagonal of ``matvec`` from ``v0`` (full
  reorthogonalisation); fewer than ``steps`` if an invariant subspace is found first."""
  steps = min(steps, v0.size)
  v = v0 / np.linalg.norm(v0)
  basis, alphas, betas = [v], [], []
  for j in range(steps):
    w = matvec(v)
    if not np.all(np.isfinite(w)):
      raise NonFiniteLossError(
          f'hessian: a Hessian-vector product is not finite (Lanczos step {j + 1}): the loss or '
          'its curvature overflows at these weights (a diverged or exploding net); check the '
          "run's loss, or analyse an earlier checkpoint or fewer examples (--num_examples)")
    if j:
      w = w - betas[-1] * basis[-2]
    alpha = float(w @ v)
    alphas.append(alpha)
    w = w - alpha * v
    for u in basis:  # twice is enough (Giraud et al.): keeps the Ritz values from repeating
      w = w - (w @ u) * u
    for u in basis:
      w = w - (w @ u) * u
    beta = float(np.linalg.norm(w))
    if j == steps - 1 or beta < 1e-8 * max(1.0, abs(alpha)):
      break
    betas.append(beta)
    v = w / beta
    basis.append(v)
  return np.asarray(alphas), np.asarray(betas)


def ritz(alphas: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Ritz values (ascending) and their quadrature weights ``tau_j``."""
  t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
  values, vectors = np.linalg.eigh(t)
  return values, vectors[0] ** 2


def density(nodes: list[np.ndarray], weights: list[np.ndarray], points: int = 400,
            sigma_squared: float | None = None) -> dict:
  """The SLQ spectral density on a grid: the average over runs of ``sum_j tau_j N(x; theta_j,
  sigma^2)``."""
  lo = min(float(n.min()) for n in nodes)
  hi = max(float(n.max()) for n in nodes)
  if sigma_squared is None:
    sigma_squared = 1e-5 * max(1.0, hi - lo)
  margin = 0.01 * max(hi - lo, 1e-6) + 3 * np.sqrt(sigma_squared)
  grid = np.linspace(lo - margin, hi + margin, points)
  values = np.zeros(points)
  for theta, tau in zip(nodes, weights):
    gauss = np.exp(-(grid[:, None] - theta[None]) ** 2 / (2 * sigma_squared))
    values += gauss @ tau / np.sqrt(2 * np.pi * sigma_squared)
  values /= len(nodes)
  return {'grid': grid.tolist(), 'density': values.tolist(), 'sigma_squared': sigma_squared,
          'nodes': [n.tolist() for n in nodes], 'weights': [w.tolist() for w in weights]}


def analyze(subject: common.Subject, *, seed: int = 0, top_k: int = 5, steps: int = 16,
            runs: int = 1, trace_samples: int = 8, batch_size: int = 250) -> dict:
  """``runs * steps + trace_samples`` Hessian-vector products over all the examples (24 by
  default: about 3 forward-backward passes each)."""
  hvp, size = hvp_fn(subject, batch_size)
  rng = np.random.default_rng(seed)
  rademacher = lambda: rng.choice([-1.0, 1.0], size)
  nodes, weights = [], []
  for _ in range(runs):
    theta, tau = ritz(*lanczos(hvp, rademacher(), steps))
    nodes.append(theta)
    weights.append(tau)
  samples = [float(v @ hvp(v)) for v in (rademacher() for _ in range(trace_samples))]
  top = sorted(nodes[0].tolist(), reverse=True)[:top_k]
  return {
      'top_eigenvalues': top, 'trace': float(np.mean(samples)),
      'trace_stderr': float(np.std(samples, ddof=1) / np.sqrt(len(samples)))
                      if len(samples) > 1 else None,
      'density': density(nodes, weights), 'num_params': size, 'seed': seed,
      'lanczos_steps': steps, 'slq_runs': runs, 'trace_samples': trace_samples,
      'hessian_vector_products': sum(len(n) for n in nodes) + trace_samples,
  }


def plot(result: dict, out) -> list[str]:
  """``hessian_density.png``: the SLQ density (log scale, as 1912.07145 fig. 5)."""
  plt = common.pyplot()
  d = result['density']
  fig, ax = plt.subplots(figsize=(5.5, 3.6))
  ax.semilogy(d['grid'], np.maximum(d['density'], 1e-12))
  for value in result['top_eigenvalues']:
    ax.axvline(value, color='tab:red', lw=0.6, alpha=0.6)
  ax.set(xlabel='eigenvalue', ylabel='density',
         title=f"Hessian spectrum (trace {result['trace']:.3g})")
  path = str(report.save_figure(fig, pathlib.Path(f'{out}/hessian_density.png')))
  return [path]

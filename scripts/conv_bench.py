"""Where the seed deep CNN's CPU train step spends its time, and whether other conv formulations help.

Usage (about 4 minutes on a 2-core EPYC; the table is printed as it goes)::

    python scripts/conv_bench.py [--reps 5] [--step-reps 3] [--no-step] [--extras]

Part 1 times each 3x3 convolution shape of ``cifar10_rescnn_deep`` at batch 256 (stem0, stem1, the
38 residual-body convs, head) in four directions -- forward, input gradient (dx), kernel gradient
(dW), and forward+both gradients ("all") -- for ``lax.conv_general_dilated`` (what ``nn.Conv``
runs) and for alternative formulations, each jitted, timed round-robin in this one process (the
machine is shared: compare ratios, not absolute ms), median of ``--reps``:

  xla         lax.conv_general_dilated NHWC/HWIO (= nn.Conv)
  xla_nchw    the same conv with NCHW/OIHW operands (layout change; operands pre-transposed)
  im2col      patches (pad + 9 strided slices + concatenate) @ kernel, autodiff through it
  shift9      sum over the 9 taps of shifted-slice @ kernel[i, j]
  rowcol      concatenate the 3 kw taps only, then 3 matmuls over kh shifts
  lax_patch   lax.conv_general_dilated_patches + einsum
  xla+mmdW    resflax.ops.conv2d(kernel_grad='matmul'): XLA forward and dx, dW = patches^T @ g

Part 2 times the full ``cifar10_rescnn_deep`` train step (Adam/AMSGrad, batch 256, as
benchmarks/workers.py builds it) with a copy of ``SeedResCNN`` whose conv factory and max-pool
can be swapped: stock ``nn.Conv`` with ``nn.max_pool`` (the model before this study);
``MatmulConv`` (kernel_grad='auto': matmul dW for the two stem convs only); and the 3x3/3 max-pool
as a reshape + max (``blocks.window_max_pool``, exact for non-overlapping windows, same gradient
except between exactly tied positive maxima), which ``SeedResCNN`` now uses.

``--extras`` re-runs the stock step in child processes with GLIBC_TUNABLES=glibc.malloc.hugetlb=1
(transparent huge pages for XLA's buffers: fewer page faults), with
XLA_FLAGS=--xla_cpu_multi_thread_eigen=false, and at batch 128 / 512.
"""

from __future__ import annotations

import argparse
import functools
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
from jax import lax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from resflax import blocks  # noqa: E402
from resflax import costs  # noqa: E402
from resflax.ops import conv as conv_ops  # noqa: E402

DN = ('NHWC', 'HWIO', 'NHWC')
BATCH = 256
# (name, input shape, out features, padding, how many in the model)
SHAPES = [
    ('stem0', (BATCH, 32, 32, 3), 32, 'VALID', 1),
    ('stem1', (BATCH, 30, 30, 32), 64, 'VALID', 1),
    ('block', (BATCH, 9, 9, 64), 64, 'SAME', 38),
    ('head', (BATCH, 9, 9, 64), 64, 'VALID', 1),
]


def _pads(x_shape, pad):
  return conv_ops.explicit_padding(pad, x_shape[1:3], (3, 3), (1, 1))


# ---- formulations: f(x, w, pad) -> y (NHWC, HWIO, stride 1) ------------------------------------
def f_xla(x, w, pad):
  return lax.conv_general_dilated(x, w, (1, 1), pad, dimension_numbers=DN)


def f_im2col(x, w, pad):
  return conv2d_mm(x, w, pad)


def conv2d_mm(x, w, pad):
  kh, kw, ci, co = w.shape
  p = conv_ops.patches(x, (kh, kw), (1, 1), _pads(x.shape, pad))
  return jnp.dot(p, w.reshape(kh * kw * ci, co))


def f_shift9(x, w, pad):
  kh, kw, _, _ = w.shape
  (pt, pb), (pl, pr) = _pads(x.shape, pad)
  x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  out = None
  for i in range(kh):
    for j in range(kw):
      t = jnp.einsum('nhwc,cd->nhwd', x[:, i:i + ho, j:j + wo, :], w[i, j])
      out = t if out is None else out + t
  return out


def f_rowcol(x, w, pad):
  kh, kw, ci, co = w.shape
  (pt, pb), (pl, pr) = _pads(x.shape, pad)
  x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  p = jnp.concatenate([x[:, :, j:j + wo, :] for j in range(kw)], axis=-1)
  out = None
  for i in range(kh):
    t = jnp.einsum('nhwc,cd->nhwd', p[:, i:i + ho], w[i].reshape(kw * ci, co))
    out = t if out is None else out + t
  return out


def f_lax_patch(x, w, pad):
  kh, kw, ci, co = w.shape
  p = lax.conv_general_dilated_patches(x, (kh, kw), (1, 1), pad, dimension_numbers=DN)
  return jnp.einsum('nhwk,kd->nhwd', p, jnp.transpose(w, (2, 0, 1, 3)).reshape(ci * kh * kw, co))


def f_xla_mmdw(x, w, pad):
  return conv_ops.conv2d(x, w, 1, pad, kernel_grad='matmul')


FORMULATIONS = {
    'xla': f_xla, 'xla_nchw': None, 'im2col': f_im2col, 'shift9': f_shift9, 'rowcol': f_rowcol,
    'lax_patch': f_lax_patch, 'xla+mmdW': f_xla_mmdw,
}


def _directions(f, pad):
  """jitted (fwd, dx, dW, all) of ``f``; each takes (x, w, g)."""
  fwd = jax.jit(lambda x, w, g: f(x, w, pad))
  dx = jax.jit(lambda x, w, g: jax.vjp(lambda x_: f(x_, w, pad), x)[1](g)[0])
  dw = jax.jit(lambda x, w, g: jax.vjp(lambda w_: f(x, w_, pad), w)[1](g)[0])

  def both(x, w, g):
    y, vjp = jax.vjp(lambda x_, w_: f(x_, w_, pad), x, w)
    return y, vjp(g)
  return fwd, dx, dw, jax.jit(both)


def _nchw_directions(pad):
  dn = ('NCHW', 'OIHW', 'NCHW')
  f = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), pad, dimension_numbers=dn)  # noqa: E731
  fwd = jax.jit(lambda x, w, g: f(x, w))
  dx = jax.jit(lambda x, w, g: jax.vjp(lambda x_: f(x_, w), x)[1](g)[0])
  dw = jax.jit(lambda x, w, g: jax.vjp(lambda w_: f(x, w_), w)[1](g)[0])

  def both(x, w, g):
    y, vjp = jax.vjp(f, x, w)
    return y, vjp(g)
  return fwd, dx, dw, jax.jit(both)


def round_robin(fns: dict, reps: int) -> dict:
  """{key: median ms}; ``fns`` maps key -> (fn, args); one call each per round, after a warm-up."""
  for fn, args in fns.values():
    jax.block_until_ready(fn(*args))
  times = {k: [] for k in fns}
  for _ in range(reps):
    for k, (fn, args) in fns.items():
      t = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[k].append(time.perf_counter() - t)
  return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def conv_table(reps: int, skip_slow: bool = True) -> dict:
  print('\n== Part 1: one conv, batch 256, ms (median of %d, round-robin); ratio = xla / this '
        '(>1: faster than nn.Conv)' % reps)
  print(f"{'shape':6s} {'formulation':10s} {'fwd':>8s} {'dx':>8s} {'dW':>8s} {'all':>8s}  "
        f"{'r_fwd':>5s} {'r_dx':>5s} {'r_dW':>5s} {'r_all':>5s}  max rel err")
  summary = {}
  for name, xs, co, pad, count in SHAPES:
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(k1, xs, jnp.float32)
    w = jax.random.normal(k2, (3, 3, xs[-1], co), jnp.float32) * (2.0 / (9 * xs[-1])) ** 0.5
    y_ref = f_xla(x, w, pad)
    g = jax.random.normal(k3, y_ref.shape, jnp.float32)
    ref_all = _directions(f_xla, pad)[3](x, w, g)
    fns, errs = {}, {}
    for fname, f in FORMULATIONS.items():
      if skip_slow and fname == 'lax_patch' and name == 'stem1':
        continue  # ~3 s per call: 5-10x slower than xla on every other shape
      if fname == 'xla_nchw':
        xn, gn = jnp.transpose(x, (0, 3, 1, 2)), jnp.transpose(g, (0, 3, 1, 2))
        wn = jnp.transpose(w, (3, 2, 0, 1))
        dirs, args = _nchw_directions(pad), (xn, wn, gn)
        y, (dx, dw) = dirs[3](*args)
        out = (jnp.transpose(y, (0, 2, 3, 1)), (jnp.transpose(dx, (0, 2, 3, 1)),
                                                jnp.transpose(dw, (2, 3, 1, 0))))
      else:
        dirs, args = _directions(f, pad), (x, w, g)
        out = dirs[3](*args)
      errs[fname] = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
                        for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref_all)))
      for d, fn in zip(('fwd', 'dx', 'dW', 'all'), dirs):
        fns[(fname, d)] = (fn, args)
    ms = round_robin(fns, reps)
    for fname in errs:
      row = [ms[(fname, d)] for d in ('fwd', 'dx', 'dW', 'all')]
      base = [ms[('xla', d)] for d in ('fwd', 'dx', 'dW', 'all')]
      ratios = ' '.join(f'{b / r:5.2f}' for b, r in zip(base, row))
      print(f"{name:6s} {fname:10s} " + ' '.join(f'{v:8.1f}' for v in row) +
            f'  {ratios}  {errs[fname]:.1e}', flush=True)
      summary[(name, fname)] = row
    print(f'{"":6s} (x{count} in the model; fwd GFLOP/conv '
          f'{2 * y_ref.size * 9 * xs[-1] / 1e9:.2f})', flush=True)
  return summary


# ---- Part 2: the full train step -------------------------------------------------------------
class BenchSeedResCNN(nn.Module):
  """resflax.models.seed.SeedResCNN (deep body) with the conv factory and max-pool as fields."""

  num_blocks: int = 19
  num_outputs: int = 10
  dropout_rate: float = 0.5
  axis_name: str | None = None
  conv: blocks.ModuleFactory = blocks.keras_conv
  reshape_pool: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = functools.partial(blocks.keras_batch_norm, use_running_average=not train,
                             axis_name=self.axis_name)
    dropout = functools.partial(blocks.Dropout, deterministic=not train, axis_name=self.axis_name)
    conv = self.conv
    x = nn.relu(conv(32, (3, 3), padding='VALID', name='stem0')(x))
    x = nn.relu(conv(64, (3, 3), padding='VALID', name='stem1')(x))
    if self.reshape_pool:
      x = blocks.window_max_pool(x, 3)
    else:
      x = nn.max_pool(x, (3, 3), strides=(3, 3), padding='VALID')
    body = functools.partial(blocks.ConvActNormConvAct, 64, conv=conv, norm=norm)
    x = blocks.ResidualStack([body] * self.num_blocks, name='stack')(x)
    x = nn.relu(conv(64, (3, 3), padding='VALID', name='head_conv')(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.relu(blocks.keras_dense(256, name='head_dense')(x))
    x = dropout(self.dropout_rate)(x)
    return blocks.keras_dense(self.num_outputs, name='logits')(x)


matmul_conv = functools.partial(conv_ops.MatmulConv, kernel_init=nn.initializers.glorot_uniform())

STEP_VARIANTS = {
    'nn.Conv + nn.max_pool (before)': dict(),
    'MatmulConv(auto)': dict(conv=matmul_conv),
    'reshape max-pool (seed.py now)': dict(reshape_pool=True),
    'MatmulConv+reshape pool': dict(conv=matmul_conv, reshape_pool=True),
}


def build_step(batch_size: int, **model_kw):
  from benchmarks import specs, workers  # pylint: disable=g-import-not-at-top
  from resflax.train import state as state_lib, steps  # pylint: disable=g-import-not-at-top
  name = 'cifar10_rescnn_deep'
  config = specs.bench_config(name)
  model = BenchSeedResCNN(num_outputs=10, **model_kw)
  tx = state_lib.make_optimizer(config, steps_per_epoch=1000)
  state = jax.jit(functools.partial(state_lib.create_state, model, tx, (32, 32, 3)))(
      jax.random.key(0))
  images, labels = workers.random_batch(name, batch_size)
  batch = jax.device_put({'image': images, 'label': labels})
  rng = jax.random.key(1)
  fn = jax.jit(functools.partial(steps.train_step, loss=config.loss))  # no donation: re-run state0
  compiled = fn.lower(state, batch, rng).compile()
  return compiled, (state, batch, rng)


def step_table(reps: int, batch_size: int = BATCH, variants=None) -> dict:
  variants = variants or STEP_VARIANTS
  print(f'\n== Part 2: full cifar10_rescnn_deep train step, batch {batch_size}, ms (median of '
        f'{reps}, round-robin); ratio = stock / this')
  fns, outs = {}, {}
  for k, kw in variants.items():
    compiled, args = build_step(batch_size, **kw)
    fns[k] = (compiled, args)
    outs[k] = compiled(*args)
  ref = outs[next(iter(variants))]
  for k in variants:  # same params and data: same loss and updated params
    d = max(float(jnp.max(jnp.abs(a - b))) for a, b in
            zip(jax.tree.leaves(outs[k][0].params), jax.tree.leaves(ref[0].params)))
    print(f'  {k:24s} loss {float(outs[k][1]["loss"]):.6f}  max |params - stock params| after '
          f'1 step {d:.1e}')
  ms = round_robin(fns, reps)
  base = ms[next(iter(variants))]
  for k, v in ms.items():
    print(f'  {k:24s} {v:8.0f} ms/step  ratio {base / v:5.2f}  '
          f'({v / batch_size:.2f} ms/example)', flush=True)
  return ms


def _child(env_extra: dict, args: list[str]) -> None:
  env = {**os.environ, **env_extra}
  subprocess.run([sys.executable, __file__, '--child-step', *args], env=env, check=False)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--reps', type=int, default=5)
  parser.add_argument('--step-reps', type=int, default=3)
  parser.add_argument('--no-step', action='store_true')
  parser.add_argument('--no-convs', action='store_true')
  parser.add_argument('--extras', action='store_true')
  parser.add_argument('--child-step', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--batch', type=int, default=BATCH, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child_step:
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ms = step_table(args.step_reps, args.batch, {'stock nn.Conv': {}})
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
    print(f"  [child GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r} "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}] minor page faults, whole child: "
          f'{faults}; ms/step {ms["stock nn.Conv"]:.0f}')
    return
  print(f'CPU: {costs.cpu_name()} x {os.cpu_count()} | jax {jax.__version__} | '
        f'load avg {os.getloadavg()[0]:.2f} | XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}')
  t0 = time.perf_counter()
  if not args.no_convs:
    conv_table(args.reps)
  if not args.no_step:
    step_table(args.step_reps)
  if args.extras:
    print('\n== Extras: stock step in child processes (compare with a plain child run)')
    _child({}, ['--step-reps', str(args.step_reps)])
    _child({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'}, ['--step-reps', str(args.step_reps)])
    _child({'XLA_FLAGS': '--xla_cpu_multi_thread_eigen=false'},
           ['--step-reps', str(args.step_reps)])
    for b in (128, 512):
      _child({}, ['--step-reps', str(args.step_reps), '--batch', str(b)])
  print(f'\nload avg at end {os.getloadavg()[0]:.2f}; total {time.perf_counter() - t0:.0f} s')


if __name__ == '__main__':
  main()

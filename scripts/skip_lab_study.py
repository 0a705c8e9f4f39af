"""The skip-connection lab: residual nets with and without normalisation, through the instruments.

  python scripts/skip_lab_study.py --quick     # a few minutes: ResNet-8 at width 4, a few steps
  python scripts/skip_lab_study.py             # ResNet-20, 5 epochs of mnist_5k each (hours here)

Nets (CIFAR ResNet v1 on mnist_5k, ``experiments/configs/degradation_mnist5k.py``, same depth):
``resnet`` (BatchNorm, option A), ``plain`` (BatchNorm, no shortcuts), ``skipinit`` (no norm,
``x + alpha F(x)``, alpha = 0 at init; 2002.10444), ``fixup`` (no norm, 1901.09321) and
``batch_unbiased`` (BatchNorm with PyTorch's running variance). Each is trained, then analysed with
``resflax analyze`` (``resflax.analysis``): the signal propagation at initialisation and after
training (2101.08692), the gradient by path length (1605.06431), the Hessian's top eigenvalues and
trace (1912.07145) and the loss landscape (1712.09913). The report: ``OUT/README.md`` (one table),
``OUT/results.json``, and each net's figures in ``OUT/<net>/``.

Runs live in ``--root`` and resume; a net whose loss turns non-finite is reported as diverged.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from resflax import analysis, cli, report, sweep  # pylint: disable=g-import-not-at-top
from resflax.errors import ResflaxError  # pylint: disable=g-import-not-at-top

CONFIG = 'experiments/configs/degradation_mnist5k.py'
NETS = {  # name: model_kwargs on top of resnet<depth>
    'resnet': {},
    'plain': {'shortcut': 'none'},
    'skipinit': {'norm': 'none', 'merge': 'skipinit'},
    'fixup': {'norm': 'none', 'merge': 'fixup'},
    'batch_unbiased': {'norm': 'batch_unbiased'},
}
# Sizes of the analyses: the defaults of resflax analyze, and small ones for --quick.
FULL = {'num_examples': 1000, 'options': {}}
QUICK = {'num_examples': 64, 'options': {
    'paths': {'batch_size': 32}, 'landscape': {'profile_points': 5, 'grid_points': 3},
    'hessian': {'steps': 6, 'runs': 1, 'trace_samples': 3, 'top_k': 3},
    'signal': {'jacobian_examples': 2, 'iterations': 3}}}


def runs(root: str, quick: bool, data_dir: str | None) -> list[sweep.Run]:
  size = [('model', 'resnet8'), ('model_kwargs.width', '4'), ('num_train_steps', '8')] if quick \
      else [('model', 'resnet20')]
  extra = [('progress', 'none'), *size] + ([('data_dir', data_dir)] if data_dir else [])
  return [sweep.Run(CONFIG, f'{root}/{name}', (*extra, *((f'model_kwargs.{k}', v)
                                                         for k, v in kwargs.items())))
          for name, kwargs in NETS.items()]


def analyse(workdir: str, out: str, sizes: dict, seed: int) -> dict:
  """Every analysis of the trained net, and the signal at initialisation."""
  subject = analysis.load_subject(workdir, num_examples=sizes['num_examples'])
  init = analysis.load_subject(workdir, num_examples=sizes['num_examples'], init=True)
  result = {}
  for kind in analysis.KINDS:
    result[kind] = analysis.run(kind, subject, out, seed=seed, **sizes['options'].get(kind, {}))
  result['signal_init'] = analysis.run('signal', init, f'{out}/init', seed=seed,
                                       **sizes['options'].get('signal', {}))
  return result


def summary(name: str, workdir: str, result: dict | None) -> dict:
  row = {'net': name, 'kwargs': NETS[name]}
  try:
    row['test_accuracy'] = report.summarize(report.read_run(workdir))['final']
  except Exception:  # pylint: disable=broad-except
    row['test_accuracy'] = None
  if not result:
    return row
  paths, hess, land = result['paths'], result['hessian'], result['landscape']
  row.update({
      'effective_range': paths['effective_range'], 'num_blocks': paths['num_blocks'],
      'top_eigenvalue': hess['top_eigenvalues'][0], 'trace': hess['trace'],
      'loss_at_weights': land['loss_at_weights'],
      'loss_grid_max': max(v for r in land['loss'] for v in r if v is not None),
      'last_block_variance_init': result['signal_init']['blocks'][-1]['channel_variance'],
      'last_block_variance': result['signal']['blocks'][-1]['channel_variance'],
      'seconds': {k: v['seconds'] for k, v in result.items()},
  })
  return row


def write_report(rows: list[dict], out: str, quick: bool) -> str:
  fmt = lambda v: '-' if v is None else (f'{v:.4g}' if isinstance(v, float) else str(v))
  lines = ['# The skip-connection lab', '',
           f"Written by `python scripts/skip_lab_study.py{' --quick' if quick else ''}`"
           f" ({'ResNet-8 at width 4, 8 steps: a smoke run, not a result' if quick else 'ResNet-20'}"
           '; mnist_5k).', '',
           '| net | model_kwargs | test accuracy | paths: blocks, effective range | top Hessian '
           'eigenvalue | Hessian trace | loss at weights / max on the grid | last block channel '
           'variance, init -> trained |',
           '|---|---|---|---|---|---|---|---|']
  for r in rows:
    if 'top_eigenvalue' not in r:
      lines.append(f"| {r['net']} | {r['kwargs']} | {fmt(r['test_accuracy'])} | diverged or "
                   'missing | | | | |')
      continue
    lines.append(
        f"| {r['net']} | {r['kwargs']} | {fmt(r['test_accuracy'])} | {r['num_blocks']}, "
        f"{r['effective_range']} | {fmt(r['top_eigenvalue'])} | {fmt(r['trace'])} | "
        f"{fmt(r['loss_at_weights'])} / {fmt(r['loss_grid_max'])} | "
        f"{fmt(r['last_block_variance_init'])} -> {fmt(r['last_block_variance'])} |")
  text = '\n'.join(lines) + '\n'
  pathlib.Path(out, 'README.md').write_text(text)
  return text


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--quick', action='store_true', help='tiny nets, a few steps, small analyses')
  p.add_argument('--root', default='runs/skip_lab')
  p.add_argument('--out', default='experiments/results/skip_lab')
  p.add_argument('--data_dir', default=None, help='tfds data_dir holding mnist_5k')
  p.add_argument('--seed', type=int, default=0)
  args = p.parse_args(argv)
  todo = runs(args.root, args.quick, args.data_dir)
  for run, code, _ in sweep.run_all(todo, main=cli.main):
    if code:
      print(f'warning: {run.workdir} failed (exit {code}); reported as such', file=sys.stderr)
  sizes = QUICK if args.quick else FULL
  os.makedirs(args.out, exist_ok=True)
  rows = []
  for name, run in zip(NETS, todo):
    try:
      result = analyse(run.workdir, f'{args.out}/{name}', sizes, args.seed)
    except ResflaxError as e:
      print(f'warning: {name} not analysed: {e}', file=sys.stderr)
      result = None
    rows.append(summary(name, run.workdir, result))
    print(f'analysed {name}', flush=True)
  pathlib.Path(args.out, 'results.json').write_text(json.dumps(rows, indent=1) + '\n')
  print(write_report(rows, args.out, args.quick))
  return 0


if __name__ == '__main__':
  sys.exit(main())

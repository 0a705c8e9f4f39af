"""The skip-connection lab: CIFAR ResNet skeletons on mnist_5k through the four instruments.

  python scripts/skip_lab_study.py --quick     # ~10 minutes: ResNet-8/14/20 at width 4, 8 steps
  python scripts/skip_lab_study.py             # the study (about 1.5-2 hours on 2 cores)

Nets: CIFAR ResNet v1 skeletons (``experiments/configs/degradation_mnist5k.py``: 16/32/64 channels,
28 -> 14 -> 7 maps, SGD with momentum, lr 0.1 with a 1-epoch warm-up and cosine decay, here for
3 epochs of the 4,000 digits) in seven forms, one vocabulary (``resflax.parts``):

  plain (no shortcuts), resnet (post-activation, option A; 1512.03385), preact (1603.05027),
  highway (1505.00387), dense_additive (seed 002 In[7]'s sum), skipinit (no norm,
  x + alpha F(x), alpha = 0 at init; 2002.10444) and fixup (no norm; 1901.09321).

Sections (each with its rule in ``OUT/README.md``):

1. paths (Veit et al. 2016, 1605.06431 sec. 4): ResNet-56 at init and trained (3 seeds), ResNet-110
   trained; the verdict on seed 002's "effectively a network that is 2-3 layers long while training".
2. landscape (Li et al. 2018, 1712.09913 fig. 5): plain vs ResNet at 20 and 56 layers, with the
   non-convexity of the surface.
3. hessian (PyHessian, 1912.07145): top eigenvalue and trace after training, plain / residual /
   highway / dense-additive at 8, 20 and 56 layers: sharpness against depth.
4. signal (Brock et al. 2021, 2101.08692): signal propagation at init of plain, post-activation,
   pre-activation, SkipInit and Fixup nets at 20, 56 and 110 layers.
5. norm-free: BatchNorm vs SkipInit vs Fixup ResNets at 20, 56 (3 seeds) and 110 layers (1 seed):
   test accuracy and final train loss; ResNet-20 again at 15 epochs (the budget or the method?).

Runs live in ``--root`` and resume; an analysis whose ``KIND.json`` is in ``--out`` is read, not
redone (delete it to redo it); a net whose loss turns non-finite is reported as diverged.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import statistics
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from resflax import analysis, cli, models, report, sweep  # pylint: disable=g-import-not-at-top
from resflax import config as config_lib  # pylint: disable=g-import-not-at-top
from resflax.errors import ResflaxError  # pylint: disable=g-import-not-at-top
from resflax.train import loop  # pylint: disable=g-import-not-at-top

CONFIG = 'experiments/configs/degradation_mnist5k.py'
# family: (preset, model_kwargs); the depth is set by model_kwargs.depth.
NETS = {
    'plain': ('plain20', {}),
    'resnet': ('resnet20', {}),
    'preact': ('preact_resnet20', {}),
    'highway': ('highway_resnet20', {}),
    'dense_additive': ('dense_additive_resnet20', {}),
    'skipinit': ('resnet20', {'norm': 'none', 'merge': 'skipinit'}),
    'fixup': ('resnet20', {'norm': 'none', 'merge': 'fixup'}),
}
LABELS = {'plain': 'plain', 'resnet': 'residual (post-act)', 'preact': 'pre-activation',
          'highway': 'highway', 'dense_additive': 'dense-additive', 'skipinit': 'SkipInit',
          'fixup': 'Fixup'}

FULL = {
    'depths': (20, 56, 110), 'hessian_depths': (8, 20, 56), 'norm_free_depths': (20, 56),
    'train_label': '3 epochs',
    'seeds': (0, 1, 2),
    'train': [('num_epochs', '3')],
    # The norm-free comparison again at 5x the budget, seed 0: is a gap the method or the budget?
    'long': {'depth': 20, 'train': [('num_epochs', '15')], 'label': '15 epochs'},
    'sizes': {
        'paths': (200, {'batch_size': 100}),
        'landscape': (500, {'profile_points': 9, 'grid_points': 9}),
        'hessian': (256, {'steps': 10, 'trace_samples': 4, 'top_k': 3, 'batch_size': 128}),
        'signal': (250, {'jacobian_examples': 2, 'iterations': 4}),
    },
}
QUICK = {
    'depths': (8, 14, 20), 'hessian_depths': (8,), 'norm_free_depths': (8,), 'seeds': (0, 1),
    'train_label': '8 steps',
    'train': [('num_train_steps', '8')], 'width': 4,
    'long': {'depth': 8, 'train': [('num_train_steps', '16')], 'label': '16 steps'},
    'sizes': {
        'paths': (32, {'batch_size': 16}),
        'landscape': (32, {'profile_points': 3, 'grid_points': 3}),
        'hessian': (32, {'steps': 4, 'trace_samples': 2, 'top_k': 2, 'batch_size': 32}),
        'signal': (16, {'jacobian_examples': 1, 'iterations': 2}),
    },
}


NORM_FREE = ('resnet', 'skipinit', 'fixup')  # the norm-free section's nets (BatchNorm first)


def net_name(family: str, depth: int, seed: int) -> str:
  return f'{family}{depth}_s{seed}'


def overrides(plan: dict, family: str, depth: int, seed: int, data_dir: str | None,
              train: list | None = None) -> tuple:
  preset, kwargs = NETS[family]
  width = plan.get('width')  # first-stage filters; stages have width, 2 width, 4 width
  if width and family == 'preact':  # PreActResNet spells its widths out
    kwargs = {**kwargs, 'stem_features': str(width),
              'stage_features': str((width, 2 * width, 4 * width))}
  elif width:
    kwargs = {**kwargs, 'width': str(width)}
  return (('model', preset), ('model_kwargs.depth', str(depth)),
          *((f'model_kwargs.{k}', v) for k, v in kwargs.items()), ('seed', str(seed)),
          ('progress', 'none'), ('log_block_metrics', 'False'), ('log_every_steps', '5'),
          *(plan['train'] if train is None else train),
          *((('data_dir', data_dir),) if data_dir else ()))


def trained_nets(plan: dict) -> dict[str, list[tuple[str, int, int]]]:
  """The nets each section trains, as (family, depth, seed)."""
  d20, d56, d110 = plan['depths']
  seeds = plan['seeds']
  return {
      'paths': [('resnet', d56, s) for s in seeds] + [('resnet', d110, 0)],
      'landscape': [(f, d, 0) for f in ('plain', 'resnet') for d in (d20, d56)],
      'hessian': [(f, d, 0) for d in plan['hessian_depths']
                  for f in ('plain', 'resnet', 'highway', 'dense_additive')],
      'norm_free': [(f, d, s) for d in plan['norm_free_depths'] for f in NORM_FREE
                    for s in seeds] + [(f, d110, 0) for f in NORM_FREE],
  }


def train_all(plan: dict, root: str, data_dir: str | None) -> dict:
  """Every net any section needs, shallow first; returns {net: exit code}."""
  nets = sorted({n for section in trained_nets(plan).values() for n in section},
                key=lambda n: (n[1], list(NETS).index(n[0]), n[2]))
  todo = [sweep.Run(CONFIG, f'{root}/{net_name(*n)}', overrides(plan, *n, data_dir)) for n in nets]
  long = plan['long']
  todo += [sweep.Run(CONFIG, f'{root}/{net_name(f, long["depth"], 0)}_long',
                     overrides(plan, f, long['depth'], 0, data_dir, train=long['train']))
           for f in NORM_FREE]
  codes = {}
  for run, code, seconds in sweep.run_all(todo, main=cli.main):
    codes[pathlib.Path(run.workdir).name] = code
    print(f'  {pathlib.Path(run.workdir).name}: exit {code}, {seconds:.0f} s', flush=True)
  return codes


def init_subject(plan: dict, family: str, depth: int, like: analysis.Subject,
                 data_dir: str | None) -> analysis.Subject:
  """``family`` at ``depth`` at initialisation (as ``resflax train`` initialises it, seed 0) on the
  examples of ``like``: nets that are only looked at at init are never trained."""
  config = config_lib.from_args(CONFIG, list(overrides(plan, family, depth, 0, data_dir)))
  model = models.from_config(config, num_outputs=10)
  rng = jax.random.fold_in(jax.random.key(config.seed), loop.INIT_TAG)
  variables = jax.device_get(jax.jit(lambda r: model.init(
      {'params': r}, jnp.zeros((1, *like.images.shape[1:]), jnp.float32), train=False))(rng))
  source = {'model': config.model, 'model_kwargs': config.model_kwargs.to_dict(), 'init': True,
            'step': 0, 'dataset': config.dataset, 'num_examples': int(like.images.shape[0])}
  return analysis.Subject(model, dict(variables), like.images, like.labels, config.loss, source)


class Lab:
  """The analyses, each read from ``OUT/<section>/<net>/KIND.json`` when it is there."""

  def __init__(self, plan: dict, root: str, out: str, data_dir: str | None, seed: int):
    self.plan, self.root, self.out, self.data_dir, self.seed = plan, root, out, data_dir, seed
    self.seconds = {}

  def _analyse(self, kind: str, where: str, subject_fn) -> dict | None:
    path = pathlib.Path(self.out, where, f'{kind}.json')
    if path.is_file():
      try:
        return json.loads(path.read_text())
      except ValueError:  # cut short by a kill, or garbled: redo it
        print(f'warning: {path} is not valid JSON; analysing again', file=sys.stderr)
    num_examples, options = self.plan['sizes'][kind]
    try:
      subject = subject_fn(num_examples)
      result = analysis.run(kind, subject, str(path.parent), seed=self.seed, **options)
    except (ResflaxError, FloatingPointError) as e:
      print(f'warning: {kind} of {where} not analysed: {e}', file=sys.stderr)
      return None
    print(f'  {kind} {where}: {result["seconds"]:.0f} s', flush=True)
    return result

  def trained(self, kind: str, section: str, net: tuple[str, int, int]) -> dict | None:
    workdir = f'{self.root}/{net_name(*net)}'
    return self._analyse(kind, f'{section}/{net_name(*net)}',
                         lambda n: analysis.load_subject(workdir, num_examples=n))

  def at_init(self, kind: str, section: str, family: str, depth: int) -> dict | None:
    like_dir = f'{self.root}/{net_name("resnet", self.plan["depths"][0], 0)}'
    return self._analyse(kind, f'{section}/{family}{depth}_init', lambda n: init_subject(
        self.plan, family, depth, analysis.load_subject(like_dir, num_examples=n), self.data_dir))


# ----------------------------------------------------------------------------------------------
# The sections: numbers, tables and verdicts.
# ----------------------------------------------------------------------------------------------
def run_summary(workdir: str) -> dict:
  """Test accuracy (final eval) and the final train loss (mean of the last epoch's logged rows)."""
  try:
    run = report.read_run(workdir)
  except ResflaxError:
    return {'test_accuracy': None, 'train_loss': None, 'diverged': None}
  rows = run['rows']
  train = [r for r in rows if r['split'] == 'train' and 'loss' in r]
  evals = [r for r in rows if r['split'] == 'eval']
  last_epoch = max((r.get('epoch', 0) for r in train), default=0)
  tail = [r['loss'] for r in train if r.get('epoch', 0) == last_epoch] or [math.nan]
  loss = statistics.mean(tail)
  acc = evals[-1].get('accuracy') if evals else None
  diverged = not math.isfinite(loss) or any(not math.isfinite(r['loss']) for r in train)
  return {'test_accuracy': acc, 'train_loss': None if diverged else loss, 'diverged': diverged}


def paths_section(lab: Lab, nets: list) -> dict:
  """Veit et al. 2016 sec. 4, and seed 002's "2-3 layers long while training"."""
  d56 = lab.plan['depths'][1]
  rows = []
  init = lab.at_init('paths', 'paths', 'resnet', d56)
  if init:
    rows.append({'net': f'resnet{d56}_init', 'init': True, **_paths_row(init)})
  for net in nets:
    result = lab.trained('paths', 'paths', net)
    if result:
      rows.append({'net': net_name(*net), 'init': False, **_paths_row(result)})
  trained = [r for r in rows if not r['init'] and r['net'].startswith(f'resnet{d56}_')]
  verdict = None
  if trained:
    # A path through k residual branches has 2k + 2 weight layers (each branch two convs, plus
    # the stem conv and the head): "2-3 layers long" is k <= 1.
    his = [r['effective_range'][1] for r in trained]
    los = [r['effective_range'][0] for r in trained]
    n = trained[0]['num_blocks']
    if max(his) <= 1:
      text = 'supported'
    elif max(his) < n / 2:
      text = ('partly supported: the gradient comes from paths far shorter than the net, but not '
              '2-3 layers: the net trains as an ensemble of moderately deep paths')
    else:
      text = 'not supported'
    verdict = {
        'claim': '"During the initial training steps it will only have to [make] weight and bias '
                 'updates for the layers it is currently training ... effectively a network that '
                 'is 2-3 layers long while training."',
        'verdict': text,
        'rule': (f'ResNet-{d56} on mnist_5k after training, {len(trained)} seeds, Veit et al. 2016 '
                 'sec. 4: the shortest range of path lengths k (residual branches on the path) '
                 'holding 90% of the total gradient at the input. A path of k branches has 2k + 2 '
                 'weight layers: supported if the range ends at k <= 1 (2-4 layers) for every '
                 f'seed; partly supported if it ends below half of the {n} blocks; else not.'),
        'numbers': (f'effective range (blocks) {", ".join(f"{a}-{b}" for a, b in zip(los, his))} '
                    f'of {n} blocks, i.e. paths of {2 * min(los) + 2}-{2 * max(his) + 2} layers; '
                    f'peak of the total gradient at k = '
                    f'{", ".join(str(r["peak"]) for r in trained)}'),
    }
  return {'rows': rows, 'verdict': verdict}


def _paths_row(result: dict) -> dict:
  totals = np.asarray(result['total_gradient_by_length'])
  return {'num_blocks': result['num_blocks'], 'effective_range': result['effective_range'],
          'peak': int(np.argmax(totals)), 'skipped': [s['name'] for s in result['skipped']],
          'gradient_k0': result['gradient_by_length'][0],
          'gradient_kmax': result['gradient_by_length'][-1], 'seconds': result.get('seconds')}


def landscape_section(lab: Lab, nets: list) -> dict:
  rows = []
  for net in nets:
    result = lab.trained('landscape', 'landscape', net)
    if result:
      finite = [v for r in result['loss'] for v in r if v is not None]
      rows.append({'net': net_name(*net), 'loss_at_weights': result['loss_at_weights'],
                   'loss_grid_max': max(finite) if finite else None,
                   'nonconvexity': result.get('nonconvexity'),
                   'nonconvex_fraction': result.get('nonconvex_fraction'),
                   'figure': f"landscape/{net_name(*net)}/landscape_2d.png",
                   'seconds': result.get('seconds')})
  return {'rows': rows}


def hessian_section(lab: Lab, nets: list) -> dict:
  rows = []
  for net in nets:
    result = lab.trained('hessian', 'hessian', net)
    if result:
      rows.append({'net': net_name(*net), 'family': net[0], 'depth': net[1],
                   'top_eigenvalue': result['top_eigenvalues'][0], 'trace': result['trace'],
                   'seconds': result.get('seconds')})
  return {'rows': rows}


def signal_section(lab: Lab) -> dict:
  rows = []
  for family in ('plain', 'resnet', 'preact', 'skipinit', 'fixup'):
    for depth in lab.plan['depths']:
      result = lab.at_init('signal', 'signal', family, depth)
      if not result:
        continue
      blocks = result['blocks']
      rows.append({'net': f'{family}{depth}_init', 'family': family, 'depth': depth,
                   'first_variance': blocks[0]['channel_variance'],
                   'last_variance': blocks[-1]['channel_variance'],
                   'last_mean_squared': blocks[-1]['mean_squared'],
                   'first_gradient': blocks[0]['gradient_norm'],
                   'last_gradient': blocks[-1]['gradient_norm'],
                   'top_singular': (blocks[-1].get('jacobian_singular_values') or [None])[0],
                   'seconds': result.get('seconds')})
  return {'rows': rows}


def norm_free_section(lab: Lab, nets: list) -> dict:
  """Test accuracy and final train loss per (family, depth) over seeds, at the study's budget and
  (seed 0, ``plan.long``) at the longer one."""
  groups = {}
  for family, depth, seed in nets:
    groups.setdefault((family, depth, lab.plan['train_label']), []).append(
        {'seed': seed, **run_summary(f'{lab.root}/{net_name(family, depth, seed)}')})
  long = lab.plan['long']
  for family in NORM_FREE:
    groups[(family, long['depth'], long['label'])] = [
        {'seed': 0, **run_summary(f'{lab.root}/{net_name(family, long["depth"], 0)}_long')}]
  rows = []
  for (family, depth, budget), runs in groups.items():
    acc = report.mean_std([r['test_accuracy'] for r in runs if not r['diverged']])
    loss = report.mean_std([r['train_loss'] for r in runs if not r['diverged']])
    rows.append({'family': family, 'depth': depth, 'budget': budget, 'seeds': len(runs),
                 'diverged': sum(bool(r['diverged']) for r in runs),
                 'test_accuracy': acc, 'train_loss': loss, 'runs': runs})
  return {'rows': rows}


# ----------------------------------------------------------------------------------------------
# The report.
# ----------------------------------------------------------------------------------------------
def _f(v, digits=4) -> str:
  if v is None or (isinstance(v, float) and not math.isfinite(v)):
    return '-'
  return f'{v:.{digits}g}' if isinstance(v, float) else str(v)


def _ms(pair) -> str:
  m, s = pair
  return '-' if not math.isfinite(m) else f'{m:.4f} ± {s:.4f}'


def analysis_minutes(sections: dict) -> float:
  """The analyses' own seconds (each recorded in its KIND.json when it ran), in minutes."""
  return sum(r.get('seconds') or 0 for section in sections.values()
             for r in section.get('rows', [])) / 60


def write_report(results: dict, out: str, quick: bool) -> str:
  sec = results['sections']
  lines = ['# The skip-connection lab', '',
           f"Written by `python scripts/skip_lab_study.py{' --quick' if quick else ''}` on "
           f"{results['machine']}: this invocation {results['minutes']:.0f} min (training "
           f"{results['seconds']['train'] / 60:.0f} min; runs and analyses already done are read "
           f"back, not redone), the analyses' own compute {analysis_minutes(sec):.0f} min. "
           'Data: mnist_5k (4,000 training digits, '
           '1,000 test digits; CIFAR-10 is not reachable here). Recipe: '
           f'`{CONFIG}` ({"8 steps at width 4: a smoke run, not a result" if quick else "3 epochs"}'
           '), the analyses at the sizes in `results.json` (`plan.sizes`: examples, options).', '']
  paths = sec.get('paths', {})
  if paths.get('verdict'):
    v = paths['verdict']
    lines += ['## Verdict on seed 002, redone with Veit et al.\'s method', '',
              '| claim | verdict | numbers | rule |', '|---|---|---|---|',
              f"| {v['claim']} | **{v['verdict']}** | {v['numbers']} | {v['rule']} |", '']
  lines += ['## 1. Gradient by path length (1605.06431 sec. 4)', '',
            'k: residual branches a path goes through; the effective range holds 90% of the total '
            'gradient (gradient per path x number of paths). Blocks whose shape changes have no '
            'identity shortcut and are always on the path (listed as skipped).', '',
            '| net | blocks | effective range (k) | peak k | mean gradient per path, k = 0 / k = n '
            '| skipped | s |', '|---|---|---|---|---|---|---|']
  for r in paths.get('rows', []):
    lines.append(f"| {r['net']} | {r['num_blocks']} | {r['effective_range'][0]}-"
                 f"{r['effective_range'][1]} | {r['peak']} | {_f(r['gradient_k0'])} / "
                 f"{_f(r['gradient_kmax'])} | {', '.join(r['skipped']) or '-'} | "
                 f"{_f(r['seconds'], 3)} |")
  lines += ['', 'Figures: `paths/<net>/paths.png` (Veit et al. fig. 6).', '',
            '## 2. Loss landscapes, plain vs residual (1712.09913 fig. 5)', '',
            'Non-convexity: the mean over the interior grid points of max(0, -l_min) / |l_max| of '
            "the surface's 2x2 Hessian (0 where convex); the fraction of points with a negative "
            'eigenvalue.', '',
            '| net | loss at the weights | max loss on the grid | non-convexity | non-convex '
            'fraction | figure |', '|---|---|---|---|---|---|']
  for r in sec.get('landscape', {}).get('rows', []):
    lines.append(f"| {r['net']} | {_f(r['loss_at_weights'])} | {_f(r['loss_grid_max'])} | "
                 f"{_f(r['nonconvexity'], 3)} | {_f(r['nonconvex_fraction'], 3)} | "
                 f"[{r['figure']}]({r['figure']}) |")
  lines += ['', '## 3. Sharpness against depth: the Hessian after training (1912.07145)', '',
            '| family | ' + ' | '.join(f'{d} layers: top eigenvalue, trace'
                                       for d in results['plan']['hessian_depths']) + ' |',
            '|---|' + '---|' * len(results['plan']['hessian_depths'])]
  hrows = sec.get('hessian', {}).get('rows', [])
  for family in ('plain', 'resnet', 'highway', 'dense_additive'):
    cells = []
    for d in results['plan']['hessian_depths']:
      r = next((r for r in hrows if r['family'] == family and r['depth'] == d), None)
      cells.append('-' if r is None else f"{_f(r['top_eigenvalue'])}, {_f(r['trace'])}")
    lines.append(f'| {LABELS[family]} | ' + ' | '.join(cells) + ' |')
  lines += ['', '## 4. Signal propagation at initialisation (2101.08692)', '',
            'Residual stream after the first and the last block, train mode (batch statistics), '
            'on the first examples: the average channel variance, and the gradient norm of the '
            "loss at the block's output.", '',
            '| net | layers | channel variance, first -> last block | gradient norm, first / last '
            "block | top singular value of the last block's input-output Jacobian |", '|---|---|---|---|---|']
  for r in sec.get('signal', {}).get('rows', []):
    lines.append(f"| {LABELS[r['family']]} | {r['depth']} | {_f(r['first_variance'])} -> "
                 f"{_f(r['last_variance'])} | {_f(r['first_gradient'])} / "
                 f"{_f(r['last_gradient'])} | {_f(r['top_singular'])} |")
  lines += ['', 'Figures: `signal/<net>/signal.png`.', '',
            '## 5. Normalisation-free vs BatchNorm ResNets', '',
            '| net | layers | budget | seeds | diverged | test accuracy (mean ± std) | final train '
            'loss |', '|---|---|---|---|---|---|---|']
  for r in sec.get('norm_free', {}).get('rows', []):
    lines.append(f"| {LABELS[r['family']]} | {r['depth']} | {r['budget']} | {r['seeds']} | "
                 f"{r['diverged']} | "
                 f"{_ms(r['test_accuracy'])} | {_ms(r['train_loss'])} |")
  times = results['seconds']
  lines += ['', '## Time', '', '| stage | minutes |', '|---|---|']
  lines += [f'| {k} | {v / 60:.1f} |' for k, v in times.items()]
  text = '\n'.join(lines) + '\n'
  pathlib.Path(out, 'README.md').write_text(text)
  return text


def machine() -> str:
  try:
    for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith('model name'):
        return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
  except OSError:
    pass
  return f'{platform.processor() or platform.machine()} ({os.cpu_count()} cores)'


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--quick', action='store_true', help='tiny nets, a few steps, small analyses')
  p.add_argument('--root', default='runs/skip_lab')
  p.add_argument('--out', default='experiments/results/skip_lab')
  p.add_argument('--data_dir', default=None, help='tfds data_dir holding mnist_5k')
  p.add_argument('--seed', type=int, default=0, help='seed of the analyses (paths, directions)')
  args = p.parse_args(argv)
  plan = QUICK if args.quick else FULL
  start = time.perf_counter()
  os.makedirs(args.out, exist_ok=True)
  seconds = {}
  t = time.perf_counter()
  codes = train_all(plan, args.root, args.data_dir)
  seconds['train'] = time.perf_counter() - t
  failed = [name for name, code in codes.items() if code]
  if failed:
    print(f'warning: {", ".join(failed)} failed; reported as such', file=sys.stderr)
  lab = Lab(plan, args.root, args.out, args.data_dir, args.seed)
  nets = trained_nets(plan)
  sections = {}
  for name, fn in (('paths', lambda: paths_section(lab, nets['paths'])),
                   ('signal', lambda: signal_section(lab)),
                   ('landscape', lambda: landscape_section(lab, nets['landscape'])),
                   ('hessian', lambda: hessian_section(lab, nets['hessian'])),
                   ('norm_free', lambda: norm_free_section(lab, nets['norm_free']))):
    t = time.perf_counter()
    sections[name] = fn()
    seconds[name] = time.perf_counter() - t
    print(f'{name}: {seconds[name]:.0f} s', flush=True)
  results = {'plan': {k: v for k, v in plan.items()}, 'machine': machine(),
             'minutes': (time.perf_counter() - start) / 60, 'seconds': seconds,
             'exit_codes': codes, 'sections': sections}
  pathlib.Path(args.out, 'results.json').write_text(json.dumps(results, indent=1, default=str)
                                                    + '\n')
  print(write_report(results, args.out, args.quick))
  return 0


if __name__ == '__main__':
  sys.exit(main())

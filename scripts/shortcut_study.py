"""The shortcut study: seed 000's two questions answered by measurement. One command:

  python scripts/shortcut_study.py            # all shortcuts x 3 seeds x (digits, steering)

trains every shortcut of ``resflax/models/shortcut_study.py`` (identity, zero-pad, projection,
avg-pool projection, pointwise Dense, Flatten + Dense, global-pool Dense, and the plain net) on
mnist_5k (classification; ``experiments/configs/shortcut_study_mnist5k.py``) and on the synthetic
steering scenes (regression; ``shortcut_study_steering.py``), measures parameters, forward FLOPs,
train-step time and XLA's peak-memory estimate of each, and writes
``experiments/results/shortcut_study/``: ``README.md`` (tables, the answers to Q1 and Q2 derived
from the numbers), ``results.json`` and PNG plots. Runs live in ``runs/shortcut_study/<task>/``
and resume: rerunning the command only trains what is missing. ``--print-only`` prints the
``resflax train`` commands for a cluster instead.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from resflax import config as config_lib  # pylint: disable=g-import-not-at-top
from resflax import report, sweep  # pylint: disable=g-import-not-at-top
from resflax.models import shortcut_study  # pylint: disable=g-import-not-at-top

REPO = pathlib.Path(__file__).resolve().parent.parent
TASKS = {
    'digits': {'config': 'experiments/configs/shortcut_study_mnist5k.py',
               'prefix': 'shortcut_study_', 'metric': 'accuracy', 'higher': True,
               'input_shape': (28, 28, 1), 'outputs': 10,
               'title': 'mnist_5k digits, test accuracy (1,000 held-out digits)'},
    'steering': {'config': 'experiments/configs/shortcut_study_steering.py',
                 'prefix': 'steering_shortcut_study_', 'metric': 'mae', 'higher': False,
                 'input_shape': (120, 160, 3), 'outputs': 1,
                 'title': 'synthetic steering, validation MAE (400 held-out scenes)'},
}
LABELS = {
    'none': 'plain (no shortcut)', 'identity': 'identity only (none across shape changes)',
    'zero_pad': 'zero-pad + stride (option A)', 'projection': 'strided 1x1 conv + BN (option B)',
    'avgpool_projection': 'avg-pool + 1x1 conv + BN (ResNet-D)',
    'pointwise_dense': 'pointwise Dense on channels (seed 000 m1)',
    'flatten_dense': 'Flatten + Dense (seed 000 m2)',
    'global_pool_dense': 'global-avg-pool + Dense',
}


def collect(task: str, runs: list[sweep.Run]) -> dict:
  """Per shortcut kind: the final eval metric per seed and the eval curves."""
  spec = TASKS[task]
  out = {}
  for run in runs:
    model, seed = dict(run.overrides)['model'], int(dict(run.overrides)['seed'])
    kind = model.removeprefix(spec['prefix'])
    entry = out.setdefault(kind, {'final': [], 'by_seed': {}, 'curves': [], 'minutes': []})
    try:
      data = report.read_run(run.workdir)
    except Exception:  # pylint: disable=broad-except
      continue  # not trained (or failed): left out, and said so in the table's n column
    evals = [r for r in data['rows'] if r['split'] == 'eval']
    if not evals:
      continue
    entry['final'].append(evals[-1][spec['metric']])
    entry['by_seed'][seed] = evals[-1][spec['metric']]
    entry['curves'].append([(r['epoch'], r[spec['metric']]) for r in evals])
    summary = report.summarize(data)
    entry['minutes'].append(summary['minutes'])
  return out


def measure(task: str, kinds: list[str], repeats: int) -> dict:
  """Per kind: params, shortcut params, forward FLOPs per example, step ms, peak MB."""
  from resflax import costs
  spec = TASKS[task]
  config = config_lib.load(REPO / spec['config'])
  out = {}
  for kind in kinds:
    config.model = spec['prefix'] + kind
    forward = costs.forward_cost(config.model, spec['outputs'], spec['input_shape'])
    step = costs.train_step_cost(config, spec['input_shape'], repeats=repeats)
    out[kind] = {**forward, **step}
    print(f'{task} {kind}: {out[kind]}', flush=True)
  return out


def _fmt(mean, std, metric):
  return f'{mean:.4f} ± {std:.4f}' if metric == 'mae' else f'{mean:.3f} ± {std:.3f}'


def analyse(results: dict, seeds: list[int]) -> tuple[str, dict]:
  """The markdown tables and the answers to Q1 / Q2, computed from ``results``."""
  lines, verdict = [], {}
  for task, res in results.items():
    spec = TASKS[task]
    metric, higher = spec['metric'], spec['higher']
    rows = []
    for kind, acc in res['accuracy'].items():
      mean, std = report.mean_std(acc['final'])
      rows.append((kind, mean, std, len(acc['final']), res['costs'].get(kind, {})))
    valid = [r for r in rows if r[1] == r[1]]
    best = (max if higher else min)(valid, key=lambda r: r[1]) if valid else None
    # "As good as the best": within the best's standard deviation plus its own.
    tied = [r for r in valid if best and abs(r[1] - best[1]) <= best[2] + r[2]]
    verdict[task] = {'best': best and best[0], 'tied': [r[0] for r in tied], 'rows': rows}
    lines += [f'### {spec["title"]}', '',
              f'| shortcut | {metric} (mean ± std) | vs zero-pad, paired by seed | n | params | '
              f'shortcut params | MFLOPs/example | step ms (batch 128) | peak MB (XLA) |',
              '|---|---|---|---|---|---|---|---|---|']
    reference = res['accuracy'].get('zero_pad', {}).get('by_seed', {})
    for kind, mean, std, n, cost in rows:
      mark = ' **(best)**' if best and kind == best[0] else (' (tied)' if kind in verdict[task]['tied'] else '')
      mine = res['accuracy'][kind].get('by_seed', {})
      diffs = [mine[s] - reference[s] for s in sorted(mine) if s in reference]
      paired = '' if kind == 'zero_pad' or not diffs else (
          f'{report.mean_std(diffs)[0]:+.4f} ± {report.mean_std(diffs)[1]:.4f}')
      lines.append(
          f"| {LABELS[kind]} | {_fmt(mean, std, metric)}{mark} | {paired} | {n} | {cost.get('params', 0):,} | "
          f"{cost.get('shortcut_params', 0):,} | {cost.get('flops', float('nan')) / 1e6:.2f} | "
          f"{cost.get('step_ms', float('nan')):.1f} | {cost.get('peak_mb', float('nan')):.0f} |")
    lines.append('')
  return '\n'.join(lines), verdict


def answers(results: dict, verdict: dict) -> str:
  """Q1 and Q2, each sentence computed from the tables (no number is typed in by hand)."""
  def stat(task, kind):
    for k, mean, std, _, cost in verdict[task]['rows']:
      if k == kind:
        return mean, std, cost
    return float('nan'), float('nan'), {}

  text = ['## Q1: what are the advantages of each method?', '']
  for kind in LABELS:
    parts = []
    for task in results:
      mean, std, cost = stat(task, kind)
      if mean != mean:
        continue
      metric = TASKS[task]['metric']
      base = stat(task, 'zero_pad')[2] or {}
      ratio = cost.get('step_ms', 0) / base['step_ms'] if base.get('step_ms') else float('nan')
      parts.append(f"{task}: {metric} {_fmt(mean, std, metric)}, {cost.get('shortcut_params', 0):,} "
                   f"shortcut parameters, step time {ratio:.2f}x zero-pad's")
    if parts:
      text.append(f"- **{LABELS[kind]}** — " + '; '.join(parts) + '.')
  text += ['', '## Q2: best practice for reshaping 3D tensors to a standard size', '',
           'Candidates: the shortcuts that reshape (the plain and identity-only nets are references). '
           'Rule: keep the candidates whose mean is within the sum of the standard deviations of the '
           'best candidate on every task; of those, the ones within 10% of the fewest parameters; '
           'of those, the best mean rank over the tasks.', '']
  reshaping = [k for k in LABELS if k not in ('none', 'identity')]
  ranks = {k: [] for k in reshaping}
  tied_everywhere = set(reshaping)
  for task in results:
    spec = TASKS[task]
    scored = [(k, stat(task, k)) for k in reshaping if stat(task, k)[0] == stat(task, k)[0]]
    scored.sort(key=lambda kv: -kv[1][0] if spec['higher'] else kv[1][0])
    for rank, (k, _) in enumerate(scored, 1):
      ranks[k].append(rank)
    best_mean, best_std, _ = scored[0][1]
    tied = {k for k, (m, sd, _) in scored if abs(m - best_mean) <= best_std + sd}
    tied_everywhere &= tied
    text.append(f"- {task} ({spec['metric']}): best **{LABELS[scored[0][0]]}**; within noise of it: "
                f"{', '.join(LABELS[k] for k, _ in scored if k in tied)}; outside: "
                f"{', '.join(LABELS[k] for k, _ in scored if k not in tied) or 'none'}.")
  params = {k: sum(stat(t, k)[2].get('params', 0) for t in results) for k in reshaping}
  if tied_everywhere:
    fewest = min(params[k] for k in tied_everywhere)
    light = [k for k in tied_everywhere if params[k] <= 1.1 * fewest]
    pick = min(light, key=lambda k: statistics.mean(ranks[k]) if ranks[k] else 1e9)
    text.append(f"- Within noise of the best on every task: "
                f"{', '.join(LABELS[k] for k in reshaping if k in tied_everywhere)}. Recommendation: "
                f"**{LABELS[pick]}** (mean rank {statistics.mean(ranks[pick]):.1f} of "
                f"{len(reshaping)}).")
  heavy = max(reshaping, key=lambda k: params[k])
  light_ref = min(reshaping, key=lambda k: params[k])
  text.append(f"- Cost: {LABELS[heavy]} has {params[heavy] / max(params[light_ref], 1):,.0f}x the "
              f"parameters of {LABELS[light_ref]} over the tasks' nets; see the step time and peak "
              'memory columns.')
  return '\n'.join(text) + '\n'


def plots(results: dict, out: pathlib.Path) -> list[str]:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  written = []
  for task, res in results.items():
    spec = TASKS[task]
    kinds = list(res['accuracy'])
    stats = [report.mean_std(res['accuracy'][k]['final']) for k in kinds]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    ax.barh(range(len(kinds)), [m for m, _ in stats], xerr=[s for _, s in stats], color='tab:blue')
    ax.set_yticks(range(len(kinds)), [LABELS[k] for k in kinds], fontsize=8)
    finite = [(m, s) for m, s in stats if m == m]
    if finite:
      lo, hi = min(m - s for m, s in finite), max(m + s for m, s in finite)
      ax.set_xlim(lo - 0.1 * (hi - lo + 1e-3), hi + 0.1 * (hi - lo + 1e-3))
    ax.set_xlabel(f"final {spec['metric']} (mean ± std over seeds)")
    ax.set_title(spec['title'], fontsize=9)
    for k in kinds:
      curves = res['accuracy'][k]['curves']
      if not curves:
        continue
      epochs = [e for e, _ in curves[0]]
      mean = [statistics.mean(c[i][1] for c in curves if len(c) > i) for i in range(len(epochs))]
      ax2.plot(epochs, mean, label=LABELS[k], marker='.')
    ax2.set_xlabel('epoch')
    ax2.set_ylabel(f"eval {spec['metric']} (mean over seeds)")
    if spec['metric'] == 'mae':
      ax2.set_yscale('log')
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    written.append(report.save_figure(fig, out / f'{task}.png').name)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for k, (m, s) in zip(kinds, stats):
      cost = res['costs'].get(k, {})
      if m == m and cost:
        ax.errorbar(cost['params'], m, yerr=s, fmt='o')
        ax.annotate(k, (cost['params'], m), fontsize=7, xytext=(4, 2), textcoords='offset points')
    ax.set_xscale('log')
    ax.set_xlabel('parameters')
    ax.set_ylabel(f"final {spec['metric']}")
    ax.set_title(f'{task}: {spec["metric"]} against model size', fontsize=9)
    ax.grid(alpha=0.3)
    written.append(report.save_figure(fig, out / f'{task}_vs_params.png').name)
  return written


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--tasks', nargs='+', default=list(TASKS), choices=list(TASKS))
  p.add_argument('--kinds', nargs='+', default=list(shortcut_study.SHORTCUTS),
                 choices=list(shortcut_study.SHORTCUTS))
  p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
  p.add_argument('--root', default='runs/shortcut_study', help='parent of the run workdirs')
  p.add_argument('--out', default='experiments/results/shortcut_study')
  p.add_argument('--repeats', type=int, default=20, help='timed train steps per shortcut')
  p.add_argument('--print-only', action='store_true', help='print the train commands, run nothing')
  p.add_argument('--report-only', action='store_true', help='use the runs there are; train nothing')
  p.add_argument('overrides', nargs='*', help='--config.key=value for every run (after --)')
  args = p.parse_args(argv)
  from resflax import cli
  common = [('progress', 'none'), *config_lib.split_overrides(args.overrides)]
  runs = {task: sweep.grid_runs(TASKS[task]['config'], f'{args.root}/{task}',
                                [('model', [TASKS[task]['prefix'] + k for k in args.kinds]),
                                 ('seed', [str(s) for s in args.seeds])], common)
          for task in args.tasks}
  all_runs = [r for rs in runs.values() for r in rs]
  sweep.check(all_runs)
  if args.print_only:
    print('\n'.join(r.command() for r in all_runs))
    return 0
  if not args.report_only:
    failed = [r for r, code, _ in sweep.run_all(all_runs, main=cli.main) if code != 0]
    for r in failed:
      print(f'warning: {r.workdir} failed; left out of the report', file=sys.stderr)
  results = {task: {'accuracy': collect(task, rs), 'costs': measure(task, args.kinds, args.repeats)}
             for task, rs in runs.items()}
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  tables, verdict = analyse(results, args.seeds)
  pngs = plots(results, out)
  (out / 'results.json').write_text(json.dumps(
      {t: {'final': {k: v['final'] for k, v in r['accuracy'].items()},
           'by_seed': {k: v['by_seed'] for k, v in r['accuracy'].items()}, 'costs': r['costs']}
       for t, r in results.items()}, indent=1) + '\n')
  from resflax import costs
  cpu = costs.cpu_name()
  command = 'python scripts/shortcut_study.py ' + ' '.join(sys.argv[1:] if argv is None else argv)
  (out / 'README.md').write_text(
      '# Shortcut study (seed 000: Q1 and Q2)\n\n'
      f'Written by `{command.strip()}`'
      + (' (the runs were trained by the same command without --report-only)' if args.report_only
         else '') + f'; seeds {args.seeds}; CPU: {cpu}, {os.cpu_count()} cores. '
      'The net and the shortcuts: `resflax/models/shortcut_study.py`; recipes: '
      + ', '.join(f"`{TASKS[t]['config']}`" for t in args.tasks) + '. Step time: median of '
      f'{args.repeats} compiled train steps at batch 128 on a fixed batch (no input pipeline), '
      'all shortcuts timed one after another in one process; peak MB: XLA\'s buffer assignment '
      'of the compiled step (arguments + outputs + temporaries).\n\n'
      + tables + '\n' + answers(results, verdict) + '\n'
      + ''.join(f'![{p}]({p})\n' for p in pngs))
  print(out / 'README.md')
  return 0


if __name__ == '__main__':
  sys.exit(main())

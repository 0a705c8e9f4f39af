"""``resflax report RUN_DIR... --out DIR``: a markdown table and PNG plots from run directories.

For each run: its config (model, dataset), parameter count and forward FLOPs per example, the best
and final eval metrics, the training time and the median images/sec. Plots: train/eval loss and
accuracy (or MAE) against the step for all runs, and per-block gradient norms where the runs logged
them (``--config.log_block_metrics=true``).
"""

from __future__ import annotations

import json
import pathlib
import re
import statistics

from resflax.errors import WorkdirError


def read_run(run_dir: str | pathlib.Path) -> dict:
  """``config.json`` and the rows of ``metrics.jsonl`` of one run directory."""
  run_dir = pathlib.Path(run_dir)
  config_path, metrics_path = run_dir / 'config.json', run_dir / 'metrics.jsonl'
  if not config_path.is_file() or not metrics_path.is_file():
    raise WorkdirError(f'{str(run_dir)!r} is not a resflax run directory (no config.json and '
                       'metrics.jsonl): pass the --workdir of a `resflax train` run')
  rows = []
  from resflax import config as config_lib  # pylint: disable=g-import-not-at-top
  from resflax.train import writers  # pylint: disable=g-import-not-at-top
  for line in writers.read_text(metrics_path).splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      pass  # a line cut short by a killed process
  info_path = run_dir / 'model.json'  # written by resflax train since the zoo studies
  config = config_lib.read_json(config_path, fix='pass the --workdir of another run')
  return {'dir': run_dir, 'name': run_dir.name, 'config': config,
          'rows': rows, 'model_info': json.loads(info_path.read_text()) if info_path.is_file() else None}


def model_cost(model_name: str, num_outputs: int, input_shape=None,
               model_kwargs=None) -> tuple[int, float]:
  """(trainable parameters, forward FLOPs for one example) from XLA's cost analysis."""
  from resflax import costs
  cost = costs.forward_cost(model_name, num_outputs, input_shape, model_kwargs)
  return cost['params'], cost['flops']


def mean_std(values) -> tuple[float, float]:
  """(mean, sample std) of the finite values; (nan, nan) if none, std 0 for a single value."""
  values = [v for v in values if v is not None and v == v]
  if not values:
    return float('nan'), float('nan')
  return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def save_figure(fig, path: pathlib.Path) -> pathlib.Path:
  """``fig`` as a PNG at ``path``, then closed."""
  import matplotlib.pyplot as plt
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def summarize(run: dict) -> dict:
  config, rows = run['config'], run['rows']
  train = [r for r in rows if r['split'] == 'train']
  evals = [r for r in rows if r['split'] == 'eval']
  metric = 'accuracy' if any('accuracy' in r for r in evals) else 'mae'
  best = (max if metric == 'accuracy' else min)((r.get(metric, float('nan')) for r in evals),
                                                 default=float('nan'))
  times = [r['wall_time'] for r in rows if 'wall_time' in r]
  out = {'run': run['name'], 'model': config.get('model'), 'dataset': config.get('dataset'),
         'seed': config.get('seed'), 'steps': max((r['step'] for r in rows), default=0),
         'metric': metric, 'best': best,
         'final': evals[-1].get(metric, float('nan')) if evals else float('nan'),
         'final_loss': evals[-1]['loss'] if evals else float('nan'),
         'minutes': (max(times) - min(times)) / 60 if len(times) > 1 else float('nan'),
         'images_per_sec': statistics.median([r['images_per_sec'] for r in train
                                              if 'images_per_sec' in r] or [float('nan')])}
  try:
    from resflax import config as config_lib
    config_lib.import_modules(config)  # user code that registers the run's model
    info = run.get('model_info') or {'num_outputs': 1 if metric == 'mae' else 10}
    out['params'], out['flops'] = model_cost(config['model'], info['num_outputs'],
                                             info.get('input_shape'), config.get('model_kwargs'))
  except Exception:  # a model this version does not know: report the metrics anyway
    out['params'], out['flops'] = float('nan'), float('nan')
  return out


def markdown_table(summaries: list[dict]) -> str:
  header = ('| run | model | dataset | seed | params | MFLOPs/example | steps | best | final | '
            'final loss | minutes | images/sec |')
  lines = [header, '|' + '---|' * 12]
  for s in summaries:
    params = f"{s['params']:,}" if isinstance(s['params'], int) else '?'
    lines.append(
        f"| {s['run']} | {s['model']} | {s['dataset']} | {s['seed']} | {params} | "
        f"{s['flops'] / 1e6:.2f} | {s['steps']} | {s['metric']} {s['best']:.4f} | "
        f"{s['final']:.4f} | {s['final_loss']:.4f} | {s['minutes']:.2f} | "
        f"{s['images_per_sec']:.0f} |")
  return '\n'.join(lines) + '\n'


def _plot_curves(runs: list[dict], out: pathlib.Path) -> list[pathlib.Path]:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  written = []
  for key in ('loss', 'accuracy', 'mae'):
    if not any(key in r for run in runs for r in run['rows']):
      continue
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in runs:
      for split, style in (('train', '-'), ('eval', 'o--')):
        pts = [(r['step'], r[key]) for r in run['rows'] if r['split'] == split and key in r]
        if pts:
          ax.plot(*zip(*pts), style, label=f"{run['name']} {split}", markersize=3)
    ax.set_xlabel('step')
    ax.set_ylabel(key)
    ax.set_title(f'{key} per step')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    written.append(save_figure(fig, out / f'{key}.png'))
  return written


def network_order(block: str) -> tuple:
  """Input to output, as well as names tell: stems, numbered blocks/stages, then heads."""
  numbers = [int(n) for n in re.findall(r'\d+', block)]
  group = 0 if block.startswith('stem') else 1 if numbers and '/' in block else 2
  return (group, numbers, block)


def _plot_block_grad_norms(runs: list[dict], out: pathlib.Path) -> list[pathlib.Path]:
  """Per-block gradient norm at the first and last logged step of each run, block by block."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  written = []
  for run in runs:
    logged = [r for r in run['rows'] if r['split'] == 'train' and any(
        k.startswith('grad_norm/') for k in r)]
    if not logged:
      continue
    blocks = sorted((k.removeprefix('grad_norm/') for k in logged[0] if k.startswith('grad_norm/')),
                    key=network_order)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(blocks)), 4.5))
    for row, label in ((logged[0], f"step {logged[0]['step']}"),
                       (logged[-1], f"step {logged[-1]['step']}")):
      ax.semilogy(range(len(blocks)), [row[f'grad_norm/{b}'] for b in blocks], 'o-', label=label)
    ax.set_xticks(range(len(blocks)), blocks, rotation=90, fontsize=7)
    ax.set_ylabel('gradient l2 norm')
    ax.set_title(f"{run['name']}: per-block gradient norms")
    ax.grid(alpha=0.3)
    ax.legend()
    written.append(save_figure(fig, out / f"grad_norms_{run['name']}.png"))
  return written


def report(run_dirs: list[str], out_dir: str) -> pathlib.Path:
  """Writes ``OUT/report.md`` (the table and links to the plots) and the PNGs; returns the md."""
  runs = [read_run(d) for d in run_dirs]
  names = [r['name'] for r in runs]
  for run in runs:  # runs from different parents may share a leaf name
    if names.count(run['name']) > 1:
      run['name'] = f"{run['dir'].parent.name}/{run['name']}".replace('/', '_')
  out = pathlib.Path(out_dir)
  try:
    out.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise WorkdirError(f'cannot create --out {str(out)!r} ({e.strerror or e})') from None
  table = markdown_table([summarize(r) for r in runs])
  plots = _plot_curves(runs, out) + _plot_block_grad_norms(runs, out)
  md = out / 'report.md'
  md.write_text('# resflax report\n\n' + table + '\n' +
                ''.join(f'![{p.stem}]({p.name})\n' for p in plots))
  return md

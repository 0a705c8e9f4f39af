"""The benchmark's command line: runs the workers one after the other, prints the tables, writes JSON.

This process imports no framework: every measurement runs in a fresh ``python scripts/bench.py
--worker KIND --model NAME ...`` process (see ``workers.py``) and hands back JSON, so peers never
share a process, a thread pool or a peak RSS, and nothing runs concurrently with a measurement.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import specs, workers

SECTIONS = ('matmul', 'pipeline', 'end-to-end', 'first-step')
# Which module each framework needs (checked before running its workers).
REQUIRES = {'resflax': 'jax', 'keras-tensorflow': 'keras', 'keras-jax': 'keras', 'pytorch': 'torch'}
SHORT = {'resflax': 'resflax', 'keras-tensorflow': 'keras-tf', 'keras-jax': 'keras-jax',
         'pytorch': 'pytorch', **{f'resflax:{v}': f'resflax:{v}' for v in specs.RESFLAX_VARIANTS}}


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog='resflax bench',
      description='Train-step time of resflax vs Keras 3 (TensorFlow and JAX backends) and PyTorch '
                  'on the seed models, plus the input pipeline, one epoch end to end and the time '
                  "to the first step. The peers need the extra: pip install -e '.[bench]'.")
  p.add_argument('--models', nargs='+', default=list(specs.SEED_MODELS), metavar='NAME',
                 help=f"models to time (default: the eight seeds); 'seeds', 'zoo' and 'all' expand. "
                      f"Known: {', '.join(specs.MODELS)}")
  p.add_argument('--frameworks', nargs='+', default=list(specs.FRAMEWORKS),
                 choices=specs.FRAMEWORKS, metavar='NAME',
                 help=f"default: all of {', '.join(specs.FRAMEWORKS)}")
  p.add_argument('--resflax-variants', nargs='*', default=['xla'],
                 choices=sorted(specs.RESFLAX_VARIANTS), metavar='NAME',
                 help='also time resflax on the models with convolutions with these settings, next '
                      "to its defaults (conv_impl='auto'): 'xla' (XLA's convolutions, resflax's "
                      "XLA_FLAGS), 'xla-ynnpack' (jaxlib's own CPU convolutions), 'onednn' "
                      "(default: xla; none: leave empty)")
  p.add_argument('--rounds', type=int, default=1,
                 help='time each model this many times, the frameworks taking turns (for a shared '
                      'machine); each reports the median over the rounds (default 1)')
  p.add_argument('--repeats', type=int, default=5,
                 help='timed repeats per model and framework, after 2 warm-up steps; steps slower '
                      'than 1 s get at most 3 (default 5)')
  p.add_argument('--min-repeat-s', type=float, default=0.3,
                 help='each repeat runs as many steps as fill this many seconds (default 0.3)')
  p.add_argument('--batch-size', type=int, default=0,
                 help="override every model's batch size (default: its experiment config's)")
  p.add_argument('--json', metavar='FILE', help='also write the results as JSON')
  p.add_argument('--skip', nargs='+', default=[], choices=SECTIONS, metavar='PART',
                 help=f"leave out these measurements besides the train steps: {', '.join(SECTIONS)}")
  p.add_argument('--data-dir', default='',
                 help="tfds data dir for mnist_5k (built there offline if missing); '' = tfds' default")
  p.add_argument('--quick', action='store_true',
                 help='a smoke run: 1 repeat, a small matmul, no end-to-end or first-step runs')
  p.add_argument('--worker-timeout', type=float, default=1800,
                 help='seconds before a worker is stopped and reported as failed (default 1800)')
  # Internal: one measurement in this process (the benchmark starts these itself).
  p.add_argument('--worker', help=argparse.SUPPRESS)
  p.add_argument('--conv-impl', default='', help=argparse.SUPPRESS)
  p.add_argument('--model', help=argparse.SUPPRESS)
  p.add_argument('--out', help=argparse.SUPPRESS)
  p.add_argument('--matmul-size', type=int, default=2048, help=argparse.SUPPRESS)
  p.add_argument('--pipeline-seconds', type=float, default=3.0, help=argparse.SUPPRESS)
  return p


def _expand_models(names: list[str]) -> list[str]:
  groups = {'seeds': specs.SEED_MODELS, 'zoo': specs.ZOO_MODELS, 'all': specs.MODELS}
  out = []
  for name in names:
    for model in groups.get(name, (name,)):
      if model not in specs.MODELS:
        raise SystemExit(f"resflax bench: error: unknown model {model!r}: use one of "
                         f"{', '.join(specs.MODELS)} (or seeds, zoo, all)")
      if model not in out:
        out.append(model)
  return out


# ----------------------------------------------------------------------------------------------
# Running workers.
# ----------------------------------------------------------------------------------------------
def _worker_args(args, kind: str, model: str | None, batch_size: int, out: str) -> list[str]:
  cmd = [sys.executable, str(specs.SCRIPT), '--worker', kind, '--out', out,
         '--repeats', str(args.repeats), '--min-repeat-s', str(args.min_repeat_s),
         '--matmul-size', str(args.matmul_size), '--pipeline-seconds', str(args.pipeline_seconds),
         '--data-dir', args.data_dir]
  if model:
    cmd += ['--model', model, '--batch-size', str(batch_size)]
  if kind.startswith('resflax:'):
    cmd += ['--conv-impl', specs.RESFLAX_VARIANTS[kind.split(':', 1)[1]][1]]
  return cmd


def run_worker(args, kind: str, model: str | None = None, batch_size: int = 0) -> dict:
  """Runs one worker process; its JSON result, or ``{'error': ...}``."""
  env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'}
  if kind in specs.KERAS_BACKENDS:
    env['KERAS_BACKEND'] = specs.KERAS_BACKENDS[kind]
  if kind.startswith('resflax'):  # the worker chooses its own flags (resflax.backend)
    from resflax import backend  # pylint: disable=g-import-not-at-top
    env['XLA_FLAGS'] = backend.user_xla_flags()
    if kind != 'resflax':
      env.update(specs.RESFLAX_VARIANTS[kind.split(':', 1)[1]][0])
  with tempfile.TemporaryDirectory(prefix='resflax-bench-') as tmp:
    out = os.path.join(tmp, 'result.json')
    start = time.perf_counter()
    try:
      proc = subprocess.run(_worker_args(args, kind, model, batch_size, out), env=env,
                            capture_output=True, text=True, timeout=args.worker_timeout)
    except subprocess.TimeoutExpired:
      return {'error': f'timed out after {args.worker_timeout:.0f} s'}
    if proc.returncode != 0 or not os.path.exists(out):
      lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
      return {'error': f'exit {proc.returncode}: ' + ' | '.join(lines[-3:])}
    with open(out) as f:
      result = json.load(f)
  result['process_s'] = time.perf_counter() - start
  return result


def combine_rounds(results: list[dict]) -> dict:
  """One result from a model's rounds: the first that ran, its ``step_ms`` the median of theirs
  (each a median of repeats), with ``rounds_ms``; an error if none ran."""
  ok = [r for r in results if 'step_ms' in r]
  if not ok:
    return results[-1]
  out = dict(ok[0])
  out['rounds_ms'] = [r['step_ms'] for r in ok]
  out['step_ms'] = statistics.median(out['rounds_ms'])
  return out


def _log(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def _machine() -> dict:
  info = {'cpu': '?', 'cores': os.cpu_count(), 'avx512': [], 'python': sys.version.split()[0]}
  try:
    lscpu = subprocess.run(['lscpu'], capture_output=True, text=True, timeout=10).stdout
    model = re.search(r'^Model name:\s*(.+)$', lscpu, re.M)
    flags = re.search(r'^Flags:\s*(.+)$', lscpu, re.M)
    info['cpu'] = model.group(1).strip() if model else '?'
    if flags:
      info['avx512'] = sorted(f for f in flags.group(1).split() if f.startswith('avx512'))
      info['avx2'] = 'avx2' in flags.group(1).split()
  except (OSError, subprocess.SubprocessError):
    pass
  return info


def _prepare_mnist_5k(data_dir: str) -> None:
  """Builds mnist_5k and caches its splits as arrays (what any earlier run on the machine did), so
  the timed runs start from a prepared dataset."""
  from resflax import data  # pylint: disable=g-import-not-at-top
  config = workers.mnist_5k_config('mnist_resmlp', data_dir)
  prepared = data.build(config, None)
  prepared.train_arrays(), prepared.eval_arrays()


def time_to_first_step(args, model: str) -> dict:
  """``resflax train ... --config.num_train_steps=1`` in a new process: seconds from its start to
  the end of step 1 (the wall_time of its first metrics row), its whole wall time (with the eval and
  checkpoint that follow) and its peak RSS.

  Three runs, on a prepared mnist_5k (built, its splits cached as arrays): no compilation cache
  (``RESFLAX_COMPILATION_CACHE=off``), then twice with JAX's persistent cache in a fresh directory
  (``JAX_COMPILATION_CACHE_DIR``, every compilation cached, as resflax's default
  ``~/.cache/resflax/jax``): the first fills it, the second hits.
  """
  config_file = specs.CONFIG_DIR / f'{specs.CONFIG_FILES[model]}.py'
  _prepare_mnist_5k(args.data_dir)
  runs = {}
  with tempfile.TemporaryDirectory(prefix='resflax-bench-') as tmp:
    cache_env = {'JAX_COMPILATION_CACHE_DIR': os.path.join(tmp, 'jax-cache'),
                 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'}
    cold_env = {'RESFLAX_COMPILATION_CACHE': 'off'}
    for label, extra_env in (('cold', cold_env), ('cache_fill', cache_env),
                             ('cache_warm', cache_env)):
      workdir = os.path.join(tmp, label)
      cmd = [sys.executable, '-m', 'resflax.cli', 'train', '--config', str(config_file),
             '--workdir', workdir, f'--config.model={model}', '--config.dataset=mnist_5k',
             '--config.num_train_steps=1', '--config.progress=none', '--config.download=False']
      if args.data_dir:
        cmd.append(f'--config.data_dir={args.data_dir}')
      env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3', **extra_env}
      with open(os.path.join(tmp, f'{label}.stderr'), 'w+') as stderr:
        start, start_clock = time.perf_counter(), time.time()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        if proc.returncode != 0:
          runs[label] = {'error': f'exit {proc.returncode}: {stderr.read().strip().splitlines()[-1:]}'}
          continue
      # The train row of step 1 is written (with its wall_time) right after the step's metrics
      # are fetched, before the eval and the checkpoint that end the process.
      with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        step1 = next(row for row in map(json.loads, f) if row['split'] == 'train')
      runs[label] = {'first_step_s': step1['wall_time'] - start_clock, 'wall_s': wall,
                     'peak_rss_mb': usage.ru_maxrss / 1024}
  shown = ['resflax', 'train', '--config', str(config_file.relative_to(specs.CONFIG_DIR.parents[1])),
           '--config.dataset=mnist_5k', '--config.num_train_steps=1', '--workdir', 'W']
  return {'model': model, 'command': shlex.join(shown), **runs}


# ----------------------------------------------------------------------------------------------
# The report.
# ----------------------------------------------------------------------------------------------
def _table(header: list[str], rows: list[list[str]]) -> str:
  widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
  line = lambda r: '| ' + ' | '.join(str(c).ljust(w) for c, w in zip(r, widths)) + ' |'
  return '\n'.join([line(header), '|' + '|'.join('-' * (w + 2) for w in widths) + '|',
                    *map(line, rows)])


def _ms(v: float) -> str:
  return f'{v:.1f}' if v >= 10 else f'{v:.2f}'


def format_report(report: dict) -> str:
  """The tables and the summary lines, as Markdown."""
  results, frameworks, models = report['steps'], report['frameworks'], report['models']
  peak = (report.get('matmul') or {}).get('gflops')
  out = []
  m = report['machine']
  avx512 = 'yes (' + ' '.join(f.replace('avx512', '') for f in m['avx512']) + ')' if m['avx512'] else 'no'
  loads = report['load_1min']
  out.append(f"Machine: {m['cpu']}, {m['cores']} cores, AVX-512: {avx512}. "
             f"1-min load during the run: {min(loads):.2f}-{max(loads):.2f}.")
  if peak:
    out.append(f"fp32 matmul peak ({report['matmul']['n']}^2 jnp.dot): {peak:.0f} GFLOP/s.")
  out.append('')

  def cell(model, fw):
    return results.get(model, {}).get(fw, {'error': 'not run'})

  # 1: step times and ratios.
  header = ['model', 'batch', *(SHORT[f] + ' ms' for f in frameworks)]
  rows = []
  for model in models:
    base = cell(model, 'resflax').get('step_ms')
    row = [model, str(report['batch_sizes'][model])]
    for fw in frameworks:
      r = cell(model, fw)
      if 'step_ms' not in r:
        row.append('n/a')
      elif fw == 'resflax' or not base:
        row.append(_ms(r['step_ms']))
      else:
        row.append(f"{_ms(r['step_ms'])} (x{r['step_ms'] / base:.2f})")
    rows.append(row)
  out.append('Train step, median ms (xN = peer time / resflax time: >1 resflax is faster, '
             '<1 resflax is behind):')
  out.append('')
  out.append(_table(header, rows))
  out.append('')
  # 2: GFLOP/s.
  if 'resflax' in frameworks:
    header = ['model', 'GFLOP/step', *(SHORT[f] + ' GFLOP/s' for f in frameworks)]
    rows = []
    for model in models:
      flops = cell(model, 'resflax').get('flops_per_step')
      if not flops:
        continue
      row = [model, f'{flops / 1e9:.2f}']
      for fw in frameworks:
        r = cell(model, fw)
        if 'step_ms' not in r:
          row.append('n/a')
          continue
        gflops = flops / (r['step_ms'] / 1e3) / 1e9
        row.append(f'{gflops:.1f}' + (f' ({100 * gflops / peak:.0f}%)' if peak else ''))
      rows.append(row)
    out.append("Compute rate: XLA's FLOP count of the resflax step (cost_analysis) / step time"
               + (', (% of the matmul peak):' if peak else ':'))
    out.append('')
    out.append(_table(header, rows))
    out.append('')
  # 3: time to first step and peak RSS per worker.
  header = ['model', *(SHORT[f] for f in frameworks)]
  rows = []
  for model in models:
    row = [model]
    for fw in frameworks:
      r = cell(model, fw)
      row.append(f"{r['first_step_s']:.1f} s / {r['peak_rss_mb']:.0f} MiB" if 'step_ms' in r else 'n/a')
    rows.append(row)
  out.append('Per-framework process: time to first step (start, imports, build, compile/trace, '
             'step 1) / peak RSS:')
  out.append('')
  out.append(_table(header, rows))
  out.append('')
  modes = {fw: next((cell(m, fw)['mode'] for m in models if cell(m, fw).get('mode')), None)
           for fw in frameworks}
  out.append('Timed as: ' + '; '.join(f'{SHORT[fw]}: {mode}' for fw, mode in modes.items() if mode)
             + '. Each model trains with the optimizer of its experiment config in every framework: '
             'Adam with AMSGrad (classifiers), plain Adam (steering); the zoo models, whose configs '
             'use SGD, with Adam + AMSGrad. Losses: softmax cross-entropy (10 classes), MSE (steering).')
  if report.get('pipeline'):
    p = report['pipeline']
    out.append(f"Input pipeline alone (tf.data, mnist_5k, {p['model']} batch {p['batch_size']}): "
               f"{p['images_per_sec']:,.0f} images/s.")
  for e in report.get('end_to_end', []):
    step = cell(e['model'], 'resflax').get('step_ms')
    step_ips = e['batch_size'] / (step / 1e3) if step else None
    parts = []
    for feed, f in e['feeds'].items():
      ratio = f" = {f['images_per_sec'] / step_ips:.2f}" if step_ips else ''
      parts.append(f"{feed} {f['images_per_sec']:,.0f} images/s{ratio} (whole call {f['wall_s']:.1f} s)")
    out.append(f"End to end ({e['model']}, batch {e['batch_size']}: median of epochs 2-{e['epochs']} "
               f"of a {e['epochs']}-epoch train_and_evaluate on mnist_5k, input + transfer + steps + "
               f"metrics; ratio to the step alone"
               + (f', {step_ips:,.0f} images/s' if step_ips else '') + '): ' + '; '.join(parts)
               + f"; peak RSS {e['peak_rss_mb']:.0f} MiB.")
  for t in report.get('first_step', []):
    parts = []
    for label, name in (('cold', 'no cache'), ('cache_fill', 'filling a JAX persistent cache'),
                        ('cache_warm', 'warm cache')):
      r = t.get(label, {})
      parts.append(f"{name} {r['first_step_s']:.1f} s ({r['wall_s']:.1f} s)" if 'wall_s' in r
                   else f"{name}: {r.get('error')}")
    rss = t.get('cold', {}).get('peak_rss_mb')
    out.append(f"Time to first step of `{t['command']}` (in brackets: the whole process, with the "
               "eval and checkpoint after it): " + ', '.join(parts)
               + (f'; peak RSS {rss:.0f} MiB.' if rss else '.'))
  for fw in frameworks:
    b = next((cell(m, fw)['backend'] for m in models if cell(m, fw).get('backend')), None)
    if b:
      impl = f", conv_impl={b['conv_impl']}" if 'conv_impl' in b else ''
      out.append(f"{SHORT[fw]}: XLA_FLAGS={b['xla_flags'] or '(none)'!r}, XLA:CPU convolutions "
                 f"on {b.get('xla_cpu_convolutions', '-')}{impl}.")
  if any(len(cell(m, fw).get('rounds_ms', ())) > 1 for m in models for fw in frameworks):
    out.append('Each time is the median of the rounds, in which the frameworks took turns.')
  for note in report.get('notes', []):
    out.append(note)
  return '\n'.join(out)


def json_rows(report: dict) -> list[dict]:
  rows = []
  for model in report['models']:
    flops = report['steps'].get(model, {}).get('resflax', {}).get('flops_per_step')
    for fw in report['frameworks']:
      r = report['steps'].get(model, {}).get(fw, {})
      if 'step_ms' not in r:
        continue
      bs = report['batch_sizes'][model]
      rows.append({'model': model, 'framework': fw, 'batch_size': bs, 'step_ms': r['step_ms'],
                   'images_per_sec': bs / (r['step_ms'] / 1e3),
                   'gflops': flops / (r['step_ms'] / 1e3) / 1e9 if flops else None,
                   'first_step_s': r['first_step_s'], 'peak_rss_mb': r['peak_rss_mb'],
                   'repeats_ms': r['repeats_ms'], 'device': r.get('device'), 'mode': r.get('mode'),
                   'rounds_ms': r.get('rounds_ms'), 'backend': r.get('backend')})
  return rows


# ----------------------------------------------------------------------------------------------
# main.
# ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  if args.worker:  # one measurement, in this process
    result = workers.run(args)
    with open(args.out, 'w') as f:
      json.dump(result, f)
    return 0

  if args.quick:
    args.repeats, args.min_repeat_s, args.matmul_size, args.pipeline_seconds = 1, 0.0, 256, 0.2
    args.skip = sorted(set(args.skip) | {'end-to-end', 'first-step'})
  models = _expand_models(args.models)
  frameworks = [f for f in specs.FRAMEWORKS if f in args.frameworks]
  if 'resflax' in frameworks and any(specs.has_convolutions(m) for m in models):
    at = frameworks.index('resflax') + 1
    frameworks[at:at] = [f'resflax:{v}' for v in dict.fromkeys(args.resflax_variants)]
  notes = []
  for fw in list(frameworks):
    module = REQUIRES[fw.split(':')[0]]
    if importlib.util.find_spec(module) is None:
      notes.append(f"{fw}: not run, {module} is not installed: pip install -e '.[bench]' (Keras 3 "
                   'and PyTorch, the peers).')
      _log(f'resflax bench: {notes[-1]}')
      frameworks.remove(fw)
  if not frameworks:
    raise SystemExit("resflax bench: error: none of the frameworks asked for can run here: "
                     "pip install -e '.[bench]' installs the peers (Keras 3 and PyTorch)")
  report = {'command': shlex.join(['resflax', 'bench', *(argv if argv is not None else sys.argv[1:])]),
            'machine': _machine(), 'models': models, 'frameworks': frameworks, 'steps': {},
            'batch_sizes': {}, 'load_1min': [os.getloadavg()[0]], 'notes': notes}
  start = time.perf_counter()

  def record(result: dict) -> dict:
    if 'load_1min' in result:
      report['load_1min'].append(result['load_1min'])
    return result

  if 'matmul' not in args.skip:
    report['matmul'] = record(run_worker(args, 'matmul'))
    if 'error' in report['matmul']:
      notes.append(f"matmul peak: {report['matmul'].pop('error')}")
      report['matmul'] = None
    else:
      _log(f"matmul peak: {report['matmul']['gflops']:.0f} GFLOP/s")
  for model in models:
    bs = args.batch_size or specs.bench_config(model).batch_size
    report['batch_sizes'][model] = bs
    runs = {}
    for round_ in range(max(1, args.rounds)):  # the frameworks take turns: the same load for all
      for fw in frameworks:
        if fw.startswith('resflax:') and not specs.has_convolutions(model):
          continue
        r = record(run_worker(args, fw, model, bs))
        runs.setdefault(fw, []).append(r)
        status = f"{r['step_ms']:.2f} ms" if 'step_ms' in r else r['error']
        _log(f"{model} (batch {bs}) {fw}{f' round {round_ + 1}' if args.rounds > 1 else ''}: "
             f"{status}  [load {os.getloadavg()[0]:.2f}, {time.perf_counter() - start:.0f} s]")
    for fw, results in runs.items():
      report['steps'].setdefault(model, {})[fw] = r = combine_rounds(results)
      if 'error' in r:
        notes.append(f'{model} / {fw}: {r["error"]}')
  loop_models = [m for m in specs.LOOP_MODELS if m in models]
  if 'pipeline' not in args.skip:
    r = record(run_worker(args, 'pipeline', 'mnist_resmlp', 0))
    report['pipeline'] = None if 'error' in r else r
    _log(f"input pipeline: {r['images_per_sec']:,.0f} images/s" if 'images_per_sec' in r
         else f"input pipeline: {r.get('error')}")
    if 'error' in r:
      notes.append(f"input pipeline: {r['error']}")
  if 'end-to-end' not in args.skip and 'resflax' in frameworks:
    report['end_to_end'] = []
    for model in loop_models:
      r = record(run_worker(args, 'end-to-end', model, 0))
      _log(f"end to end {model}: {r.get('feeds', r.get('error'))}")
      if 'error' in r:
        notes.append(f'end to end {model}: {r["error"]}')
      else:
        report['end_to_end'].append(r)
  if 'first-step' not in args.skip:
    report['first_step'] = []
    for model in loop_models:
      report['first_step'].append(time_to_first_step(args, model))
      report['load_1min'].append(os.getloadavg()[0])
      _log(f"time to first step {model}: {report['first_step'][-1]}")
  report['total_s'] = time.perf_counter() - start
  text = format_report(report)
  print(text)
  print(f'\n(benchmark took {report["total_s"]:.0f} s: {report["command"]})')
  if args.json:
    payload = {'rows': json_rows(report), **{k: v for k, v in report.items() if k != 'notes'},
               'notes': notes}
    pathlib.Path(args.json).write_text(json.dumps(payload, indent=1, default=str) + '\n')
  return 0

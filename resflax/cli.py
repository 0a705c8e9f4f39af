"""``resflax train | eval | summary``: wiring only.

  resflax train --config experiments/configs/mnist_resmlp.py --config.dataset=mnist_5k --workdir runs/q
  resflax eval --workdir runs/q
  resflax summary --config experiments/configs/mnist_resmlp.py
  resflax models                                   # the registered model presets
  resflax report runs/a runs/b --out reports/ab        # markdown table + PNG plots
  resflax export --workdir runs/steering --out exported/   # TF SavedModel + TFLite for a Donkeycar
  resflax bench --models mnist_resmlp --json bench.json     # step time vs Keras 3 and PyTorch
  resflax sweep --config C --root runs/s --grid seed=0,1,2  # runs one after another (or --print-only)
  resflax analyze paths --workdir runs/q --out analysis/q   # paths | landscape | hessian | signal

Bad input (a ``ResflaxError``) is printed as one line, ``resflax: error: ...``, with exit code 2
(1 for a checkpoint that could not be saved). Ctrl-C saves the current step and exits 130.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import warnings

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # before TensorFlow is imported anywhere

USAGE_EXIT = 2
INTERRUPT_EXIT = 130  # 128 + SIGINT (Ctrl-C)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='resflax', description=__doc__.split('\n\n')[0])
  sub = parser.add_subparsers(dest='command', required=True)
  train = sub.add_parser('train', help='train (or resume) an experiment in --workdir')
  train.add_argument('--config', required=True, help='an experiments/configs/*.py file')
  train.add_argument('--workdir', required=True, help='run directory: checkpoints, metrics, config')
  evaluate = sub.add_parser('eval', help='evaluate the latest checkpoint of --workdir')
  evaluate.add_argument('--workdir', required=True)
  summary = sub.add_parser('summary', help='the model table and its parameter counts')
  summary.add_argument('--config', required=True)
  listing = sub.add_parser('models', help='the registered model presets, their sources and sizes')
  listing.add_argument('names', nargs='*', metavar='NAME', help='only these (default: all)')
  listing.add_argument('--imports', action='append', default=[], metavar='MODULE',
                       help='import MODULE first (user code that registers models)')
  report = sub.add_parser('report', help='a markdown table + PNG plots from run directories')
  report.add_argument('runs', nargs='+', metavar='RUN_DIR', help='--workdir of resflax train runs')
  report.add_argument('--out', required=True, help='directory for report.md and the PNGs')
  export = sub.add_parser('export', help='a trained steering model as TF SavedModel + TFLite')
  export.add_argument('--workdir', required=True, help='run directory with a checkpoint')
  export.add_argument('--out', required=True, help='new directory for saved_model/, model.tflite')
  export.add_argument('--throttle', type=float, default=None,
                      help="also output this constant throttle (Donkeycar's KerasLinear layout)")
  export.add_argument('--no-tflite', dest='tflite', action='store_false', help='SavedModel only')
  analyze = sub.add_parser('analyze', help='an instrument on a run: paths, landscape, hessian, '
                           'signal (resflax.analysis)')
  analyze.add_argument('kind', metavar='KIND', help='paths | landscape | hessian | signal')
  analyze.add_argument('--workdir', required=True, help='run directory (resflax train --workdir)')
  analyze.add_argument('--out', required=True, help='directory for KIND.json and the PNGs')
  analyze.add_argument('--num_examples', type=int, default=1000,
                       help='the first N examples of the evaluation split (default 1000)')
  analyze.add_argument('--init', action='store_true',
                       help='the model at initialisation instead of the latest checkpoint')
  analyze.add_argument('--seed', type=int, default=0, help='seed of the random draws (default 0)')
  # Their own options (resflax bench --help, resflax sweep --help) are parsed by those modules.
  sub.add_parser('sweep', add_help=False,
                 help='an experiment over a grid of config values: runs them, prints the commands')
  sub.add_parser('bench', add_help=False,
                 help="train-step speed vs Keras 3 and PyTorch (a checkout with pip install -e '.[bench]')")
  return parser


def _summary(config) -> str:
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from resflax import config as config_lib
  from resflax import data as data_lib
  from resflax import models
  from resflax.train import steps
  config_lib.import_modules(config)
  spec = models.get_spec(config.model)
  task = spec.task or steps.task_of(config.loss)
  if spec.input_shape is not None:
    input_shape, num_outputs = spec.input_shape, 10 if task == 'classification' else 1
  else:  # a model that takes the dataset's shape: the dataset says what it is
    data = data_lib.build(config, None)
    input_shape, num_outputs = data.input_shape, data.info.num_classes or 1
  model = models.from_config(config, num_outputs=num_outputs)
  x = jnp.zeros((1, *input_shape), jnp.float32)
  table = nn.tabulate(model, jax.random.key(0), compute_flops=True,
                      console_kwargs={'width': 160, 'force_terminal': False})(x, train=False)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  count = lambda tree: sum(int(leaf.size) for leaf in jax.tree.leaves(tree))
  trainable = count(variables['params'])
  non_trainable = count({k: v for k, v in variables.items() if k != 'params'})
  return f'{table}\ntrainable_params={trainable} non_trainable_params={non_trainable}'


def _models_table(names: list[str], imports: list[str]) -> str:
  """``resflax models``: each preset's task, input shape, parameter count there, and source."""
  from resflax import config as config_lib
  from resflax import models
  from resflax.errors import UnknownNameError
  config_lib.import_modules({'imports': tuple(imports)})
  unknown = [n for n in names if n not in models.MODELS]
  if unknown:
    raise UnknownNameError(f"unknown model {unknown[0]!r}: `resflax models` lists the registered "
                           'names (add --imports mypkg.models for your own)')
  rows = ['| model | task | input | params | defaults | source |', '|---|---|---|---|---|---|']
  for name in names or sorted(models.MODELS):
    spec = models.MODELS[name]
    shape = 'x'.join(map(str, spec.input_shape)) if spec.input_shape else 'dataset'
    if spec.input_shape is None:
      params = '-'
    else:
      module = models.build(name, num_outputs=10 if spec.task != 'regression' else 1)
      params = f'{models.count_params(module, spec.input_shape):,}'
    defaults = ', '.join(f'{k}={v}' for k, v in spec.defaults.items())
    if spec.any_image_size and spec.input_shape:
      shape += ' (any size)'
    rows.append(f'| {name} | {spec.task or "any"} | {shape} | {params} | {defaults} | '
                f'{spec.source} |')
  return '\n'.join(rows)


# The benchmark's entry point in the checkout (absent where resflax is installed from a wheel).
BENCH_SCRIPT = pathlib.Path(__file__).resolve().parents[1] / 'scripts' / 'bench.py'


def _bench(argv: list[str]) -> int:
  """``resflax bench``: ``scripts/bench.py`` of the checkout resflax runs from, in a new process.

  The benchmark (``benchmarks/``: the runner, its workers, the Keras and PyTorch replicas) times
  the experiments of ``experiments/configs`` and is not installed with resflax.
  """
  from resflax.errors import ResflaxError
  if not BENCH_SCRIPT.is_file():
    raise ResflaxError('resflax bench runs from a source checkout of resflax (the benchmark and '
                       'the experiment configs it times are not installed): clone the repository, '
                       "pip install -e '.[bench]' there, then run resflax bench")
  return subprocess.run([sys.executable, str(BENCH_SCRIPT), *argv], check=False).returncode


DEFAULT_COMPILATION_CACHE = os.path.join('~', '.cache', 'resflax', 'jax')


def enable_compilation_cache() -> str | None:
  """Turns on JAX's persistent compilation cache, so that a rerun (a resume, an eval, the next run
  of a sweep) loads its compiled steps from disk instead of compiling them again.

  ``$RESFLAX_COMPILATION_CACHE``: the directory (default ``~/.cache/resflax/jax``); ``off``
  disables it. A cache dir the user gave JAX itself (``$JAX_COMPILATION_CACHE_DIR``) is kept.
  Returns the directory in use, or None.
  """
  import jax
  setting = os.environ.get('RESFLAX_COMPILATION_CACHE', DEFAULT_COMPILATION_CACHE)
  if setting.strip().lower() in ('', 'off', '0', 'false', 'none'):
    return None
  if jax.config.jax_compilation_cache_dir:
    return jax.config.jax_compilation_cache_dir
  path = os.path.expanduser(setting)
  try:
    os.makedirs(path, exist_ok=True)
  except OSError:
    return None  # an unwritable home: run without the cache
  jax.config.update('jax_compilation_cache_dir', path)
  # Cache every step, not only those that compile for longer than JAX's default of 1 s.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  return path


def main(argv: list[str] | None = None) -> int:
  from resflax import logs
  from resflax.errors import ResflaxError
  args, rest = _parser().parse_known_args(argv)
  warnings.formatwarning = lambda message, category, *_: f'resflax: warning: {message}\n'
  logs.show_on_stderr()  # the library's log records: one line each (resflax: warning: ...)
  if args.command in ('train', 'eval', 'sweep', 'export', 'summary', 'analyze'):
    enable_compilation_cache()
  try:
    if args.command == 'bench':
      return _bench(rest)
    if args.command == 'sweep':
      from resflax import sweep
      return sweep.main(rest)
    from resflax import config as config_lib
    if args.command == 'models':
      if rest:
        raise ResflaxError(f'unexpected arguments {rest}: models takes [NAME...] [--imports M]')
      print(_models_table(args.names, args.imports))
      return 0
    if args.command == 'export':
      if rest:
        raise ResflaxError(f'unexpected arguments {rest}: export takes --workdir, --out, '
                           '--throttle, --no-tflite')
      from resflax import export
      summary = export.export(args.workdir, args.out, throttle=args.throttle, tflite=args.tflite)
      print(json.dumps(summary, indent=2))
      return 0
    if args.command == 'report':
      if rest:
        raise ResflaxError(f'unexpected arguments {rest}: report takes RUN_DIR... --out DIR')
      from resflax import report
      print(report.report(args.runs, args.out))
      return 0
    if args.command == 'analyze':
      if rest:
        raise ResflaxError(f'unexpected arguments {rest}: analyze takes KIND --workdir --out '
                           '[--num_examples N] [--init] [--seed S]')
      from resflax import analysis
      result = analysis.analyze(args.kind, args.workdir, args.out, num_examples=args.num_examples,
                                init=args.init, seed=args.seed)
      print(f"analyze {args.kind}: {os.path.join(args.out, args.kind + '.json')} "
            f"{' '.join(result['figures'])} ({result['seconds']:.1f} s)")
      return 0
    if args.command == 'eval':
      if rest:
        raise ResflaxError(f'unexpected arguments {rest}: eval takes only --workdir')
      from resflax import train
      metrics = train.evaluate(args.workdir)
      print('eval ' + ' '.join(f'{k}={v:.4f}' if isinstance(v, float) else f'{k}={v}'
                               for k, v in metrics.items()))
      return 0
    config = config_lib.from_args(args.config, config_lib.split_overrides(rest))
    if args.command == 'summary':
      print(_summary(config))
      return 0
    from resflax import train
    result = train.train_and_evaluate(config, args.workdir)
    if 'interrupted_at_step' in result:
      print(f"resflax: interrupted at step {result['interrupted_at_step']}, saved; run the same "
            'command to resume', file=sys.stderr, flush=True)
      return INTERRUPT_EXIT
    if argv is None:  # the resflax program (not a caller's process): the run is saved, so a
      signal.signal(signal.SIGTERM, signal.SIG_IGN)  # late SIGTERM must not make its exit -15
    print('final ' + ' '.join(f'{k}={v:.4f}' if isinstance(v, float) else f'{k}={v}'
                              for k, v in result.items()), flush=True)
    return 0
  except ResflaxError as e:
    print(f'resflax: error: {e}', file=sys.stderr)
    return getattr(e, 'exit_code', USAGE_EXIT)
  except KeyboardInterrupt:  # Ctrl-C outside the train loop (multi-process: anywhere)
    hint = ('; nothing saved since the last checkpoint: run the same command to resume'
            if args.command in ('train', 'sweep') else '')
    print(f'\nresflax: interrupted{hint}', file=sys.stderr, flush=True)
    return INTERRUPT_EXIT


if __name__ == '__main__':
  sys.exit(main())

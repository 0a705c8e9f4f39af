"""``resflax sweep``: one experiment over a grid of config values, run after run, or as a command list.

  resflax sweep --config experiments/configs/mnist_resmlp.py --root runs/sweep \\
      --grid seed=0,1,2 --grid model=mnist_resmlp,mnist_densesum_mlp --config.dataset=mnist_5k

runs the 6 combinations one after another here (each in its own ``ROOT/<name>`` workdir, named after
its grid values, e.g. ``model-mnist_resmlp_seed-0``; tuple values as
``--grid 'roi_crop=(0,0,0,0);(10,0,0,0)'``), and first prints one ``resflax train`` command
per run, one per line, ready for a cluster scheduler (``--print-only`` stops there). Rerunning the
sweep resumes each run from its checkpoint; a finished run only re-evaluates. ``--config.*``
overrides after the grid apply to every run. The studies in ``scripts/`` are built on ``Run`` and
``run_all``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import dataclasses
import itertools
import re
import shlex
import subprocess
import sys
import time

from resflax.errors import ConfigError

INTERRUPTED = 130  # a run's exit code after Ctrl-C (saved; the same command resumes)


@dataclasses.dataclass(frozen=True)
class Run:
  """One ``resflax train`` invocation: a config file, a workdir, and ``--config.k=v`` overrides."""

  config: str
  workdir: str
  overrides: tuple[tuple[str, str], ...] = ()

  def argv(self) -> list[str]:
    return ['resflax', 'train', '--config', self.config, '--workdir', self.workdir,
            *(f'--config.{k}={v}' for k, v in self.overrides)]

  def command(self) -> str:
    return shlex.join(self.argv())


def _split_values(item: str, values: str) -> list[str]:
  """``'0,1'`` -> ``['0', '1']``; ``'(0,0,0,0);(10,0,0,0)'`` or ``'(0,0,0,0),(10,0,0,0)'`` ->
  ``['(0,0,0,0)', '(10,0,0,0)']``: ``,`` and ``;`` separate values outside brackets."""
  parts, depth, current = [], 0, ''
  for char in values:
    if char in '([{':
      depth += 1
    elif char in ')]}':
      depth -= 1
      if depth < 0:
        break
    if char in ',;' and depth == 0:
      parts.append(current)
      current = ''
    else:
      current += char
  if depth != 0:
    raise ConfigError(f'--grid {item!r}: unbalanced brackets; write tuple values as '
                      "--grid 'key=(0,0,0,0);(10,0,0,0)'")
  parts = [p.strip() for p in [*parts, current]]
  if not all(parts):
    raise ConfigError(f'--grid {item!r} has an empty value: write --grid key=v1,v2,...')
  return parts


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
  """``['seed=0,1,2', 'model=a,b']`` -> ``[('seed', ['0', '1', '2']), ('model', ['a', 'b'])]``.

  Values are separated by ``,`` or ``;`` outside brackets, so tuple values are written as they
  are: ``'roi_crop=(0,0,0,0);(10,0,0,0)'`` (quote them for the shell). A key given twice is an
  error (put all its values in one ``--grid``).
  """
  grid, seen = [], set()
  for item in items:
    key, sep, values = item.partition('=')
    key = key.removeprefix('--config.').removeprefix('config.')
    if not sep or not key or not values.strip():
      raise ConfigError(f'--grid {item!r}: write --grid key=v1,v2,... (e.g. --grid seed=0,1,2)')
    if key in seen:
      raise ConfigError(f'--grid {key} is given twice: put all its values in one --grid '
                        f'{key}=v1,v2,...')
    seen.add(key)
    grid.append((key, _split_values(item, values)))
  return grid


def _slug(text: str) -> str:
  return re.sub(r'[^A-Za-z0-9_.+-]+', '_', text).strip('_') or 'x'


def grid_runs(config: str, root: str, grid: list[tuple[str, list[str]]],
              common: list[tuple[str, str]] = ()) -> list[Run]:
  """Every combination of the grid values (first key outermost), each in ``root/<k-v_k-v>``."""
  runs = []
  keys = [k for k, _ in grid]
  for values in itertools.product(*(v for _, v in grid)):
    name = '_'.join(f'{_slug(k.split(".")[-1])}-{_slug(v)}' for k, v in zip(keys, values)) or 'run'
    runs.append(Run(config, f'{root.rstrip("/")}/{name}', (*common, *zip(keys, values))))
  return runs


def check(runs: list[Run]) -> None:
  """Loads every run's config with its overrides, so a bad key fails before the first run starts."""
  from resflax import config as config_lib
  for run in runs:
    config_lib.from_args(run.config, list(run.overrides))


def run_all(runs: list[Run], *,
            main: Callable[[list[str]], int] | None = None) -> list[tuple[Run, int, float]]:
  """Runs each after the other; returns ``(run, exit code, seconds)``. A failed run does not stop
  the others. ``main``: run each here by calling it with the arguments (``resflax.cli.main``;
  saves the start-up of each process) instead of in a new process."""
  results = []
  for i, run in enumerate(runs, 1):
    print(f'[{i}/{len(runs)}] {run.command()}', flush=True)
    start = time.perf_counter()
    if main is not None:
      code = main(run.argv()[1:])
    else:
      proc = subprocess.Popen([sys.executable, '-m', 'resflax.cli', *run.argv()[1:]])
      try:
        code = proc.wait()
      except KeyboardInterrupt:  # Ctrl-C reached the run too: it saves and exits (130)
        code = proc.wait()
    results.append((run, code, time.perf_counter() - start))
    if code == INTERRUPTED:  # Ctrl-C: the sweep stops with its run
      break
  return results


def main(argv: list[str]) -> int:
  from resflax import config as config_lib
  parser = argparse.ArgumentParser(prog='resflax sweep', description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', required=True, help='an experiments/configs/*.py file')
  parser.add_argument('--root', required=True, help='parent directory of the run workdirs')
  parser.add_argument('--grid', action='append', default=[], metavar='KEY=V1,V2',
                      help='a config key and its values; repeat for a product grid')
  parser.add_argument('--print-only', action='store_true',
                      help='print the commands (one per run) and run nothing')
  args, rest = parser.parse_known_args(argv)
  runs = grid_runs(args.config, args.root, parse_grid(args.grid), config_lib.split_overrides(rest))
  check(runs)
  print('\n'.join(run.command() for run in runs), flush=True)
  if args.print_only:
    return 0
  failed = False
  results = run_all(runs)
  for run, code, seconds in results:
    print(f'{seconds:8.1f} s  {run.workdir}')
    if code == INTERRUPTED:
      print(f'resflax: sweep interrupted at run {run.workdir} ({len(results)} of {len(runs)}): '
            'rerun the same sweep to resume', file=sys.stderr)
      return INTERRUPTED
    if code != 0:
      failed = True
      print(f'resflax: error: run {run.workdir} failed (exit {code}): rerun it with '
            f'{run.command()}', file=sys.stderr)
  return 1 if failed else 0

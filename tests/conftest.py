"""Shared fixtures: an offline tfds data_dir with mnist_5k, and a helper to run the CLI."""

import atexit
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

# One persistent compilation cache for the whole test run, in a temporary directory: this process
# and every `resflax` process that the tests start (through $RESFLAX_COMPILATION_CACHE) compile a
# step that an earlier test compiled only once. A cached executable is the one XLA compiled, so no
# number changes. The tests of the cache itself give it their own directory
# (tests/test_cli.py); a test that must compile afresh sets RESFLAX_COMPILATION_CACHE=off
# (tests/test_train.py). RESFLAX_COMPILATION_CACHE set outside (e.g. `off`) is kept.
if 'RESFLAX_COMPILATION_CACHE' not in os.environ:
  SESSION_CACHE = tempfile.mkdtemp(prefix='resflax-tests-jax-cache-')
  atexit.register(shutil.rmtree, SESSION_CACHE, ignore_errors=True)
  os.environ['RESFLAX_COMPILATION_CACHE'] = SESSION_CACHE

# Compile for the test, not for speed at run time. Most tests run a few steps of a small model,
# where XLA:CPU's compilation is most of the time: LLVM at -O0, without its expensive passes and
# with the classic fusion emitters compiles such a step 5-8x faster (a ResNet-8 train step: 6.7 s
# -> 1.2 s on a 2-core EPYC) and runs it slower. The numbers a test compares come from the same
# flags on both sides. A test of what a user's run computes bit for bit, or that trains long
# enough for run time to count, starts `resflax` with `production_xla_env()`.
# RESFLAX_TEST_XLA=production runs the whole suite with the user's flags.
FAST_COMPILE_XLA_FLAGS = ('--xla_backend_optimization_level=0',
                          '--xla_llvm_disable_expensive_passes=true',
                          '--xla_cpu_use_fusion_emitters=false')
_TEST_XLA = os.environ.get('RESFLAX_TEST_XLA', 'fast')
if _TEST_XLA not in ('fast', 'production'):
  raise pytest.UsageError(f'RESFLAX_TEST_XLA={_TEST_XLA!r}: use fast (the default) or production')
if _TEST_XLA == 'fast':  # (once: pytest-xdist's workers inherit it)
  _flags = os.environ.get('XLA_FLAGS', '').split()
  os.environ['XLA_FLAGS'] = ' '.join(_flags + [f for f in FAST_COMPILE_XLA_FLAGS if f not in _flags])

from resflax import cli  # pylint: disable=g-import-not-at-top
from resflax import data  # pylint: disable=g-import-not-at-top

cli.enable_compilation_cache()  # in this process too, as `resflax train` does

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = REPO / 'experiments' / 'configs'


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """A tfds data_dir holding mnist_5k, built once per session (offline, a few seconds)."""
  path = str(tmp_path_factory.mktemp('tfds'))
  data.prepared_builder('mnist_5k', path, download=False)
  return path


def production_xla_env() -> dict[str, str]:
  """``run_cli``'s ``env`` for a process that compiles as a user's run does (``XLA_FLAGS``
  without ``FAST_COMPILE_XLA_FLAGS``)."""
  flags = os.environ.get('XLA_FLAGS', '').split()
  return {'XLA_FLAGS': ' '.join(f for f in flags if f not in FAST_COMPILE_XLA_FLAGS)}


def _python(argv, what, env, timeout, check):
  """``python ARGV`` in a new process from the checkout (quiet TensorFlow, ``env`` on top of this
  one's); returns the CompletedProcess (text output)."""
  full_env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3', **(env or {})}
  result = subprocess.run([sys.executable, *argv], cwd=REPO, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
  if check and result.returncode != 0:
    raise AssertionError(f'{what} failed ({result.returncode}):\n{result.stderr[-3000:]}')
  return result


def run_cli(*args, env=None, timeout=600, check=False):
  """``resflax ARGS`` in a new process; returns the CompletedProcess (text output)."""
  return _python(['-m', 'resflax.cli', *map(str, args)], f'resflax {args}', env, timeout, check)


def run_cli_commands(*commands, env=None, timeout=600):
  """Several ``resflax`` commands (each a sequence of arguments), one after the other in one new
  process (it compiles each step once); stops at the first that fails, and asserts none did."""
  commands = [[str(a) for a in c] for c in commands]
  code = f'import sys\nfrom resflax import cli\nfor c in {commands!r}:\n  cli.main(c) and sys.exit(1)'
  _python(['-c', code], f'resflax {commands}', env, timeout, check=True)


def run_in_process(*args):
  """``resflax ARGS`` in this process, where the test needs no process of its own (no import, and
  the steps this process compiled before are reused); asserts exit code 0."""
  code = cli.main([str(a) for a in args])
  assert code == 0, f'resflax {args} exited with {code}'


def main_in_process(capsys, *args):
  """``resflax ARGS`` in this process; returns (exit code, stdout, stderr)."""
  code = cli.main([str(a) for a in args])
  out = capsys.readouterr()
  return code, out.out, out.err


def error_line(err: str) -> str:
  """The one ``resflax: error:`` line of ``err`` (asserted to be exactly one)."""
  lines = [l for l in err.splitlines() if l.startswith('resflax: error:')]
  assert len(lines) == 1, err
  return lines[0]


def read_metrics(workdir, drop_wall_clock=True):
  """The rows of ``workdir/metrics.jsonl``, without the fields that depend on the wall clock."""
  from resflax.train.writers import WALL_CLOCK_FIELDS
  rows = [json.loads(line) for line in (pathlib.Path(workdir) / 'metrics.jsonl').read_text().splitlines()]
  if drop_wall_clock:
    rows = [{k: v for k, v in row.items() if k not in WALL_CLOCK_FIELDS} for row in rows]
  return rows


# A short run: 62 steps = 2 epochs of mnist_5k at batch 128, logs every 5, checkpoints every 10.
SHORT = ('--config.dataset=mnist_5k', '--config.log_every_steps=5',
         '--config.checkpoint_every_steps=10')


def short_run_args(data_dir, workdir, *extra):
  return ('train', '--config', CONFIGS / 'mnist_resmlp.py', *SHORT, f'--config.data_dir={data_dir}',
          '--workdir', workdir, *extra)


@pytest.fixture(scope='session')
def reference_run(data_dir, tmp_path_factory):
  """62 steps of the seed residual MLP in one uninterrupted single-device process (this one:
  tests/test_train.py checks that `resflax train` in a new process gives the same numbers)."""
  workdir = tmp_path_factory.mktemp('reference')
  run_in_process(*short_run_args(data_dir, workdir, '--config.num_train_steps=62'))
  return workdir


def load_checkpoint(checkpoint_dir):
  """The train state saved in ``checkpoint_dir`` (e.g. ``W/checkpoints/62``) as numpy arrays."""
  import jax
  import orbax.checkpoint as ocp
  path = (pathlib.Path(checkpoint_dir) / 'state').absolute()
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # whatever topology saved it
  with ocp.StandardCheckpointer() as ckptr:
    tree = ckptr.metadata(path).item_metadata.tree
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
    return ckptr.restore(path, target)

"""Shared fixtures: an offline tfds data_dir with mnist_5k, and a helper to run the CLI."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

# Tests compile into a fresh process each time, as a first run does; tests/test_cli.py checks the
# persistent compilation cache on its own directory.
os.environ.setdefault('RESFLAX_COMPILATION_CACHE', 'off')

from resflax import data  # pylint: disable=g-import-not-at-top

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = REPO / 'experiments' / 'configs'


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """A tfds data_dir holding mnist_5k, built once per session (offline, a few seconds)."""
  path = str(tmp_path_factory.mktemp('tfds'))
  data.prepared_builder('mnist_5k', path, download=False)
  return path


def run_cli(*args, env=None, timeout=600, check=False):
  """``resflax ARGS`` in a new process; returns the CompletedProcess (text output)."""
  full_env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3', **(env or {})}
  result = subprocess.run([sys.executable, '-m', 'resflax.cli', *map(str, args)], cwd=REPO,
                          env=full_env, capture_output=True, text=True, timeout=timeout)
  if check and result.returncode != 0:
    raise AssertionError(f'resflax {args} failed ({result.returncode}):\n{result.stderr[-3000:]}')
  return result


def main_in_process(capsys, *args):
  """``resflax ARGS`` in this process; returns (exit code, stdout, stderr)."""
  from resflax import cli
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
  """62 steps of the seed residual MLP in one uninterrupted single-device process."""
  workdir = tmp_path_factory.mktemp('reference')
  run_cli(*short_run_args(data_dir, workdir, '--config.num_train_steps=62'), check=True)
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

"""Shared fixtures: an offline tfds data_dir with mnist_5k, and a helper to run the CLI."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from resflax import data

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


def read_metrics(workdir, drop_wall_clock=True):
  """The rows of ``workdir/metrics.jsonl``, without the fields that depend on the wall clock."""
  from resflax.train.writers import WALL_CLOCK_FIELDS
  rows = [json.loads(line) for line in (pathlib.Path(workdir) / 'metrics.jsonl').read_text().splitlines()]
  if drop_wall_clock:
    rows = [{k: v for k, v in row.items() if k not in WALL_CLOCK_FIELDS} for row in rows]
  return rows

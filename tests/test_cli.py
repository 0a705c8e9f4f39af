"""The CLI: summary, eval, and bad input answered with one clear line, exit != 0, nothing lost."""

import hashlib
import pathlib
import re
import time

import pytest

from conftest import (CONFIGS, error_line as _error_line, main_in_process as _main, read_metrics,
                      run_cli, run_in_process, short_run_args)

MLP = str(CONFIGS / 'mnist_resmlp.py')


def _tree_digest(path: pathlib.Path) -> str:
  """A digest of every file name and content under ``path``."""
  h = hashlib.sha256()
  for p in sorted(path.rglob('*')):
    h.update(str(p.relative_to(path)).encode())
    if p.is_file():
      h.update(p.read_bytes())
  return h.hexdigest()


def test_summary_ends_with_parameter_counts(capsys):
  code, out, _ = _main(capsys, 'summary', '--config', MLP)
  assert code == 0
  assert out.strip().splitlines()[-1] == 'trainable_params=235402 non_trainable_params=1536'
  assert 'stack/block2' in out  # the nn.tabulate table


def test_summary_applies_overrides(capsys):
  code, out, _ = _main(capsys, 'summary', '--config', MLP, '--config.model=cifar10_resmlp')
  assert code == 0 and out.strip().endswith('trainable_params=528266 non_trainable_params=1536')


@pytest.mark.parametrize('args, pattern', [
    (('--config', 'experiments/configs/nope.py'), r"config file .*nope.py' not found"),
    (('--config', MLP, '--config.batch_sise=64'), r'unknown config key --config.batch_sise \(did you mean batch_size'),
    (('--config', MLP, '--config.batch_size=abc'), r"--config.batch_size='abc': expected int"),
    (('--config', MLP, '--config.optimizer_kwargs.amsgrad=maybe'),
     r"--config.optimizer_kwargs.amsgrad='maybe': expected bool"),
    (('--config', MLP, '--config.batch_size'), r'--config.batch_size has no value'),
    (('--config', MLP, '--config.model=resnet9000'), r"unknown model 'resnet9000': use --config.model= one of .*mnist_resmlp"),
    (('--config', MLP, '--config.dataset=imagenet9'), r"unknown dataset 'imagenet9': use --config.dataset= a tfds dataset .*one of cifar10, .*mnist, mnist_5k"),
    (('--config', MLP, '--config.dataset=mnist_5k', '--config.model=cifar10_resmlp'),
     r"'mnist_5k' has examples of shape \(28, 28, 1\) but the model takes \(3072,\)"),
    (('--config', MLP, '--config.dataset=mnist_5k', '--config.loss=mse'), r'does not fit mnist_resmlp'),
    (('--config', MLP, '--config.dataset=mnist_5k', '--config.optimizer=adamx'),
     r"unknown --config.optimizer='adamx' \(did you mean adamax"),
    (('--config', MLP, '--config.dataset=mnist_5k', '--config.optimizer=sgd'),
     r"--config.optimizer_kwargs.amsgrad: optax.sgd takes no argument 'amsgrad' \(it takes momentum, "
     r"nesterov, accumulator_dtype\): drop or rename it"),
])
def test_bad_train_input(capsys, tmp_path, data_dir, args, pattern):
  workdir = tmp_path / 'run'
  code, _, err = _main(capsys, 'train', *args, f'--config.data_dir={data_dir}', '--workdir', workdir)
  assert code == 2
  assert re.search(pattern, _error_line(err)), err
  assert not (workdir / 'checkpoints').exists()


def test_offline_dataset_not_on_disk_fails_within_seconds(capsys, tmp_path, monkeypatch):
  from resflax.data import sources
  monkeypatch.setattr(sources, '_reachable', lambda host, timeout=3.0: False)  # no network
  start = time.monotonic()
  code, _, err = _main(capsys, 'train', '--config', MLP, f'--config.data_dir={tmp_path}',
                       '--workdir', tmp_path / 'run')
  assert time.monotonic() - start < 10
  line = _error_line(err)
  assert code == 2 and str(tmp_path) in line and 'mnist_5k works offline' in line


def test_unwritable_workdir(capsys, tmp_path, data_dir):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  code, _, err = _main(capsys, 'train', '--config', MLP, '--config.dataset=mnist_5k',
                       f'--config.data_dir={data_dir}', '--workdir', blocker / 'run')
  assert code == 2 and 'cannot write to workdir' in _error_line(err)
  assert blocker.read_text() == 'not a directory'


def test_batch_size_that_the_devices_do_not_divide(tmp_path, data_dir):
  result = run_cli('train', '--config', MLP, '--config.dataset=mnist_5k', f'--config.data_dir={data_dir}',
                   '--config.batch_size=127', '--workdir', tmp_path / 'run',
                   env={'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}, timeout=120)
  assert result.returncode == 2
  assert 'batch_size=127 does not divide over 2 devices' in _error_line(result.stderr)


@pytest.fixture(scope='module')
def trained_run(data_dir, tmp_path_factory):
  """Two epochs of mnist_5k with a checkpoint after each (31 and 62)."""
  workdir = tmp_path_factory.mktemp('trained') / 'run'
  run_in_process('train', '--config', MLP, '--config.dataset=mnist_5k',
                 f'--config.data_dir={data_dir}', '--config.num_epochs=2',
                 '--config.checkpoint_min_interval_s=0', '--workdir', workdir)
  return workdir


def test_eval_reports_the_latest_checkpoint(capsys, trained_run):
  code, out, _ = _main(capsys, 'eval', '--workdir', trained_run)
  assert code == 0 and out.startswith('eval step=62 accuracy=')


def test_workdir_with_a_different_config_is_refused_untouched(capsys, trained_run, data_dir):
  before = _tree_digest(trained_run)
  code, _, err = _main(capsys, 'train', '--config', MLP, '--config.dataset=mnist_5k',
                       f'--config.data_dir={data_dir}', '--config.num_epochs=2',
                       '--config.learning_rate=0.01', '--workdir', trained_run)
  assert code == 2
  assert 'holds a run with a different config (learning_rate: 0.001 -> 0.01)' in _error_line(err)
  assert _tree_digest(trained_run) == before


def test_eval_without_a_run(capsys, tmp_path):
  code, _, err = _main(capsys, 'eval', '--workdir', tmp_path)
  assert code == 2 and 'is not a resflax run directory' in _error_line(err)


def test_corrupt_latest_checkpoint_is_named_kept_and_skipped(capsys, trained_run, tmp_path, data_dir):
  import shutil
  workdir = tmp_path / 'copy'
  shutil.copytree(trained_run, workdir)
  latest = workdir / 'checkpoints' / '62'
  victims = [p for p in latest.rglob('*') if p.is_file() and p.stat().st_size > 1000]
  assert victims
  for p in victims:  # truncate the array data
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])
  corrupt = _tree_digest(latest)
  code, out, err = _main(capsys, 'eval', '--workdir', workdir)
  assert code == 0 and out.startswith('eval step=31 '), (out, err)
  assert f'checkpoint {latest} is unreadable' in err
  assert _tree_digest(latest) == corrupt  # eval never moves or deletes it

  # Training on resumes from 31 and sets the corrupt checkpoint aside instead of deleting it.
  code, out, err = _main(capsys, 'train', '--config', MLP, '--config.dataset=mnist_5k',
                         f'--config.data_dir={data_dir}', '--config.num_epochs=2',
                         '--config.progress=none', '--workdir', workdir)
  assert code == 0 and 'final step=62' in out, err
  assert f'checkpoint {latest} is unreadable' in err and '62.corrupt' in err
  assert _tree_digest(workdir / 'checkpoints' / '62.corrupt') == corrupt
  assert (workdir / 'checkpoints' / '62').is_dir()


def test_a_rerun_loads_its_compiled_steps_from_the_persistent_cache(tmp_path, data_dir):
  cache, workdir = tmp_path / 'cache', tmp_path / 'run'
  args = short_run_args(data_dir, workdir, '--config.num_train_steps=3', '--config.progress=none')
  env = {'RESFLAX_COMPILATION_CACHE': str(cache)}
  run_cli(*args, env=env, check=True)
  first = sorted(p.name for p in cache.iterdir())
  assert any(name.startswith(('jit_train_step', 'jit__step_on_device')) for name in first), first
  run_cli(*short_run_args(data_dir, tmp_path / 'again', '--config.num_train_steps=3',
                          '--config.progress=none'), env=env, check=True)
  assert sorted(p.name for p in cache.iterdir()) == first  # every compile was a cache hit
  assert read_metrics(workdir) == read_metrics(tmp_path / 'again')


def test_a_run_shows_only_its_own_lines_on_stderr(data_dir, tmp_path):
  """A short run that imports TensorFlow (tf.data: no split on the device), evaluates and
  checkpoints: on stderr nothing but resflax's one-line messages; none of TensorFlow's oneDNN
  notice, absl's start-up line, tensorstore's or absl's log lines. Rows go to stdout."""
  result = run_cli(*short_run_args(data_dir, tmp_path, '--config.num_train_steps=3',
                                   '--config.data_on_device=off', '--config.progress=lines'),
                   check=True)
  assert 'eval  step 3' in result.stdout
  foreign = [l for l in result.stderr.splitlines() if l.strip() and not l.startswith('resflax: ')]
  assert not foreign, result.stderr[-3000:]

"""scripts/tpu_vm.py: the gcloud commands it prints (--dry-run) and runs (against a fake gcloud)."""

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tarfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / 'scripts' / 'tpu_vm.py'
VM = ['--name', 'rf-test', '--zone', 'us-central2-b', '--project', 'my-proj']
CONFIG = 'experiments/configs/cifar10_resmlp.py'
EXTRA = ['--config.data_dir=gs://bkt/tensorflow_datasets', "--config.note=it's got spaces; $HOME"]


@pytest.fixture(autouse=True)
def gcloud_log(tmp_path, monkeypatch):
  """A fake ``gcloud`` first on PATH for every test: it logs its argv to the returned file and
  succeeds (exit 3 on ``ssh`` when FAIL_SSH is set). No test can reach a real gcloud."""
  log = tmp_path / 'gcloud_calls.jsonl'
  fake = tmp_path / 'bin' / 'gcloud'
  fake.parent.mkdir()
  fake.write_text(f'#!{sys.executable}\nimport json, os, sys\n'
                  f'open({str(log)!r}, "a").write(json.dumps(sys.argv[1:]) + "\\n")\n'
                  'sys.exit(3 if "ssh" in sys.argv and os.environ.get("FAIL_SSH") else 0)\n')
  fake.chmod(0o755)
  monkeypatch.setenv('PATH', f'{fake.parent}{os.pathsep}{os.environ["PATH"]}')
  monkeypatch.setenv('FAKE_GCLOUD_LOG', str(log))
  return log


def tpu_vm(*args, env=None):
  """``python scripts/tpu_vm.py ARGS`` in a new process (it imports nothing of resflax: fast)."""
  return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                        timeout=30, env={**os.environ, **(env or {})})


def dry_run(*args, env=None):
  """The printed commands, each split back into its argv as a shell would; checks none ran."""
  result = tpu_vm('--dry-run', *args, env=env)
  assert result.returncode == 0, result.stderr
  assert not pathlib.Path(os.environ['FAKE_GCLOUD_LOG']).exists(), 'a dry run ran gcloud'
  return [shlex.split(line) for line in result.stdout.splitlines()]


def gcloud_calls(cmds):
  return [c for c in cmds if c[0] == 'gcloud']


def remote_command(cmd):
  """The command an ``ssh --command CMD`` runs on the hosts."""
  return cmd[cmd.index('--command') + 1]


def all_steps(accelerator_type, workdir, *more):
  return dry_run('all', *VM, '--accelerator-type', accelerator_type, '--config', CONFIG,
                 '--workdir', workdir, *more, '--', *EXTRA)


@pytest.mark.parametrize('accelerator_type', ['v4-8', 'v4-32'])
def test_all_prints_create_setup_run_fetch_delete(accelerator_type):
  cmds = all_steps(accelerator_type, 'gs://bkt/runs/c10')
  verbs = [c[4] if c[:4] == ['gcloud', 'compute', 'tpus', 'tpu-vm'] else ' '.join(c[:3]) for c in
           gcloud_calls(cmds)]
  assert verbs == ['create', 'scp', 'ssh', 'ssh', 'gcloud storage cp', 'delete']
  create, copy, setup, run, fetch, delete = gcloud_calls(cmds)
  for cmd in (create, copy, setup, run, delete):  # every TPU command names the VM, zone and project
    assert 'rf-test' in cmd or 'rf-test:resflax.tar.gz' in cmd
    assert '--zone=us-central2-b' in cmd and '--project=my-proj' in cmd
  assert '--project=my-proj' in fetch
  assert f'--accelerator-type={accelerator_type}' in create
  assert '--version=tpu-ubuntu2204-base' in create and '--spot' not in create
  assert '--quiet' in delete
  # setup and run happen on every host; the project is installed with the [tpu] extra.
  for cmd in (copy, setup, run):
    assert '--worker=all' in cmd
  assert 'pip install -e ".[tpu]"' in remote_command(setup)
  assert fetch == ['gcloud', 'storage', 'cp', '--recursive', 'gs://bkt/runs/c10', 'runs',
                   '--project=my-proj']


def test_run_passes_extra_args_through_both_shells():
  (run,) = dry_run('run', *VM, '--config', CONFIG, '--workdir', 'gs://bkt/runs/c10', '--', *EXTRA)
  remote = remote_command(run)
  assert remote.startswith('cd ~/resflax && ')
  # What each host's shell runs after `cd`: the train command, the extra args intact and last.
  train = shlex.split(remote.split(' && ', 1)[1])
  assert train == ['python3', '-m', 'resflax.cli', 'train', '--config', CONFIG,
                   '--workdir', 'gs://bkt/runs/c10', *EXTRA]


def test_spot_and_other_generations():
  (create,) = dry_run('create', *VM, '--accelerator-type', 'v4-32', '--spot')
  assert '--spot' in create
  (create,) = dry_run('create', *VM, '--accelerator-type', 'v5litepod-8')
  assert '--version=v2-alpha-tpuv5-lite' in create
  (create,) = dry_run('create', *VM, '--accelerator-type', 'v6e-8', '--version', 'my-image')
  assert '--version=my-image' in create


def test_setup_from_git_url():
  (setup,) = dry_run('setup', *VM, '--repo-url', 'https://example.com/me/resflax.git')
  remote = remote_command(setup)
  assert '--worker=all' in setup
  assert 'git clone https://example.com/me/resflax.git ~/resflax' in remote
  assert remote.endswith('cd ~/resflax && python3 -m pip install -e ".[tpu]"')


def test_fetch_local_workdir_from_worker_0():
  (fetch,) = dry_run('fetch', *VM, '--workdir', 'runs/q', '--dest', 'results')
  assert fetch[4:7] == ['scp', '--recurse', 'rf-test:resflax/runs/q']
  assert 'results' in fetch and '--worker=0' in fetch
  (fetch,) = dry_run('fetch', *VM, '--workdir', '/data/runs/q/')
  assert 'rf-test:/data/runs/q' in fetch


@pytest.mark.parametrize('args, message', [
    (['run', '--zone', 'z', '--project', 'p'], 'the following arguments are required: --name'),
    (['delete', '--name', 'x', '--project', 'p'], 'the following arguments are required: --zone'),
    (['create', *VM], 'create needs --accelerator-type'),
    (['create', *VM, '--accelerator-type', 'v4_8'], "--accelerator-type 'v4_8'"),
    (['run', *VM, '--workdir', 'runs/q'], 'run needs --config'),
    (['fetch', *VM], 'fetch needs --workdir'),
    (['delete', '--name', 'My_TPU', '--zone', 'z', '--project', 'p'], "--name 'My_TPU'"),
    (['delete', *VM, '--', '--config.seed=1'], 'arguments after -- are for run'),
    (['run', *VM, '--accelerator-type', 'v4-32', '--config', CONFIG, '--workdir', 'runs/q'],
     'v4-32 is a pod slice: --workdir must be on GCS'),
    (['launch', *VM], "invalid choice: 'launch'"),
])
def test_bad_arguments_exit_2_with_a_clear_message(args, message):
  result = tpu_vm(*args, '--dry-run')
  assert result.returncode == 2 and result.stdout == ''
  assert message in result.stderr, result.stderr


def test_setup_packs_this_checkout_without_ignored_files(tmp_path):
  if not (shutil.which('git') and shutil.which('tar') and (REPO / '.git').exists()):
    pytest.skip('needs git, tar and a git checkout')
  pack = tpu_vm('setup', *VM, '--dry-run', env={'TMPDIR': str(tmp_path)}).stdout.splitlines()[0]
  subprocess.run(pack, shell=True, check=True, timeout=30)
  with tarfile.open(tmp_path / 'resflax-rf-test.tar.gz') as tar:
    names = set(tar.getnames())
  assert {'pyproject.toml', 'resflax/cli.py', 'scripts/tpu_vm.py'} <= names
  assert not any(n.startswith(('.git/', 'runs/')) or '__pycache__' in n for n in names)


def test_dry_run_after_the_double_dash_still_runs_nothing(gcloud_log):
  result = tpu_vm('delete', *VM, '--', '--dry-run')
  assert result.returncode == 0 and result.stdout.startswith('gcloud compute tpus tpu-vm delete')
  result = tpu_vm('run', *VM, '--config', CONFIG, '--workdir', 'gs://b/w', '--', '--config.seed=1',
                  '--dry-run')
  assert result.returncode == 0 and not gcloud_log.exists()
  assert remote_command(shlex.split(result.stdout)).endswith('--workdir gs://b/w --config.seed=1')


def test_runs_the_commands_and_stops_at_the_first_failure(tmp_path, gcloud_log):
  """Without --dry-run: each command runs once, in order; a failure stops ``all`` and says how to
  delete the VM."""
  args = ['all', *VM, '--accelerator-type', 'v4-8', '--repo-url', 'https://example.com/r.git',
          '--config', CONFIG, '--workdir', 'gs://bkt/runs/c10', '--dest', str(tmp_path / 'out')]
  result = tpu_vm(*args)
  assert result.returncode == 0, result.stderr
  calls = [json.loads(line) for line in gcloud_log.read_text().splitlines()]
  assert [c[3] if c[0] == 'compute' else c[1] for c in calls] == ['create', 'ssh', 'ssh', 'cp', 'delete']
  assert (tmp_path / 'out').is_dir()
  gcloud_log.unlink()
  result = tpu_vm(*args, env={'FAIL_SSH': '1'})
  assert result.returncode == 3
  assert [c[3] for c in map(json.loads, gcloud_log.read_text().splitlines())] == ['create', 'ssh']
  assert 'setup failed (exit 3)' in result.stderr
  assert 'gcloud compute tpus tpu-vm delete rf-test --quiet' in result.stderr

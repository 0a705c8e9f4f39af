"""Same model, any number of devices and processes: each guarantee of docs/guarantees.md, tested.

Simulated CPU devices (``--xla_force_host_platform_device_count``) and real subprocesses on
127.0.0.1 stand in for accelerators and hosts. Every run is the mnist_5k run of
``conftest.reference_run`` (1 process, 1 device, 62 steps) with something changed.

A different device count changes the order of XLA:CPU's reductions (~1e-7 relative). The seed
MLP's training then amplifies that noise chaotically (about x1.3 per step after step ~20, with
Adam and with plain SGD alike), so curves across device counts are compared over the first
``CURVE_STEPS`` steps, where they agree to ~3e-7; same-device-count runs are compared bit for bit.
"""

import os
import random
import signal
import socket
import subprocess
import sys
import time

import chex
import numpy as np
import pytest

from conftest import (REPO, load_checkpoint, read_metrics, run_cli, run_cli_commands,
                      run_in_process, short_run_args)

RTOL = 1e-4
CURVE_STEPS = 20


def devices(n):
  """``run_cli``'s ``env`` for a process with ``n`` CPU devices (and this run's other XLA flags)."""
  flags = ' '.join(f for f in os.environ.get('XLA_FLAGS', '').split()
                   if not f.startswith('--xla_force_host_platform_device_count'))
  return {'XLA_FLAGS': f'{flags} --xla_force_host_platform_device_count={n}'.strip()}


def assert_same_curve(rows, reference, rtol=RTOL, steps=CURVE_STEPS):
  """The train loss and accuracy at every logged step up to ``steps`` agree within ``rtol``."""
  def curve(rows):
    return {r['step']: r for r in rows if r['split'] == 'train' and r['step'] <= steps}
  got, want = curve(rows), curve(reference)
  assert got.keys() == want.keys() and len(want) >= 4
  for step, r in want.items():
    for name in ('loss', 'accuracy'):
      np.testing.assert_allclose(got[step][name], r[name], rtol=rtol, err_msg=f'step {step} {name}')


def assert_same_params(a, b, rtol=None):
  """Bit-identical parameters, or (``rtol``) a relative difference of global norms below it.

  Element-wise tolerances do not fit Adam across device counts: a parameter whose gradient is
  rounding noise still moves by about the learning rate, in a direction set by that noise.
  """
  import jax
  x, y = jax.tree.leaves(a['params']), jax.tree.leaves(b['params'])
  if rtol is None:
    chex.assert_trees_all_equal(a['params'], b['params'])
    return
  diff = np.sqrt(sum(np.sum((u - v) ** 2) for u, v in zip(x, y)))
  norm = np.sqrt(sum(np.sum(u ** 2) for u in x))
  assert diff / norm < rtol, f'relative parameter difference {diff / norm:.2e}'


@pytest.fixture(scope='module')
def eight_device_runs(data_dir, tmp_path_factory):
  """The run on 8 devices with ``parallel=jit`` and with ``parallel=pmap``: {mode: workdir}, both
  from one process with 8 CPU devices."""
  workdirs = {mode: tmp_path_factory.mktemp(f'eight_{mode}') for mode in ('jit', 'pmap')}
  run_cli_commands(*(short_run_args(data_dir, workdir, f'--config.num_train_steps={CURVE_STEPS}',
                                    f'--config.parallel={mode}')
                     for mode, workdir in workdirs.items()), env=devices(8))
  return workdirs


@pytest.fixture(scope='module')
def eight_device_run(eight_device_runs):
  return eight_device_runs['jit']


def test_eight_devices_follow_the_one_device_curve(eight_device_run, reference_run):
  assert_same_curve(read_metrics(eight_device_run), read_metrics(reference_run))


def test_pmap_path_matches_the_jit_path(reference_run, eight_device_runs):
  pmap, jit = eight_device_runs['pmap'], eight_device_runs['jit']
  assert_same_curve(read_metrics(pmap), read_metrics(reference_run))
  assert_same_params(load_checkpoint(pmap / 'checkpoints' / '20'),
                     load_checkpoint(jit / 'checkpoints' / '20'), rtol=1e-4)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _launch(args, env):
  return subprocess.Popen([sys.executable, '-m', 'resflax.cli', *map(str, args)], cwd=REPO,
                          env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3', **env},
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_match_one_process(eight_device_run, data_dir, tmp_path):
  """2 processes x 4 devices on 127.0.0.1 == 1 process x 8 devices."""
  port = _free_port()
  procs = [_launch(short_run_args(data_dir, tmp_path, f'--config.num_train_steps={CURVE_STEPS}',
                                  f'--config.coordinator_address=127.0.0.1:{port}',
                                  '--config.num_processes=2', f'--config.process_id={i}',
                                  '--config.distributed_timeout_s=60'), devices(4))
           for i in range(2)]
  try:
    outputs = [p.communicate(timeout=300) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (out, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
    assert f'final step={CURVE_STEPS}' in out
  assert_same_curve(read_metrics(tmp_path), read_metrics(eight_device_run))
  assert_same_params(load_checkpoint(tmp_path / 'checkpoints' / '20'),
                     load_checkpoint(eight_device_run / 'checkpoints' / '20'), rtol=1e-4)


def test_unreachable_coordinator_fails_within_bounded_time(data_dir, tmp_path):
  port = _free_port()  # nothing listens there
  start = time.monotonic()
  result = run_cli(*short_run_args(data_dir, tmp_path, f'--config.coordinator_address=127.0.0.1:{port}',
                                   '--config.num_processes=2', '--config.process_id=1',
                                   '--config.distributed_timeout_s=5'), timeout=120)
  assert time.monotonic() - start < 90
  assert result.returncode == 2, result.stderr[-2000:]
  line = [l for l in result.stderr.splitlines() if l.startswith('resflax: error:')]
  assert line and f'127.0.0.1:{port}' in line[0] and 'start process 0 first' in line[0]


_SIGKILL_DURING_STEP = """
import os, signal, sys, threading, time
from resflax import cli
from resflax.train import writers
kill_step, delay = int(sys.argv.pop(1)), float(sys.argv.pop(1))
step, done = writers.Progress.step, 0
def kill():
  time.sleep(delay)
  os.kill(os.getpid(), signal.SIGKILL)
def step_then_a_timed_kill(self):  # SIGKILL `delay` s after step `kill_step` was dispatched
  global done
  step(self)
  done += 1
  if done == kill_step:
    threading.Thread(target=kill, daemon=True).start()
writers.Progress.step = step_then_a_timed_kill
sys.argv = ['resflax', *sys.argv[1:]]
cli.main()
print('finished before the kill', flush=True)
time.sleep(60)  # the kill lands here when it comes after the end
"""


def test_sigkill_at_a_random_moment_then_resume_is_bit_exact(reference_run, data_dir, tmp_path):
  """The process dies (SIGKILL) at a random moment of the second epoch: mid-step, mid-eval or
  mid-save (orbax leaves a `*.orbax-checkpoint-tmp` folder). The rerun resumes from what was
  saved and ends as the uninterrupted run did."""
  args = short_run_args(data_dir, tmp_path, '--config.num_train_steps=62',
                        '--config.checkpoint_min_interval_s=0')
  rng = random.Random(os.getpid())
  kill_step, delay = rng.randint(32, 62), rng.uniform(0.0, 0.02)
  proc = subprocess.run([sys.executable, '-c', _SIGKILL_DURING_STEP, str(kill_step), str(delay),
                         *map(str, args)], cwd=REPO, env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'},
                        capture_output=True, text=True, timeout=300)
  where = f'step {kill_step} + {delay * 1e3:.0f} ms'
  assert proc.returncode == -signal.SIGKILL, f'{where}: {proc.stderr[-3000:]}'
  assert any(p.name.isdigit() for p in (tmp_path / 'checkpoints').iterdir()), where  # 10, 20, ...
  run_in_process(*args)  # the resume: another process than the killed one
  assert read_metrics(tmp_path) == read_metrics(reference_run), where
  assert_same_params(load_checkpoint(tmp_path / 'checkpoints' / '62'),
                     load_checkpoint(reference_run / 'checkpoints' / '62'))


# Runs the CLI as the `resflax` program with SIGTERMs sent from inside at chosen moments, so each
# test hits its moment every time (a signal from outside races a run of a few hundred ms).
_SIGTERM_AT = """
import os, signal, sys
from resflax import cli
from resflax.train import checkpoint
when = set(sys.argv.pop(1).split(','))
save, close = checkpoint.Checkpoints.save, checkpoint.Checkpoints.close
def sigterm():
  os.kill(os.getpid(), signal.SIGTERM)
def save_then_a_sigterm(self, step, *args):  # SIGTERM just after the save of step 31
  save(self, step, *args)
  if 'first_save' in when and step == 31:
    sigterm()
def close_after_a_sigterm(self):  # SIGTERM while the last save is being finished
  if 'last_save' in when:
    sigterm()
  close(self)
checkpoint.Checkpoints.save, checkpoint.Checkpoints.close = save_then_a_sigterm, close_after_a_sigterm
sys.argv = ['resflax', *sys.argv[1:]]
code = cli.main()
if 'exit' in when:  # SIGTERM while the process exits
  sigterm()
sys.exit(code)
"""


def _run_with_sigterm_at(when, args):
  return subprocess.run([sys.executable, '-c', _SIGTERM_AT, when, *map(str, args)], cwd=REPO,
                        env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'}, capture_output=True,
                        text=True, timeout=300)


def test_sigterm_saves_the_current_step_and_exits_0(reference_run, data_dir, tmp_path):
  args = short_run_args(data_dir, tmp_path, '--config.num_train_steps=62',
                        '--config.checkpoint_every_steps=1000',
                        '--config.checkpoint_min_interval_s=0')
  proc = _run_with_sigterm_at('first_save', args)  # SIGTERM after epoch 1's save (step 31)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'final preempted_at_step=32' in proc.stdout
  saved = sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit())
  assert saved == [31, 32]
  run_in_process(*args)
  assert read_metrics(tmp_path) == read_metrics(reference_run)
  assert_same_params(load_checkpoint(tmp_path / 'checkpoints' / '62'),
                     load_checkpoint(reference_run / 'checkpoints' / '62'))


def test_a_sigterm_after_the_last_step_still_exits_0(data_dir, tmp_path):
  """A preemption notice that lands once training is over (the final save finishing, the process
  exiting) leaves a finished run: exit 0, the last step saved."""
  proc = _run_with_sigterm_at('last_save,exit', short_run_args(data_dir, tmp_path,
                                                               '--config.num_train_steps=3'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'final step=3' in proc.stdout
  assert (tmp_path / 'checkpoints' / '3').is_dir()


@pytest.mark.slow  # 4 runs, ~90 s; the 8 -> 1 case was measured at 3.1e-7 (docs/guarantees.md)
@pytest.mark.parametrize('first, second', [(8, 1), (1, 8)])
def test_resume_on_a_different_device_count(reference_run, data_dir, tmp_path, first, second):
  run_cli(*short_run_args(data_dir, tmp_path, '--config.num_train_steps=10'), env=devices(first),
          check=True)
  run_cli(*short_run_args(data_dir, tmp_path, f'--config.num_train_steps={CURVE_STEPS}'),
          env=devices(second), check=True)
  assert_same_curve(read_metrics(tmp_path), read_metrics(reference_run))


def test_pmap_needs_a_model_with_an_axis_name_hook(monkeypatch):
  import dataclasses

  import flax.linen as nn

  from resflax import models
  from resflax.errors import ConfigError

  class NoHook(nn.Module):
    num_outputs: int = 10

    @nn.compact
    def __call__(self, x, train=False):
      return nn.Dense(self.num_outputs)(x)

  monkeypatch.setitem(models.MODELS, 'no_hook', dataclasses.replace(
      models.MODELS['mnist_resmlp'], factory=NoHook))
  with pytest.raises(ConfigError, match="'no_hook' has no axis_name field.*--config.parallel=jit"):
    models.build('no_hook', num_outputs=10, axis_name='data')
  assert models.build('no_hook', num_outputs=10) is not None


@pytest.mark.parametrize('mode', ['jit', 'pmap'])
def test_the_step_compiles_once(mode, data_dir, tmp_path, monkeypatch):
  """No retrace across steps, epochs, checkpoints and evals (pmap: replicas keep pmap's axis)."""
  import chex

  from resflax import config as config_lib
  from resflax import train
  from resflax.train import steps
  from conftest import CONFIGS

  chex.clear_trace_counter()
  monkeypatch.setattr(steps, 'train_step', chex.assert_max_traces(steps.train_step, n=1))
  monkeypatch.setattr(steps, 'eval_step', chex.assert_max_traces(steps.eval_step, n=1))
  config = config_lib.load(CONFIGS / 'mnist_resmlp.py')
  config.update(dataset='mnist_5k', data_dir=data_dir, progress='none', parallel=mode,
                batch_size=512, num_epochs=2, checkpoint_every_steps=3, log_every_steps=2)
  result = train.train_and_evaluate(config, tmp_path)
  assert result['step'] == 14


# ----------------------------------------------------------------------------------------------
# Multi-host start-up: the environments jax.distributed configures itself from (simulated).
# ----------------------------------------------------------------------------------------------
OMPI = {'OMPI_MCA_orte_hnp_uri': '1531576320.0;tcp://10.96.0.1,10.148.0.1:34911',
        'OMPI_COMM_WORLD_SIZE': '4', 'OMPI_COMM_WORLD_RANK': '1',
        'OMPI_COMM_WORLD_LOCAL_RANK': '1'}
SLURM = {'SLURM_JOB_ID': '4242', 'SLURM_STEP_NODELIST': 'node[01-02]', 'SLURM_NODELIST': 'node[01-02]',
         'SLURM_NTASKS': '2', 'SLURM_PROCID': '1', 'SLURM_LOCALID': '0',
         'SLURM_STEP_NUM_NODES': '2'}


@pytest.fixture
def cluster_env(monkeypatch):
  """No launcher's variables (those of the machine running the tests removed); returns a setter."""
  for name in list(os.environ):
    if name.startswith(('OMPI_', 'PMI', 'SLURM_', 'KUBERNETES_', 'TPU_', 'MEGASCALE_',
                        'JAX_COORDINATOR', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID')):
      monkeypatch.delenv(name)
  return lambda env: [monkeypatch.setenv(k, v) for k, v in env.items()]


@pytest.mark.parametrize('env, found', [
    ({}, None),
    (OMPI, 'OmpiCluster'),  # mpirun (Open MPI)
    ({**OMPI, 'OMPI_COMM_WORLD_SIZE': '1', 'OMPI_COMM_WORLD_RANK': '0'}, None),  # mpirun -n 1
    (SLURM, 'SlurmCluster'),
    ({**SLURM, 'SLURM_NTASKS': '1', 'SLURM_PROCID': '0'}, None),  # a one-task job: one process
    ({'JAX_COORDINATOR_ADDRESS': '10.0.0.1:1234'}, 'JAX_COORDINATOR_ADDRESS'),
], ids=['none', 'mpirun', 'mpirun-1', 'slurm', 'slurm-1', 'jax-variable'])
def test_auto_detects_the_clusters_jax_configures_itself_from(cluster_env, env, found):
  from resflax import parallel
  cluster_env(env)
  assert parallel.detected_cluster() == found


def test_a_kubernetes_job_is_detected(cluster_env, monkeypatch):
  """With the kubernetes client (faked here), a Job of 3 pods is a cluster; a 1-pod Job is not."""
  import types
  from jax._src.clusters import K8sCluster
  from resflax import parallel
  cluster_env({'KUBERNETES_SERVICE_HOST': '10.0.0.1'})
  client = types.SimpleNamespace(CoreV1Api=object, BatchV1Api=object,
                                 exceptions=types.SimpleNamespace(ApiException=Exception))
  monkeypatch.setitem(sys.modules, 'kubernetes', types.SimpleNamespace(
      config=types.SimpleNamespace(load_incluster_config=lambda: None), client=client))
  for name in ('_core_api', '_batch_api', '_ApiException'):  # set by is_env_present: undone after
    monkeypatch.setattr(K8sCluster, name, None, raising=False)
  monkeypatch.setattr(K8sCluster, 'get_process_count', classmethod(lambda cls: 3))
  assert parallel.detected_cluster() == 'K8sCluster'
  monkeypatch.setattr(K8sCluster, 'get_process_count', classmethod(lambda cls: 1))
  assert parallel.detected_cluster() is None


def test_kubernetes_without_its_client_is_one_warning_line(cluster_env, monkeypatch, caplog):
  from resflax import parallel
  cluster_env({'KUBERNETES_SERVICE_HOST': '10.0.0.1'})
  monkeypatch.setitem(sys.modules, 'kubernetes', None)  # `import kubernetes` fails
  assert parallel.detected_cluster() is None
  lines = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
  assert len(lines) == 1 and '\n' not in lines[0] and 'jax[k8s]' in lines[0]


def test_without_jax_cluster_list_launcher_variables_still_count(cluster_env, monkeypatch):
  from resflax import parallel
  monkeypatch.setattr(parallel, '_jax_cluster_envs', lambda: None)
  cluster_env(OMPI)
  assert parallel.detected_cluster() == 'OmpiCluster'


def test_under_mpirun_auto_starts_jax_distributed_after_waiting_for_rank_0(cluster_env,
                                                                            monkeypatch):
  """Rank 1 of an mpirun job waits for the coordinator JAX derives (port and its one-line timeout
  kept), then lets jax.distributed configure itself; 'off' starts nothing."""
  import jax
  import ml_collections
  from resflax import parallel
  cluster_env(OMPI)
  calls = []
  monkeypatch.setattr(jax.distributed, 'is_initialized', lambda: False)
  monkeypatch.setattr(jax.distributed, 'initialize', lambda **kw: calls.append(('init', kw)))
  monkeypatch.setattr(parallel, '_wait_for_coordinator', lambda a, t: calls.append(('wait', a)))
  collectives = jax.config.jax_cpu_collectives_implementation
  try:
    config = ml_collections.ConfigDict(dict(distributed='auto', coordinator_address='',
                                            num_processes=0, process_id=-1,
                                            distributed_timeout_s=7))
    assert parallel.initialize_distributed(config)
    assert [c[0] for c in calls] == ['wait', 'init']
    assert calls[0][1].startswith('10.96.0.1:') and calls[1][1] == {'initialization_timeout': 7}
    calls.clear()
    config.distributed = 'off'
    assert not parallel.initialize_distributed(config) and not calls
  finally:
    jax.config.update('jax_cpu_collectives_implementation', collectives)


def test_importing_resflax_sets_no_jax_config_and_a_run_does():
  """Import changes no JAX setting; a run sets what it needs (jax_threefry_partitionable) when it
  starts. A fresh process whose environment turns the setting off."""
  code = ('import jax; before = dict(jax.config.values); '
          'import resflax, resflax.parallel, resflax.train.loop, resflax.cli, resflax.api; '
          'changed = sorted(k for k, v in jax.config.values.items() if before.get(k) != v); '
          'import ml_collections; '
          'resflax.parallel.initialize_distributed(ml_collections.ConfigDict({"distributed": "off"})); '
          'print(changed, jax.config.jax_threefry_partitionable)')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, 'JAX_THREEFRY_PARTITIONABLE': 'false'}, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split('\n')[-2] == '[] True'

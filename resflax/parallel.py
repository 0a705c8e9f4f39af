"""Devices: the 1-D ``('data',)`` mesh, the shardings, and global batches from per-process data.

The default is global-view ``jax.jit``: the batch is sharded on its leading axis over every device
of every process, the train state is replicated. BatchNorm then normalises over the global batch and
dropout masks do not depend on the device count (``jax_threefry_partitionable``, set by
``configure_run`` when a run starts: importing resflax changes no JAX setting).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings

import flax.jax_utils
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from resflax.errors import ConfigError, DistributedError

DATA_AXIS = 'data'
_log = logging.getLogger(__name__)

# The JAX settings every run needs, set by ``configure_run`` (never at import).
# jax_threefry_partitionable: random bits that do not depend on how an array is sharded, the same
# dropout masks on 1 or 8 devices; pinned rather than left to the jax version's default.
RUN_JAX_CONFIG = {'jax_threefry_partitionable': True}


def configure_run() -> None:
  """Sets ``RUN_JAX_CONFIG`` in ``jax.config``: called where a run starts (``initialize_distributed``
  and ``train.loop.build``), before its first random numbers."""
  for name, value in RUN_JAX_CONFIG.items():
    if getattr(jax.config, name) != value:
      jax.config.update(name, value)


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh named ``'data'`` over ``devices`` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, name: str = 'batch_size') -> None:
  """The global batch must split evenly over the devices."""
  n = mesh.devices.size
  if batch_size % n:
    raise ConfigError(
        f'--config.{name}={batch_size} does not divide over {n} devices: use a multiple of {n} '
        f'(e.g. {max(n, batch_size // n * n)})')


def global_batch(mesh: Mesh, local_batch: dict) -> dict:
  """Per-process numpy arrays -> global ``jax.Array``s sharded over the ``'data'`` axis."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


# ----------------------------------------------------------------------------------------------
# Multi-host start-up.
# ----------------------------------------------------------------------------------------------
def _jax_cluster_envs():
  """The cluster environments ``jax.distributed.initialize()`` configures itself from (OpenMPI,
  SLURM, Cloud TPU, Kubernetes, ...), in the order JAX tries them; None if this jax does not expose
  them where expected. JAX has no public name for this list; its ``ClusterEnv`` subclasses register
  themselves there."""
  try:
    from jax._src import clusters  # pylint: disable=g-import-not-at-top
    return [env for env in clusters.ClusterEnv._cluster_types  # pylint: disable=protected-access
            if not env.opt_in_only_method]  # as jax: mpi4py only when asked for by name
  except (ImportError, AttributeError):
    return None


def _env_count(name: str) -> int:
  value = os.environ.get(name, '').strip()
  return int(value) if value.isdigit() else 1


def _first_line(e: BaseException) -> str:
  return str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__


def _detected_by_variables() -> str | None:
  """The fallback when jax's list is not found: the usual launchers' variables."""
  env = os.environ
  if _env_count('OMPI_COMM_WORLD_SIZE') > 1:
    return 'OmpiCluster'
  if _env_count('SLURM_NTASKS') > 1:
    return 'SlurmCluster'
  if ',' in env.get('TPU_WORKER_HOSTNAMES', ''):  # a multi-host TPU VM slice
    return 'TpuCluster'
  return None


def detected_cluster() -> str | None:
  """The multi-process environment that ``jax.distributed.initialize()`` would configure by itself
  (the name of JAX's cluster class, e.g. ``'OmpiCluster'`` under mpirun, ``'SlurmCluster'``,
  ``'K8sCluster'``), or None: none, or one of a single process.

  JAX picks the first environment it finds present; so does this. $JAX_COORDINATOR_ADDRESS counts as
  one (jax.distributed reads it).
  """
  if os.environ.get('JAX_COORDINATOR_ADDRESS'):
    return 'JAX_COORDINATOR_ADDRESS'
  envs = _jax_cluster_envs()
  if envs is None:
    _log.info('jax._src.clusters not found: detecting clusters from launcher variables')
    return _detected_by_variables()
  for env in envs:
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter('always')
      try:
        present = env.is_env_present()
      except Exception as e:  # pylint: disable=broad-except  (e.g. a metadata server that fails)
        _log.warning('%s: cannot tell whether this is a cluster (%s); set '
                     '--config.distributed=on to start jax.distributed anyway', env.__name__,
                     _first_line(e))
        continue
    for w in caught:  # jax's multi-line advice (e.g. Kubernetes without its client): one line
      _log.warning('%s', ' '.join(str(w.message).split()))
    if not present:
      continue
    try:
      count = int(env.get_process_count())
    except Exception as e:  # pylint: disable=broad-except  (e.g. a pod that belongs to no Job)
      _log.warning('%s: cannot read the number of processes (%s): running as one process; '
                   'set --config.distributed=on if this is a multi-process job', env.__name__,
                   _first_line(e))
      return None
    return env.__name__ if count > 1 else None
  return None


def _detected_coordinator(name: str, timeout: int) -> tuple[str, int] | None:
  """(coordinator address, this process's id) of the detected cluster ``name``; None if unknown."""
  env = next((e for e in _jax_cluster_envs() or () if e.__name__ == name), None)
  if env is None:
    return None
  try:
    return (env.get_coordinator_address(timeout_secs=timeout,
                                        override_coordinator_port=os.environ.get(
                                            'JAX_COORDINATOR_PORT')),
            int(env.get_process_id()))
  except Exception:  # pylint: disable=broad-except  (jax.distributed then says what is wrong)
    return None


def _wait_for_coordinator(address: str, timeout: float) -> None:
  host, _, port = address.rpartition(':')
  deadline = time.monotonic() + timeout
  while True:
    try:
      socket.create_connection((host, int(port)), timeout=2).close()
      return
    except (OSError, ValueError) as e:
      if time.monotonic() > deadline or isinstance(e, ValueError):
        raise DistributedError(
            f'the coordinator {address} did not answer within {timeout:g} s ({e}): start process 0 '
            'first, check --config.coordinator_address (host:port) and the network, or run on one '
            'host with --config.distributed=off') from None
      time.sleep(0.5)


def initialize_distributed(config) -> bool:
  """Starts ``jax.distributed`` when the config or the environment asks for it (before any JAX op),
  and sets the JAX settings of a run (``configure_run``).

  Returns whether it was started. Explicit settings come from ``config.coordinator_address``,
  ``num_processes``, ``process_id`` (or $JAX_COORDINATOR_ADDRESS / $JAX_NUM_PROCESSES /
  $JAX_PROCESS_ID); otherwise ``distributed='auto'`` starts it in every environment JAX configures
  itself from (``detected_cluster``: mpirun, SLURM, multi-host TPU VMs, Kubernetes Jobs).
  """
  configure_run()
  mode = config.get('distributed', 'auto')
  if mode not in ('auto', 'on', 'off'):
    raise ConfigError(f"--config.distributed={mode!r}: use 'auto', 'on' or 'off'")
  explicit = bool(config.get('coordinator_address'))
  if mode == 'off':
    return False
  cluster = None if explicit else detected_cluster()
  if mode == 'auto' and not explicit and cluster is None:
    return False
  if jax.distributed.is_initialized():
    return True
  kwargs = {}
  if explicit:
    kwargs = dict(coordinator_address=config.coordinator_address,
                  num_processes=config.num_processes or None,
                  process_id=None if config.process_id < 0 else config.process_id)
  # CPU processes need a collectives backend (accelerators bring their own); this touches no device.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  timeout = int(config.get('distributed_timeout_s', 120))
  # jax aborts the whole process (no Python exception) when it cannot reach the coordinator: every
  # process but 0 waits for its port first, so an unreachable coordinator is a clear error instead.
  if explicit and kwargs['process_id'] != 0:
    _wait_for_coordinator(config.coordinator_address, timeout)
  elif cluster is not None and (found := _detected_coordinator(cluster, timeout)) and found[1] != 0:
    _wait_for_coordinator(found[0], timeout)
  try:
    jax.distributed.initialize(initialization_timeout=timeout, **kwargs)
  except Exception as e:  # jax raises XlaRuntimeError / ValueError / RuntimeError here
    where = (kwargs.get('coordinator_address') or os.environ.get('JAX_COORDINATOR_ADDRESS')
             or (f'auto ({cluster})' if cluster else 'auto'))
    raise DistributedError(
        f'could not start jax.distributed with coordinator {where} within {timeout} s '
        f'({_first_line(e)}): '
        'start process 0 first, check --config.coordinator_address / num_processes / process_id, '
        'or run on one host with --config.distributed=off') from None
  return True


# ----------------------------------------------------------------------------------------------
# The pmap path: state replicated over the local devices with a leading device axis.
# ----------------------------------------------------------------------------------------------
def replicate(tree):
  """A copy of ``tree`` on every local device, stacked on a new leading axis (for ``jax.pmap``).

  The replicas' sharding uses pmap's own axis name: with another name pmap would recompile its
  step on every call.
  """
  return flax.jax_utils.replicate(tree, axis_name=DATA_AXIS)


def unreplicate(tree):
  """The first device's copy: what checkpoints and metrics see (never the device axis)."""
  return jax.tree.map(lambda x: x[0], tree)


def split_for_devices(local_batch: dict) -> dict:
  """``[b, ...]`` numpy arrays -> ``[local devices, b / local devices, ...]`` for ``jax.pmap``."""
  n = jax.local_device_count()
  return jax.tree.map(lambda x: x.reshape(n, x.shape[0] // n, *x.shape[1:]), local_batch)

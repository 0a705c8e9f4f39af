"""Devices: the 1-D ``('data',)`` mesh, the shardings, and global batches from per-process data.

The default is global-view ``jax.jit``: the batch is sharded on its leading axis over every device
of every process, the train state is replicated. BatchNorm then normalises over the global batch and
dropout masks do not depend on the device count (``jax_threefry_partitionable``).
"""

from __future__ import annotations

import os
import socket
import time

import flax.jax_utils
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from resflax.errors import ConfigError, DistributedError

DATA_AXIS = 'data'

# Random bits that do not depend on how an array is sharded: the same dropout masks on 1 or 8
# devices. Pinned explicitly rather than relying on the jax version's default.
jax.config.update('jax_threefry_partitionable', True)


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
def _cluster_detected() -> bool:
  """A multi-host environment that ``jax.distributed.initialize()`` can configure by itself."""
  env = os.environ
  if int(env.get('SLURM_NTASKS', '1') or 1) > 1:
    return True
  if ',' in env.get('TPU_WORKER_HOSTNAMES', ''):  # a multi-host TPU VM slice
    return True
  return bool(env.get('JAX_COORDINATOR_ADDRESS'))


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
  """Starts ``jax.distributed`` when the config or the environment asks for it (before any JAX op).

  Returns whether it was started. Explicit settings come from ``config.coordinator_address``,
  ``num_processes``, ``process_id`` (or $JAX_COORDINATOR_ADDRESS / $JAX_NUM_PROCESSES /
  $JAX_PROCESS_ID); TPU VMs and SLURM are detected by JAX itself.
  """
  mode = config.get('distributed', 'auto')
  if mode not in ('auto', 'on', 'off'):
    raise ConfigError(f"--config.distributed={mode!r}: use 'auto', 'on' or 'off'")
  explicit = bool(config.get('coordinator_address'))
  if mode == 'off' or (mode == 'auto' and not explicit and not _cluster_detected()):
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
  if explicit and kwargs['process_id'] != 0:
    # jax aborts the whole process (no Python exception) when it cannot reach the coordinator:
    # wait for its port ourselves, so an unreachable coordinator is a clear error instead.
    _wait_for_coordinator(config.coordinator_address, timeout)
  try:
    jax.distributed.initialize(initialization_timeout=timeout, **kwargs)
  except Exception as e:  # jax raises XlaRuntimeError / ValueError / RuntimeError here
    where = kwargs.get('coordinator_address') or os.environ.get('JAX_COORDINATOR_ADDRESS', 'auto')
    first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
    raise DistributedError(
        f'could not start jax.distributed with coordinator {where} within {timeout} s ({first}): '
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

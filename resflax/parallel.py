"""Devices: the 1-D ``('data',)`` mesh, the shardings, and global batches from per-process data.

The default is global-view ``jax.jit``: the batch is sharded on its leading axis over every device
of every process, the train state is replicated. BatchNorm then normalises over the global batch and
dropout masks do not depend on the device count (``jax_threefry_partitionable``).
"""

from __future__ import annotations

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from resflax.errors import ConfigError

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

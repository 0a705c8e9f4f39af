"""What the integrity checks cost: the checkpoint digest per save / restore, and the array-cache
digest per open of a CIFAR-10-sized split.

  PYTHONPATH=. python scripts/digest_cost.py [--models mnist_rescnn_deep,resnet56] [--repeat 5]

For each model: its train state as a checkpoint holds it (params, BatchNorm statistics, the
optimizer state of its experiment's recipe), the time of ``checkpoint.digest`` (done once per save
and once per restore) next to a whole orbax save + restore of the same state. Then the
``array_cache`` digest of a 50000x32x32x3 uint8 split (154 MB).
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import tempfile
import time

import jax
import numpy as np


def _best(fn, repeat: int) -> float:
  times = []
  for _ in range(repeat):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def checkpoint_cost(model_name: str, repeat: int) -> str:
  from resflax import models
  from resflax.train import checkpoint as checkpoint_lib
  from resflax.train import state as state_lib
  from resflax import config as config_lib
  spec = models.get_spec(model_name)
  config = config_lib.base_config()
  config.optimizer = 'sgd' if model_name.startswith('resnet') else 'adam'
  model = models.build(model_name, num_outputs=10)
  state = state_lib.create_state(model, state_lib.make_optimizer(config, 100), spec.input_shape,
                                 jax.random.key(0))
  tree = checkpoint_lib._pytree(state)  # pylint: disable=protected-access
  nbytes = sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree))
  meta = {'step': 1, 'epoch': 0, 'steps_per_epoch': 100, 'unlogged_metrics': []}
  digest_s = _best(lambda: checkpoint_lib.digest(tree, meta), repeat)
  with tempfile.TemporaryDirectory() as tmp:
    ckpt = checkpoint_lib.Checkpoints(pathlib.Path(tmp) / 'checkpoints', keep=repeat + 1)
    steps = iter(range(1, 10**6))
    save_s = _best(lambda: (ckpt.save(next(steps), state, meta), ckpt.wait()), repeat)
    restore_s = _best(lambda: ckpt.restore_latest(state), repeat)  # includes the digest check
    ckpt.close()
  return (f'{model_name:18s} state {nbytes / 2**20:6.1f} MiB  digest {digest_s * 1e3:6.1f} ms  '
          f'(orbax save+wait with digest {save_s * 1e3:6.1f} ms, restore with check '
          f'{restore_s * 1e3:6.1f} ms)')


def cache_cost(repeat: int) -> str:
  from etils import epath
  from resflax.data import array_cache
  images = np.random.default_rng(0).integers(0, 256, (50000, 32, 32, 3), dtype=np.uint8)
  labels = np.zeros(50000, np.int64)
  with tempfile.TemporaryDirectory() as tmp:
    cache = epath.Path(tmp)
    write_s = _best(lambda: array_cache._write(cache, 'c', (images, labels)), 1)  # pylint: disable=protected-access
    open_s = _best(lambda: array_cache.load_or_build(cache, 'c', None), repeat)
    plain_s = _best(lambda: [np.load(cache / f'c.{p}.npy', mmap_mode='r') for p in array_cache.PARTS],
                    repeat)
  return (f'array cache 50000x32x32x3 uint8 ({images.nbytes / 1e6:.0f} MB): open with digest check '
          f'{open_s * 1e3:.0f} ms (memory-map alone {plain_s * 1e3:.1f} ms); write with digest '
          f'{write_s * 1e3:.0f} ms')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--models', default='mnist_rescnn_deep,resnet56')
  parser.add_argument('--repeat', type=int, default=5)
  args = parser.parse_args()
  for name in args.models.split(','):
    print(checkpoint_cost(name, args.repeat), flush=True)
  print(cache_cost(args.repeat), flush=True)


if __name__ == '__main__':
  main()

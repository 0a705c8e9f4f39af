"""tfds datasets as numpy batches: the same global batches whatever the number of processes.

Each process holds the whole split in memory (decoded uint8), draws the same global batches from
``(config.seed, epoch)`` and keeps its contiguous slice of each; tf.data gathers, scales and
prefetches that slice in the background.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import dataclasses
import functools
import math
import socket

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from resflax.data.mnist_5k import Mnist5k
from resflax.errors import ConfigError, DatasetNotFoundError, ShapeMismatchError, UnknownNameError

try:  # tf.data only: leave the accelerators to JAX. Must run before TF's first op.
  tf.config.set_visible_devices([], 'GPU')
except RuntimeError:  # Someone ran a TF op first; the devices are already set up.
  pass


@dataclasses.dataclass(frozen=True)
class Source:
  """Where a dataset comes from: a tfds builder and the hosts that downloading it needs."""

  builder: Callable[..., tfds.core.DatasetBuilder]  # called with data_dir=
  hosts: tuple[str, ...] = ()  # () = built locally, no network needed


# The download hosts are those of the tfds sources (image_classification/mnist.py, cifar.py);
# tfds first tries its prepared copies in the tfds-data bucket on storage.googleapis.com.
DATASETS: dict[str, Source] = {
    'mnist': Source(functools.partial(tfds.builder, 'mnist'), ('storage.googleapis.com',)),
    'cifar10': Source(functools.partial(tfds.builder, 'cifar10'),
                      ('storage.googleapis.com', 'www.cs.toronto.edu')),
    'mnist_5k': Source(Mnist5k),
}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the model and the training loop need to know about a dataset."""

  name: str
  task: str  # 'classification' | 'regression'
  num_classes: int | None
  image_shape: tuple[int, ...]  # one example as stored, e.g. (28, 28, 1)
  num_train: int  # examples in train_split
  num_eval: int  # examples in eval_split
  train_split: str  # tfds split strings, e.g. 'train[:80%]'
  eval_split: str


def _reachable(host: str, timeout: float = 3.0) -> bool:
  try:
    socket.create_connection((host, 443), timeout=timeout).close()
    return True
  except OSError:
    return False


def prepared_builder(name: str, data_dir: str | None, download: bool) -> tfds.core.DatasetBuilder:
  """The tfds builder of ``name``, prepared in ``data_dir`` (downloaded or built there if needed).

  Fails within seconds, not after tfds' minutes of retries, when a download is needed but
  forbidden (``download=False``) or impossible (no route to the download hosts).
  """
  if name not in DATASETS:
    raise UnknownNameError(
        f"unknown dataset {name!r}: use --config.dataset= one of {', '.join(sorted(DATASETS))}")
  source = DATASETS[name]
  builder = source.builder(data_dir=data_dir)
  if builder.is_prepared():
    return builder
  if not source.hosts:  # Built from local files: never ask GCS for a prepared copy.
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return builder
  if not download:
    why = 'downloads are off (--config.download=False)'
  elif not any(map(_reachable, source.hosts)):
    why = f"{' and '.join(source.hosts)} cannot be reached (offline?)"
  else:
    builder.download_and_prepare()
    return builder
  raise DatasetNotFoundError(
      f'dataset {name!r} is not in {builder.data_dir} and {why}: it needs internet once '
      f'(or --config.data_dir= a directory that holds it); '
      f'--config.dataset=mnist_5k works offline')


def _load(builder: tfds.core.DatasetBuilder, split: str) -> tuple[tf.Tensor, tf.Tensor]:
  """The whole split, decoded, in tfds' fixed order: (images uint8 [n, ...], labels [n])."""
  ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
  return ds.batch(len(ds)).get_single_element()


class Data:
  """A dataset's train and eval batches for one process, and its info.

  Every process sees the same global batches and keeps rows
  ``[process_index * b, (process_index + 1) * b)`` of each, with ``b = global batch // process_count``.
  Batches are numpy dicts: ``'image'`` float32 ``[b, *input_shape]`` in [0, 1] (``x / 255``),
  ``'label'`` int32 ``[b]``, and for eval ``'mask'`` float32 ``[b]`` (1 real example, 0 padding).
  """

  def __init__(self, info: DatasetInfo, builder: tfds.core.DatasetBuilder, *, seed: int,
               batch_size: int, eval_batch_size: int, input_shape: tuple[int, ...],
               process_index: int, process_count: int):
    self.info = info
    self.steps_per_epoch = info.num_train // batch_size  # full batches only
    self._builder = builder
    self._seed = seed
    self._batch_size = batch_size
    self._eval_batch_size = eval_batch_size
    self._input_shape = input_shape
    self._process_index = process_index
    self._process_count = process_count

  @functools.cached_property
  def _train(self):
    return _load(self._builder, self.info.train_split)

  @functools.cached_property
  def _eval(self):
    # One extra zero example at index num_eval: the padding of the last eval batch.
    return tuple(tf.concat([x, tf.zeros_like(x[:1])], 0)
                 for x in _load(self._builder, self.info.eval_split))

  def train_batches(self, epoch: int, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """This process's slices of the global train batches ``start_step, ...`` of ``epoch``.

    An epoch is a permutation of the whole split drawn from ``(seed, epoch)`` alone: every call,
    every process count and every resume (``start_step``; skipping reads nothing) sees the same
    global batches. The last partial batch of an epoch is dropped (``steps_per_epoch`` full ones).
    """
    order = np.random.default_rng([self._seed, epoch]).permutation(self.info.num_train)
    steps, size = self.steps_per_epoch, self._batch_size
    batches = order[:steps * size].reshape(steps, size)
    return self._stream(self._train, batches[start_step:])

  def eval_batches(self) -> Iterator[dict[str, np.ndarray]]:
    """This process's slices of the global eval batches: every example once, in a fixed order.

    The last global batch is padded with zero examples (``'mask'`` 0) up to ``eval_batch_size``.
    """
    n, size = self.info.num_eval, self._eval_batch_size
    num_batches = -(-n // size)
    batches = np.minimum(np.arange(num_batches * size), n).reshape(num_batches, size)
    return self._stream(self._eval, batches, mask=True)

  def _stream(self, arrays, batches: np.ndarray, mask: bool = False):
    """Yields the examples at this process's columns of each row of ``batches`` (global indices)."""
    b = batches.shape[1] // self._process_count
    local = batches[:, self._process_index * b:(self._process_index + 1) * b]
    images, labels = arrays
    shape = (b, *self._input_shape)
    num_eval = self.info.num_eval

    def load(idx):
      image = tf.cast(tf.gather(images, idx), tf.float32) / 255.
      batch = {'image': tf.reshape(image, shape), 'label': tf.cast(tf.gather(labels, idx), tf.int32)}
      if mask:
        batch['mask'] = tf.cast(idx < num_eval, tf.float32)
      return batch

    ds = tf.data.Dataset.from_tensor_slices(local).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return iter(tfds.as_numpy(ds.prefetch(tf.data.AUTOTUNE)))


def build(config, input_shape: tuple[int, ...], *, process_index: int = 0,
          process_count: int = 1) -> Data:
  """The batches of ``config.dataset`` for a model whose examples have shape ``input_shape``.

  Uses ``config.dataset``, ``batch_size`` and ``eval_batch_size`` (global), ``seed``, ``data_dir``
  ('' or None: tfds' default), ``validation_split`` (0: evaluate on 'test'; f: train on the first
  1 - f of 'train' and evaluate on the rest, as Keras' ``validation_split``) and ``download``.
  """
  name, input_shape = config.dataset, tuple(input_shape)
  builder = prepared_builder(name, config.data_dir or None, config.get('download', True))
  features = builder.info.features
  image_shape = tuple(features['image'].shape)
  if math.prod(image_shape) != math.prod(input_shape):
    raise ShapeMismatchError(
        f'dataset {name!r} has examples of shape {image_shape} but the model takes {input_shape}: '
        f'pick a model made for {name} (--config.model=) or a dataset that fits the model')
  for key in ('batch_size', 'eval_batch_size'):
    if config[key] <= 0 or config[key] % process_count:
      raise ConfigError(f'--config.{key}={config[key]} must be a positive multiple of the '
                        f'{process_count} processes: set it to a multiple of {process_count}')
  split = config.validation_split
  if not 0 <= split < 1:
    raise ConfigError(f'--config.validation_split={split} must be in [0, 1): 0 evaluates on '
                      f"'test', 0.2 on the last 20% of 'train'")
  if split:
    cut = f'{100 * (1 - split):g}%'
    train_split, eval_split = f'train[:{cut}]', f'train[{cut}:]'
  else:
    train_split, eval_split = 'train', 'test'
  info = DatasetInfo(
      name=name, task='classification', num_classes=features['label'].num_classes,
      image_shape=image_shape,
      num_train=len(builder.as_dataset(split=train_split)),
      num_eval=len(builder.as_dataset(split=eval_split)),
      train_split=train_split, eval_split=eval_split)
  if config.batch_size > info.num_train:
    raise ConfigError(f'--config.batch_size={config.batch_size} exceeds the {info.num_train} '
                      f'training examples of {name!r} ({train_split}): use a smaller batch size')
  return Data(info, builder, seed=config.seed, batch_size=config.batch_size,
              eval_batch_size=config.eval_batch_size, input_shape=input_shape,
              process_index=process_index, process_count=process_count)

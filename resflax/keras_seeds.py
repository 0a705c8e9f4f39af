"""The seed notebooks' Keras models, ported to the Keras 3 API, one per ``resflax.models`` name.

These are the reference the Flax replicas in ``resflax.models.seed`` are checked against
(tests/test_keras_parity.py), and a way for users of the seed notebooks to rebuild the exact Keras
graph their trained weights belong to (see ``resflax.keras_port``)::

    from resflax.keras_seeds import build_keras_model
    model = build_keras_model('mnist_resmlp')  # seed 002 In[2], softmax output included

The layers, their order and their names follow the seeds:

- seed 002 (``tf.keras``) In[2]..In[7]: the residual MLPs, the shallow/deep residual CNNs and the
  dense-additive MLP; the repeated blocks are written once as helpers, unrolled as in the notebook;
- seed 000 (Keras 1) method 1 and 2, translated: ``Convolution2D(64, 6, 6, subsample=(3, 3))`` is
  ``Conv2D(64, (6, 6), strides=3)`` (padding 'valid', no activation), ``border_mode='same'`` is
  ``padding='same'`` and ``merge([a, b], mode='sum')`` is ``Add()([a, b])``.

Keras is an optional extra, not a core dependency (``pip install "resflax[keras]"``, also in
``[dev]`` and ``[bench]``): it is imported inside ``build_keras_model``.
"""

from __future__ import annotations

from typing import Any

from resflax.errors import UnknownNameError

# name -> the seed cell it reproduces (the same names as resflax.models.MODELS).
_SEED_CELLS = {
    'mnist_resmlp': 'seed 002 In[2]',
    'mnist_rescnn_deep': 'seed 002 In[3]',
    'cifar10_resmlp': 'seed 002 In[4]',
    'cifar10_rescnn_shallow': 'seed 002 In[5]',
    'cifar10_rescnn_deep': 'seed 002 In[6]',
    'mnist_densesum_mlp': 'seed 002 In[7]',
    'steering_conv_shortcut': 'seed 000 method 1',
    'steering_dense_shortcut': 'seed 000 method 2',
}


def build_keras_model(name: str) -> Any:
  """The Keras model that seed cell ``name`` builds (uncompiled, freshly initialised).

  Classifiers end in ``Dense(10, activation='softmax')`` as in the seed; the steering models in a
  linear ``Dense(1)``.
  """
  import keras  # pylint: disable=g-import-not-at-top
  from keras import layers  # pylint: disable=g-import-not-at-top

  def mlp_stem(inputs):
    x = layers.Dense(128, activation='relu')(inputs)
    return layers.Dense(128, activation='relu')(x)  # block_1_output

  def mlp_body(x):
    """2 x (Dense128 -> BN -> relu -> Dropout .5): the residual branch of In[2]/In[4]/In[7]."""
    for _ in range(2):
      x = layers.Dense(128)(x)
      x = layers.BatchNormalization()(x)
      x = layers.Activation('relu')(x)
      x = layers.Dropout(0.5)(x)
    return x

  def mlp_head(x):
    x = layers.Dense(128, activation='relu')(x)
    x = layers.Dropout(0.5)(x)
    return layers.Dense(10, activation='softmax')(x)

  def residual_mlp(input_dim):  # In[2] (MNIST), In[4] (CIFAR-10)
    inputs = keras.Input(shape=(input_dim,), name='img')
    block_output = mlp_stem(inputs)
    for _ in range(3):  # block_2_output .. block_4_output
      block_output = layers.add([mlp_body(block_output), block_output])
    return keras.Model(inputs, mlp_head(block_output), name='resnet')

  def densesum_mlp():  # In[7]: every block output is added back, not only the previous one
    inputs = keras.Input(shape=(784,), name='img')
    outputs = [mlp_stem(inputs)]  # [block_1_output, block_2_output, ...]
    for _ in range(3):
      x = mlp_body(outputs[-1])
      outputs.append(layers.add([x, *outputs]))  # add([x, block_1_output, .., block_{i-1}_output])
    return keras.Model(inputs, mlp_head(outputs[-1]), name='resnet')

  def residual_cnn(input_shape, num_blocks, body):  # In[3], In[5], In[6]
    inputs = keras.Input(shape=input_shape, name='img')
    x = layers.Conv2D(32, 3, activation='relu')(inputs)
    x = layers.Conv2D(64, 3, activation='relu')(x)
    block_output = layers.MaxPooling2D(3)(x)  # block_1_output
    for _ in range(num_blocks):
      if body == 'deep':  # In[3]/In[6]
        x = layers.Conv2D(64, 3, activation='relu', padding='same')(block_output)
        x = layers.BatchNormalization()(x)
        x = layers.Conv2D(64, 3, activation='relu', padding='same')(x)
      else:  # 'shallow', In[5]
        x = block_output
        for _ in range(2):
          x = layers.Conv2D(64, 3, padding='same')(x)
          x = layers.BatchNormalization()(x)
          x = layers.Activation('relu')(x)
      block_output = layers.add([x, block_output])
    x = layers.Conv2D(64, 3, activation='relu')(block_output)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(256, activation='relu')(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(10, activation='softmax')(x)
    return keras.Model(inputs, outputs, name='resnet')

  def steering_conv_shortcut():  # seed 000 method 1 (In[114])
    img_in = keras.Input(shape=(120, 160, 3), name='img_in')
    net = layers.Conv2D(64, (6, 6), strides=(3, 3), name='conv1')(img_in)
    net = layers.Dropout(.2)(net)
    aux1 = layers.Dense(64, name='aux1')(net)
    net = layers.Conv2D(64, (3, 3), strides=(1, 1), padding='same', name='conv2')(net)
    net = layers.Dropout(.2)(net)
    net = layers.Dense(64)(net)
    net = layers.Add()([net, aux1])
    net = layers.Flatten()(net)
    angle_out = layers.Dense(1, name='angle_out')(net)
    return keras.Model(inputs=[img_in], outputs=[angle_out])

  def steering_dense_shortcut():  # seed 000 method 2 (In[117])
    img_in = keras.Input(shape=(120, 160, 3), name='img_in')
    net = layers.Conv2D(64, (6, 6), strides=(3, 3), name='conv0')(img_in)
    net = layers.Dropout(.2)(net)
    aux1 = layers.Flatten(name='aux1_flat')(net)
    aux1 = layers.Dense(64, name='aux1_dense')(aux1)
    net = layers.Conv2D(128, (3, 3), strides=(2, 2), padding='same', name='conv2')(net)
    net = layers.Dropout(.2)(net)
    net = layers.Flatten()(net)
    net = layers.Dense(64)(net)
    net = layers.Add()([net, aux1])
    angle_out = layers.Dense(1, name='angle_out')(net)
    return keras.Model(inputs=[img_in], outputs=[angle_out])

  builders = {
      'mnist_resmlp': lambda: residual_mlp(784),
      'mnist_rescnn_deep': lambda: residual_cnn((28, 28, 1), 19, 'deep'),
      'cifar10_resmlp': lambda: residual_mlp(3072),
      'cifar10_rescnn_shallow': lambda: residual_cnn((32, 32, 3), 2, 'shallow'),
      'cifar10_rescnn_deep': lambda: residual_cnn((32, 32, 3), 19, 'deep'),
      'mnist_densesum_mlp': densesum_mlp,
      'steering_conv_shortcut': steering_conv_shortcut,
      'steering_dense_shortcut': steering_dense_shortcut,
  }
  assert builders.keys() == _SEED_CELLS.keys()
  try:
    builder = builders[name]
  except KeyError:
    raise UnknownNameError(
        f"no seed Keras model named {name!r}: use one of {', '.join(sorted(builders))}") from None
  return builder()

"""Keras 3 versions of the zoo models the benchmark times: ResNet-20/56 (option A), DenseNet-BC-100.

As ``resflax.models.resnet_cifar`` / ``densenet`` (and ``torch_zoo``): bias-free convs, BatchNorm with
the papers' Torch settings (momentum 0.9, epsilon 1e-5), a softmax Dense head (compiled with
categorical cross-entropy, as the seed models), the same parameter counts (tests/test_bench.py).
A stride-2 3x3 conv is ``ZeroPadding2D(1)`` + a 'valid' conv, which looks at the same positions as
torch's ``padding=1`` (Keras' 'same' would pad only after).
"""

from __future__ import annotations

import math
from typing import Any


def build_keras_model(name: str) -> Any:
  """The Keras model of zoo model ``name`` (uncompiled), input ``(32, 32, 3)``."""
  import keras  # pylint: disable=g-import-not-at-top
  from keras import layers  # pylint: disable=g-import-not-at-top

  def bn(x):
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)

  def conv(x, features, kernel=3, strides=1):
    if kernel == 3 and strides > 1:
      return layers.Conv2D(features, 3, strides=strides, use_bias=False)(layers.ZeroPadding2D(1)(x))
    return layers.Conv2D(features, kernel, padding='same', use_bias=False)(x)

  def zero_pad_shortcut(x, features, strides):
    extra = features - x.shape[-1]

    def pad(t):
      t = t[:, ::strides, ::strides, :]
      return keras.ops.pad(t, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]])

    return layers.Lambda(pad)(x)

  def resnet(n):
    inputs = keras.Input(shape=(32, 32, 3))
    x = layers.Activation('relu')(bn(conv(inputs, 16)))
    for stage, features in enumerate((16, 32, 64)):
      for b in range(n):
        strides = 2 if stage > 0 and b == 0 else 1
        y = layers.Activation('relu')(bn(conv(x, features, strides=strides)))
        y = bn(conv(y, features))
        shortcut = x if x.shape[-1] == features and strides == 1 else zero_pad_shortcut(x, features, strides)
        x = layers.Activation('relu')(layers.add([y, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10, activation='softmax')(x), name=f'resnet{6 * n + 2}')

  def densenet_bc(n, k):
    inputs = keras.Input(shape=(32, 32, 3))
    x = conv(inputs, 2 * k)
    for stage in range(3):
      for _ in range(n):
        y = conv(layers.Activation('relu')(bn(x)), 4 * k, kernel=1)
        y = conv(layers.Activation('relu')(bn(y)), k)
        x = layers.Concatenate()([x, y])
      if stage < 2:
        x = conv(layers.Activation('relu')(bn(x)), math.floor(0.5 * x.shape[-1]), kernel=1)
        x = layers.AveragePooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(layers.Activation('relu')(bn(x)))
    return keras.Model(inputs, layers.Dense(10, activation='softmax')(x), name='densenet_bc')

  builders = {
      'resnet20': lambda: resnet(3),
      'resnet56': lambda: resnet(9),
      'densenet_bc100_k12': lambda: densenet_bc(16, 12),
  }
  try:
    return builders[name]()
  except KeyError:
    raise KeyError(f"no Keras zoo model named {name!r}: use one of {', '.join(builders)}") from None

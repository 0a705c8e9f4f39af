"""Train-time augmentation and the region-of-interest crop: what they are, drawn from the config.

Two implementations apply an ``Augment`` to a batch, the same numbers bit for bit: tf.data's map in
``pipeline.Data._stream`` and the in-step ``on_device.make_batch``. Both import this module, and
neither imports the other's.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from resflax.errors import ConfigError

AUGMENT_TAG = 1  # an epoch's augmentation draws: default_rng([seed, epoch, AUGMENT_TAG])
DRAWS = ('flip', 'alpha', 'beta', 'top', 'left')  # the names of an epoch's augmentation draws


@dataclasses.dataclass(frozen=True)
class Augment:
  """Train-time augmentation (the CIFAR papers' and the Donkeycar community's) and the ROI crop.

  Per training example, in this order: with ``crop_padding = p > 0`` (1512.03385 sec. 4.2: p = 4)
  zero-pad each border by p pixels and crop a random window of the original size (offsets uniform in
  ``[0, 2p]``, as torchvision's ``RandomCrop(size, padding=p)``); with probability 1/2 (``flip``)
  mirror it left-right and,
  for regression, negate the label (the steering angle); with probability 1/2 (Donkeycar's
  ``AUGMENTATIONS = ['BRIGHTNESS']``, albumentations' ``RandomBrightnessContrast``) map
  ``x -> clip(alpha * x + beta, 0, 1)``, ``alpha ~ U[1 - contrast, 1 + contrast]``,
  ``beta ~ U[-brightness, brightness]``; then zero the ROI border (Donkeycar 5's ``'CROP'``
  transformation, ``ImgCropMask``: the image keeps its shape). Eval examples get the ROI crop only.
  The draws depend on ``(seed, epoch, step, position in the global batch)`` alone.
  """

  flip: bool = False
  brightness: float = 0.0
  contrast: float = 0.0
  roi_crop: tuple[int, ...] = (0, 0, 0, 0)  # pixels zeroed: (top, bottom, left, right)
  crop_padding: int = 0  # p: pad-and-crop translation by up to p pixels each way

  @property
  def random(self) -> bool:
    return bool(self.flip or self.brightness or self.contrast or self.crop_padding)


def augment_from(config) -> Augment:
  """The ``augment_*`` and ``roi_crop`` keys of a config (absent keys: off)."""
  augment = Augment(flip=bool(config.get('augment_flip', False)),
                    brightness=float(config.get('augment_brightness', 0.0)),
                    contrast=float(config.get('augment_contrast', 0.0)),
                    roi_crop=tuple(config.get('roi_crop', (0, 0, 0, 0))),
                 crop_padding=int(config.get('augment_crop_padding', 0)))
  if augment.crop_padding < 0:
    raise ConfigError(f'--config.augment_crop_padding={augment.crop_padding} must be >= 0 '
                      '(0: off; the CIFAR papers use 4)')
  for key in ('brightness', 'contrast'):
    if not 0 <= getattr(augment, key) < 1:
      raise ConfigError(f'--config.augment_{key}={getattr(augment, key)} must be in [0, 1) '
                        '(0: off; Donkeycar uses AUG_BRIGHTNESS_RANGE = 0.2)')
  return augment


def roi_mask(image_shape: tuple[int, ...], roi_crop) -> np.ndarray | None:
  """float32 ``[H, W, 1]``: 1 inside the region of interest, 0 on the cropped border; None: no crop.

  ``roi_crop = (top, bottom, left, right)``: rows / columns zeroed at each border, as Donkeycar's
  ``ROI_CROP_TOP``, ``ROI_CROP_BOTTOM``, ``ROI_CROP_LEFT``, ``ROI_CROP_RIGHT``.
  """
  roi_crop = tuple(roi_crop)
  if not any(roi_crop):
    return None
  if len(image_shape) != 3:
    raise ConfigError(f'--config.roi_crop={roi_crop} needs images (height, width, channels); '
                      f'this dataset stores {image_shape}')
  height, width = image_shape[:2]
  if (len(roi_crop) != 4 or not all(isinstance(v, int) and v >= 0 for v in roi_crop)
      or roi_crop[0] + roi_crop[1] >= height or roi_crop[2] + roi_crop[3] >= width):
    raise ConfigError(f'--config.roi_crop={roi_crop} must be 4 pixel counts (top, bottom, left, '
                      f'right) >= 0 that leave part of the {height}x{width} image, '
                      'e.g. (45, 0, 0, 0)')
  top, bottom, left, right = roi_crop
  mask = np.zeros((height, width, 1), np.float32)
  mask[top:height - bottom, left:width - right] = 1
  return mask

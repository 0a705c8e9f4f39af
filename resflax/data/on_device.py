"""A small dataset held on the device: train batches gathered and augmented inside the train step.

``--config.data_on_device`` ('auto': a train split up to ``AUTO_MAX_BYTES``, under jit). The whole
split goes to the device once as uint8; each step receives a *plan* (the global batch's example
indices and its augmentation draws, the same numbers ``Data.train_batches`` uses) and
``make_batch`` builds the batch there (eval batches too, from ``Data.eval_plan``). No tf.data, no
host-to-device copy per step. ``make_batch`` gives the batches of the tf.data map in
``pipeline.Data._stream`` bit for bit (tests/test_data.py, tests/test_steering.py): pixel values come
from a table made with tf.data's float32 operations, and crop, flip and ROI act on the uint8 pixels.
Brightness/contrast jitter is left to tf.data (``unsupported``).
"""

from __future__ import annotations

import dataclasses

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from resflax.data.augment import Augment

AUTO_MAX_BYTES = 1 << 30  # 'auto' keeps a train split of up to 1 GiB (uint8) on the device


@dataclasses.dataclass(frozen=True)
class BatchRecipe:
  """How ``make_batch`` turns stored examples into a train batch (static under jit)."""

  input_shape: tuple[int, ...]  # one example as the model takes it
  regression: bool
  augment: Augment = Augment()
  roi: np.ndarray | None = dataclasses.field(default=None, compare=False, hash=False)
  normalization: tuple[np.ndarray, np.ndarray] | None = dataclasses.field(
      default=None, compare=False, hash=False)


def unsupported(recipe: BatchRecipe) -> str | None:
  """Why ``make_batch`` cannot build these batches exactly as tf.data does; None: it can.

  Brightness/contrast jitter (``clip(x * alpha + beta)``): XLA fuses the multiply and the add into
  one fused multiply-add, one rounding fewer than tf.data, and offers no way to keep them apart.
  """
  if recipe.augment.brightness or recipe.augment.contrast:
    return 'brightness/contrast jitter (--config.augment_brightness / augment_contrast)'
  return None


def source(recipe: BatchRecipe, images: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
  """What ``make_batch`` reads: the stored split (``Data.train_arrays``) and ``pixel_table``."""
  return {'images': images, 'labels': labels, 'table': pixel_table(recipe, images)}


def pixel_table(recipe: BatchRecipe, images: np.ndarray) -> np.ndarray:
  """float32 ``[channels, 256]``: each stored pixel value as tf.data makes it, ``v / 255`` and, with
  normalisation, ``(v / 255 - mean[c]) / std[c]``, computed here in numpy's float32 (the same IEEE
  operations as tf.data). In a compiled step XLA would turn these divisions into multiplications
  by reciprocals (one rounding apart); a table lookup is exact."""
  channels = images.shape[-1] if images.ndim == 4 else 1
  values = np.arange(256, dtype=np.float32)[None] / np.float32(255.)  # [1, 256]
  if recipe.normalization is not None:
    mean, std = recipe.normalization
    values = (values - mean[:, None]) / std[:, None]
  return np.broadcast_to(values, (channels, 256)).astype(np.float32)


def make_batch(recipe: BatchRecipe, data: dict[str, jax.Array],
               plan: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """The train batch of ``plan`` from ``data`` (``source``: the split on the device).

  ``data['images']`` uint8 ``[n, *stored shape]``, ``data['labels']`` int32 / float32 ``[n]``;
  ``plan['index']`` int32 ``[b]`` and, with random augmentation, ``flip``, ``alpha``, ``beta``,
  ``top``, ``left`` ``[b]`` (``Data.train_plan``). Crop, flip and the ROI act on the stored uint8
  pixels (the same as on their float values); then ``pixel_table`` gives each pixel its value.
  Brightness/contrast jitter is not done here (``unsupported``).
  """
  augment, regression = recipe.augment, recipe.regression
  index = plan['index']
  pixels = data['images'][index]  # uint8 [b, H, W, C] (or [b, D])
  label = data['labels'][index].astype(jnp.float32 if regression else jnp.int32)
  per_example = lambda v: v.reshape(-1, *[1] * (pixels.ndim - 1))
  if 'flip' in plan and augment.crop_padding:
    pixels = pad_and_crop(pixels, augment.crop_padding, plan['top'], plan['left'])
  if 'flip' in plan and augment.flip:
    pixels = jnp.where(per_example(plan['flip']), pixels[:, :, ::-1], pixels)
    if regression:
      label = jnp.where(plan['flip'], -label, label)
  if recipe.roi is not None:  # zeroing the stored pixel or its value after the lookup is the same
    pixels = pixels * jnp.asarray(recipe.roi, jnp.uint8)
  channels = data['table'].shape[0]
  flat_index = pixels.astype(jnp.int32) + 256 * jnp.arange(channels, dtype=jnp.int32)
  image = data['table'].reshape(-1)[flat_index if pixels.ndim == 4 else pixels.astype(jnp.int32)]
  return {'image': image.reshape(index.shape[0], *recipe.input_shape), 'label': label}


def pad_and_crop(image: jax.Array, padding: int, top: jax.Array, left: jax.Array) -> jax.Array:
  """Each image of ``[b, H, W, C]`` zero-padded by ``padding`` and cropped back to HxW at its own
  ``(top[i], left[i])`` (as ``pipeline._pad_and_crop``)."""
  height, width, channels = image.shape[1:]
  padded = jnp.pad(image, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  crop = lambda x, t, l: lax.dynamic_slice(x, (t, l, 0), (height, width, channels))
  return jax.vmap(crop)(padded, top, left)

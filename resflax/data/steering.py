"""``synthetic_steering``: an offline tfds builder of procedurally drawn road scenes (seed 000).

Each example is a 120x160x3 camera frame of a road seen from a car, and the steering angle in
[-1, 1] (Donkeycar's convention: -1 full left, +1 full right) that is known by construction:

  angle = 0.6 * curvature - 0.4 * offset

- ``curvature`` in [-1, 1]: how the road bends ahead (> 0: to the right, so steer right). It moves
  the road's centre line near the horizon by ``CURVE_SHIFT * curvature`` pixels.
- ``offset`` in [-1, 1]: where the car is across the road (> 0: right of the centre, so steer left,
  back to the centre). It moves the road's centre line at the bottom of the frame by
  ``-OFFSET_SHIFT * offset`` pixels.

In between, the centre line of the road in row ``y`` is ``road_centre(t, curvature, offset)`` with
``t`` going from 0 at the horizon to 1 at the bottom row; the road (grey, with white edge lines and
a dashed yellow centre line) narrows with ``t`` as in a perspective view. Colours, lighting, the
dash phase and pixel noise vary per example (nuisances that do not change the label). A scene
mirrored left-right is exactly the scene of ``(-curvature, -offset)``, whose angle is the negated
angle: the horizontal-flip augmentation is label-exact on this data.

Example ``i`` of a split is drawn from ``numpy.random.default_rng([seed, split, i])`` alone, so the
dataset is deterministic for a given seed, and a larger size only appends examples. The default
size (2,000 train / 500 test) builds in a few seconds; other sizes and seeds are builder configs:

  resflax train --config experiments/configs/steering_conv_shortcut.py \
      --config.synthetic_train_size=500 --config.synthetic_seed=3 --workdir runs/s
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from resflax.errors import ConfigError

HEIGHT, WIDTH = 120, 160
HORIZON = 40.0  # rows above this are sky
ROAD_HALF_WIDTH = 62.0  # pixels, at the bottom row (t = 1); 0 at the horizon
OFFSET_SHIFT = 36.0  # pixels the road centre moves at the bottom row for |offset| = 1
CURVE_SHIFT = 60.0  # pixels the road centre moves at the horizon for |curvature| = 1
ANGLE_PER_CURVATURE, ANGLE_PER_OFFSET = 0.6, -0.4  # |angle| <= 1 for params in [-1, 1]
SPLITS = {'train': 0, 'test': 1}  # the split's tag in each example's seed

DEFAULT_NUM_TRAIN, DEFAULT_NUM_TEST, DEFAULT_SEED = 2000, 500, 0


def steering_angle(curvature, offset):
  """The label of a scene: steer with the bend, and back towards the road's centre."""
  return ANGLE_PER_CURVATURE * np.asarray(curvature) + ANGLE_PER_OFFSET * np.asarray(offset)


def row_depth(y) -> np.ndarray:
  """``t`` of pixel row ``y`` (its centre): 0 at the horizon, 1 at the bottom; <= 0 is sky."""
  return (np.asarray(y, np.float64) + 0.5 - HORIZON) / (HEIGHT - HORIZON)


def road_centre(t, curvature, offset) -> np.ndarray:
  """Column of the road's centre line at depth ``t``, in pixels from the image centre (+ right)."""
  t = np.asarray(t, np.float64)
  return -OFFSET_SHIFT * offset * t + CURVE_SHIFT * curvature * np.square(1.0 - t)


@dataclasses.dataclass(frozen=True)
class Nuisance:
  """What varies between scenes without changing the label (all colours RGB in [0, 1])."""

  sky: tuple[float, float, float] = (0.55, 0.7, 0.9)
  ground: tuple[float, float, float] = (0.3, 0.45, 0.2)
  road: float = 0.4  # grey level of the asphalt
  line: tuple[float, float, float] = (0.95, 0.95, 0.95)  # edge lines
  gain: float = 1.0  # global lighting
  dash_phase: float = 0.0  # in [0, 1): where the centre line's dashes start
  noise: int = 0  # pixel noise: uniform integers in [-noise, noise] added to the uint8 values

  @classmethod
  def draw(cls, rng: np.random.Generator) -> Nuisance:
    return cls(sky=tuple(rng.uniform([0.45, 0.6, 0.75], [0.7, 0.85, 1.0])),
               ground=tuple(rng.uniform([0.2, 0.3, 0.1], [0.45, 0.55, 0.3])),
               road=float(rng.uniform(0.3, 0.5)),
               line=tuple(rng.uniform(0.85, 1.0, 3)),
               gain=float(rng.uniform(0.85, 1.15)),
               dash_phase=float(rng.uniform()),
               noise=4)


def _coverage(distance, half_width):
  """Anti-aliased coverage of a pixel by a band of ``half_width`` at ``distance`` from its axis."""
  return np.clip(half_width + 0.5 - distance, 0.0, 1.0)


def render(curvature: float, offset: float, nuisance: Nuisance = Nuisance(),
           rng: np.random.Generator | None = None) -> np.ndarray:
  """The uint8 [120, 160, 3] frame of a scene; ``rng`` draws the pixel noise (None: no noise)."""
  t = row_depth(np.arange(HEIGHT))[:, None, None]  # [H, 1, 1]
  u = (np.arange(WIDTH) + 0.5 - WIDTH / 2)[None, :, None]  # [1, W, 1] columns from the centre
  ground = t > 0
  tg = np.where(ground, t, 1.0)  # depth, defined on the ground rows
  centre = road_centre(tg, curvature, offset)
  half_width = ROAD_HALF_WIDTH * tg
  line_half = 0.4 + 1.6 * tg
  distance = np.abs(u - centre)

  sky_shade = 0.8 + 0.2 * (np.arange(HEIGHT)[:, None, None] / HORIZON)
  image = np.where(ground, np.asarray(nuisance.ground), np.asarray(nuisance.sky) * sky_shade)
  road = _coverage(distance, half_width) * ground
  image = image * (1 - road) + nuisance.road * road
  edges = np.maximum(_coverage(np.abs(distance - half_width), line_half), 0) * ground
  image = image * (1 - edges) + np.asarray(nuisance.line) * edges
  # Dashes of constant length on the road: on where the depth 1/t has a fractional part < 0.5.
  dashes = (np.mod(3.0 / tg + nuisance.dash_phase, 1.0) < 0.5) & ground & (tg > 0.05)
  centre_line = _coverage(distance, 0.7 * line_half) * dashes
  image = image * (1 - centre_line) + np.asarray([0.95, 0.8, 0.1]) * centre_line
  image = np.round(np.clip(image * nuisance.gain, 0.0, 1.0) * 255).astype(np.int16)
  if rng is not None and nuisance.noise:
    image += rng.integers(-nuisance.noise, nuisance.noise + 1, image.shape, dtype=np.int16)
  return np.clip(image, 0, 255).astype(np.uint8)


def example(seed: int, split: str, index: int) -> dict[str, np.ndarray]:
  """Example ``index`` of ``split``: the frame, its angle and the scene parameters behind it."""
  rng = np.random.default_rng([seed, SPLITS[split], index])
  curvature, offset = (float(v) for v in rng.uniform(-1.0, 1.0, 2))
  image = render(curvature, offset, Nuisance.draw(rng), rng)
  return {'image': image, 'label': np.float32(steering_angle(curvature, offset)),
          'curvature': np.float32(curvature), 'offset': np.float32(offset)}


@dataclasses.dataclass
class SyntheticSteeringConfig(tfds.core.BuilderConfig):
  """Sizes of the splits and the seed of the scenes."""

  num_train: int = DEFAULT_NUM_TRAIN
  num_test: int = DEFAULT_NUM_TEST
  seed: int = DEFAULT_SEED


def config_name(num_train: int, num_test: int, seed: int) -> str:
  return f'train{num_train}_test{num_test}_seed{seed}'


DEFAULT_CONFIG = SyntheticSteeringConfig(
    name=config_name(DEFAULT_NUM_TRAIN, DEFAULT_NUM_TEST, DEFAULT_SEED),
    description='The default: 2,000 train / 500 test scenes of seed 0.')


class SyntheticSteering(tfds.core.GeneratorBasedBuilder):
  """Procedural road scenes, 120x160x3, with the steering angle known by construction."""

  name = 'synthetic_steering'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Road scenes of curvature and offset; angle = 0.6 c - 0.4 o.'}
  BUILDER_CONFIGS = [DEFAULT_CONFIG]
  DEFAULT_CONFIG_NAME = DEFAULT_CONFIG.name

  @classmethod
  def config(cls, num_train: int = DEFAULT_NUM_TRAIN, num_test: int = DEFAULT_NUM_TEST,
             seed: int = DEFAULT_SEED) -> SyntheticSteeringConfig:
    """The builder config of these sizes and seed (pass it as ``config=``)."""
    if num_train < 1 or num_test < 1:
      raise ConfigError(f'synthetic_steering sizes must be >= 1: got --config.synthetic_train_size='
                        f'{num_train}, --config.synthetic_test_size={num_test}')
    if seed < 0:
      raise ConfigError(f'--config.synthetic_seed={seed} must be >= 0')
    name = config_name(num_train, num_test, seed)
    if name == DEFAULT_CONFIG.name:
      return DEFAULT_CONFIG  # tfds refuses a second config object with a registered name
    return SyntheticSteeringConfig(name=name, num_train=num_train, num_test=num_test, seed=seed,
                                   description=f'{num_train} train / {num_test} test, seed {seed}.')

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            # Raw bytes: PNG would cost more time than the drawing and save little (noise).
            'image': tfds.features.Tensor(shape=(HEIGHT, WIDTH, 3), dtype=np.uint8,
                                          encoding=tfds.features.Encoding.BYTES),
            'label': tfds.features.Scalar(np.float32, doc='steering angle in [-1, 1], + right'),
            'curvature': tfds.features.Scalar(np.float32, doc='bend of the road, + right'),
            'offset': tfds.features.Scalar(np.float32, doc='car across the road, + right'),
        }),
        supervised_keys=('image', 'label'),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Drawn, not downloaded.
    c = self.builder_config
    return {'train': self._generate_examples('train', c.num_train),
            'test': self._generate_examples('test', c.num_test)}

  def _generate_examples(self, split: str, size: int):
    seed = self.builder_config.seed
    for i in range(size):
      yield i, example(seed, split, i)


def builder_options(config) -> dict:
  """``SyntheticSteering`` kwargs from a resflax config (``synthetic_*`` keys)."""
  return {'config': SyntheticSteering.config(
      config.get('synthetic_train_size', DEFAULT_NUM_TRAIN),
      config.get('synthetic_test_size', DEFAULT_NUM_TEST),
      config.get('synthetic_seed', DEFAULT_SEED))}

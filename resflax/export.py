"""``resflax export``: a trained steering model as a TF SavedModel and a TFLite file for the car.

  resflax export --workdir runs/steering_conv_shortcut --out exported/ [--throttle 0.3]

Writes, from the latest checkpoint of ``--workdir`` (converted with ``jax.experimental.jax2tf``):

- ``DIR/saved_model``: a TF SavedModel with two signatures, both applying the preprocessing of
  training (and the ROI crop of the run's config, if any) inside the model:
  - ``serving_default``: ``img_in`` float32 ``[N, 120, 160, 3]`` in [0, 1], the camera frame
    ``x / 255`` as Donkeycar's ``utils.normalize_image`` makes it;
  - ``serve_uint8``: ``image`` uint8 ``[N, 120, 160, 3]``, the raw camera frame.
  Outputs: ``n_outputs0`` float32 ``[N, 1]``, the steering angle (named as the outputs of
  Donkeycar's ``KerasLinear``), and with ``--throttle T`` also ``n_outputs1``, the constant T.
- ``DIR/model.tflite`` (if TFLite converts it): ``serving_default`` of the SavedModel. With
  ``--throttle``, a Donkeycar car drives it as it is: ``donkey drive --model DIR/model.tflite
  --type tflite_linear`` (``TfLite`` interpreter + ``KerasLinear``, which feeds
  ``normalize_image(frame)`` and reads ``n_outputs0`` / ``n_outputs1``).
- ``DIR/export.json``: what was exported (model, step, input conventions, ROI crop) and the largest
  difference between each exported function and the JAX model on a check batch.

``load_saved_model(DIR)`` and ``tflite_predict(DIR, frames)`` read them back.
"""

from __future__ import annotations

import json
import pathlib
import warnings

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from resflax import config as config_lib
from resflax import models
from resflax.data import pipeline
from resflax.errors import CheckpointError, ConfigError, ResflaxError, WorkdirError

tf = pipeline.tensorflow()  # kept off the accelerators

CHECK_BATCH = 4  # frames in the self-check written to export.json


def _restore(workdir: pathlib.Path):
  """(config, model, variables, step) of the latest readable checkpoint of ``workdir``."""
  from resflax.train import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  from resflax.train import state as state_lib  # pylint: disable=g-import-not-at-top
  config_path = workdir / 'config.json'
  if not config_path.exists():
    raise WorkdirError(f'{config_path} not found: {str(workdir)!r} is not a resflax run directory '
                       '(train one with `resflax train --config ... --workdir`)')
  config = ml_collections.ConfigDict(
      config_lib.read_json(config_path, fix='train again in a new --workdir'))
  spec = models.get_spec(config.model)
  if spec.task != 'regression':
    raise ConfigError(f'{config.model} is a {spec.task} model: `resflax export` writes steering '
                      '(regression) models for a Donkeycar')
  if config.get('normalize', False):
    raise ConfigError(f'{workdir} was trained with --config.normalize=True: `resflax export` '
                      'writes models that take x / 255 (as Donkeycar feeds them); retrain without '
                      'normalize to export')
  model = models.build(config.model, num_outputs=1)
  tx = state_lib.make_optimizer(config, 1)  # the optimizer state's structure, for the restore
  template = jax.jit(lambda rng: state_lib.create_state(model, tx, spec.input_shape, rng))(
      jax.random.key(0))
  ckpt = checkpoint_lib.Checkpoints(workdir / 'checkpoints', create=False)
  try:
    state, meta = ckpt.restore_latest(template, set_aside=False)
  finally:
    ckpt.close()
  if meta is None:
    raise CheckpointError(f'no readable checkpoint in {ckpt.directory}: train first, or point '
                          '--workdir at a run directory that has one')
  variables = {'params': state.params, 'batch_stats': state.batch_stats or {}}
  return config, spec, model, jax.device_get(variables), int(jax.device_get(state.step))


def predict_fn(model, spec, config):
  """``f(variables, frames float32 in [0, 1]) -> [N, 1]``: training's ROI crop, then the model."""
  mask = pipeline.roi_mask(spec.input_shape, config.get('roi_crop', (0, 0, 0, 0)))

  def predict(variables, frames):
    if mask is not None:
      frames = frames * mask
    return model.apply(variables, frames, train=False)

  return predict


def export(workdir: str | pathlib.Path, out: str | pathlib.Path, *, throttle: float | None = None,
           tflite: bool = True) -> dict:
  """Writes ``out/saved_model`` (+ ``model.tflite``, ``export.json``); returns the summary."""
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  workdir, out = pathlib.Path(workdir), pathlib.Path(out)
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise ResflaxError(f'--out {str(out)!r} exists and is not an empty directory: pick a new one')
  config, spec, model, variables, step = _restore(workdir)
  out.mkdir(parents=True, exist_ok=True)
  predict = predict_fn(model, spec, config)
  shape = tuple(spec.input_shape)
  dims = ', '.join(map(str, shape))
  tf_predict = jax2tf.convert(predict, polymorphic_shapes=[None, f'(b, {dims})'],
                              with_gradient=False)

  module = tf.Module()
  module.variables_ = tf.nest.map_structure(tf.Variable, jax.tree.map(np.asarray, variables))

  def outputs(angle):
    result = {'n_outputs0': angle}
    if throttle is not None:
      result['n_outputs1'] = tf.fill(tf.shape(angle), tf.constant(throttle, tf.float32))
    return result

  @tf.function(autograph=False,
               input_signature=[tf.TensorSpec((None, *shape), tf.float32, name='img_in')])
  def serve_float(img_in):
    return outputs(tf_predict(module.variables_, img_in))

  @tf.function(autograph=False,
               input_signature=[tf.TensorSpec((None, *shape), tf.uint8, name='image')])
  def serve_uint8(image):
    # The training pipeline's x / 255, in TensorFlow as there.
    return outputs(tf_predict(module.variables_, tf.cast(image, tf.float32) / 255.))

  module.serve_float, module.serve_uint8 = serve_float, serve_uint8
  saved = out / 'saved_model'
  tf.saved_model.save(module, str(saved), signatures={'serving_default': serve_float,
                                                      'serve_uint8': serve_uint8})
  summary = {
      'workdir': str(workdir), 'model': config.model, 'step': step, 'saved_model': str(saved),
      'inputs': {'serving_default': f'img_in float32 [N, {dims}] in [0, 1] (x / 255)',
                 'serve_uint8': f'image uint8 [N, {dims}] (raw frame)'},
      'outputs': {'n_outputs0': 'steering angle [N, 1]'},
      'roi_crop': list(config.get('roi_crop', (0, 0, 0, 0))),
  }
  if throttle is not None:
    summary['outputs']['n_outputs1'] = f'constant throttle {throttle}'
  if tflite:
    try:
      converter = tf.lite.TFLiteConverter.from_saved_model(str(saved), ['serving_default'])
      (out / 'model.tflite').write_bytes(converter.convert())
      summary['tflite'] = str(out / 'model.tflite')
    except Exception as e:  # the converter raises many types; the SavedModel is still good
      warnings.warn(f'TFLite conversion failed ({type(e).__name__}: {str(e)[:300]}); '
                    f'the SavedModel in {saved} is written')
  summary['max_abs_diff_vs_jax'] = check(out, model, spec, config, variables)
  (out / 'export.json').write_text(json.dumps(summary, indent=2) + '\n')
  return summary


def jax_predict(model, spec, config, variables, frames: np.ndarray) -> np.ndarray:
  """The JAX model on frames (uint8, or float32 in [0, 1]), preprocessed as in training."""
  if frames.dtype == np.uint8:
    frames = (tf.cast(frames, tf.float32) / 255.).numpy()
  return np.asarray(jax.jit(predict_fn(model, spec, config))(variables, jnp.asarray(frames)))


def load_saved_model(out: str | pathlib.Path):
  return tf.saved_model.load(str(pathlib.Path(out) / 'saved_model'))


def tflite_predict(out: str | pathlib.Path, frames: np.ndarray) -> np.ndarray:
  """``n_outputs0`` of ``out/model.tflite`` on float32 frames in [0, 1], one at a time."""
  interpreter = tf.lite.Interpreter(model_path=str(pathlib.Path(out) / 'model.tflite'))
  runner = interpreter.get_signature_runner('serving_default')
  return np.concatenate([runner(img_in=f[None].astype(np.float32))['n_outputs0'] for f in frames])


def check(out: pathlib.Path, model, spec, config, variables) -> dict[str, float]:
  """Max |exported - JAX| on ``CHECK_BATCH`` random frames, per exported function."""
  frames = np.random.default_rng(0).integers(0, 256, (CHECK_BATCH, *spec.input_shape), np.uint8)
  floats = (tf.cast(frames, tf.float32) / 255.).numpy()
  expected = jax_predict(model, spec, config, variables, frames)
  loaded = load_saved_model(out)
  diffs = {
      'serving_default': loaded.signatures['serving_default'](img_in=tf.constant(floats)),
      'serve_uint8': loaded.signatures['serve_uint8'](image=tf.constant(frames)),
  }
  diffs = {k: float(np.max(np.abs(v['n_outputs0'].numpy() - expected))) for k, v in diffs.items()}
  if (out / 'model.tflite').exists():
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')  # tf.lite.Interpreter's deprecation notice
      diffs['tflite'] = float(np.max(np.abs(tflite_predict(out, floats) - expected)))
  return diffs

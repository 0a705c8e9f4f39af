"""resflax export: the SavedModel (and TFLite) computes what the JAX model computes."""

import json
import warnings

import numpy as np
import pytest
import tensorflow as tf

from resflax import cli
from resflax import config as config_lib
from resflax import export
from resflax import train
from resflax.errors import ConfigError, ResflaxError, WorkdirError

from conftest import CONFIGS

TOLERANCE = 1e-5


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  """A 3-step steering_conv_shortcut run with an ROI crop, exported with a constant throttle."""
  root = tmp_path_factory.mktemp('export')
  overrides = dict(synthetic_train_size=32, synthetic_test_size=8, validation_split=0.0,
                   batch_size=8, eval_batch_size=8, num_train_steps=3, roi_crop=(40, 4, 2, 6),
                   data_dir=str(root / 'tfds'), progress='none', download=False)
  config = config_lib.from_args(CONFIGS / 'steering_conv_shortcut.py',
                                [(k, str(v)) for k, v in overrides.items()])
  train.train_and_evaluate(config, root / 'run')
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # tf.lite.Interpreter's deprecation notice
    summary = export.export(root / 'run', root / 'out', throttle=0.3)
  return root, summary


_RESTORED = {}


def reference(root, frames):
  """The JAX model of the run's latest checkpoint on ``frames``."""
  if root not in _RESTORED:
    _RESTORED[root] = export._restore(root / 'run')
  config, spec, model, variables, _ = _RESTORED[root]
  return export.jax_predict(model, spec, config, variables, frames)


def test_saved_model_equals_the_jax_model(exported):
  root, summary = exported
  assert summary['step'] == 3 and (root / 'out' / 'export.json').exists()
  frames = np.random.default_rng(1).integers(0, 256, (6, 120, 160, 3), np.uint8)
  floats = (tf.cast(frames, tf.float32) / 255.).numpy()
  expected = reference(root, frames)
  assert expected.shape == (6, 1) and np.ptp(expected) > 0
  loaded = export.load_saved_model(root / 'out')
  raw = loaded.signatures['serve_uint8'](image=tf.constant(frames))
  normalized = loaded.signatures['serving_default'](img_in=tf.constant(floats))
  for out in (raw, normalized):
    np.testing.assert_allclose(out['n_outputs0'].numpy(), expected, rtol=0, atol=TOLERANCE)
    np.testing.assert_array_equal(out['n_outputs1'].numpy(), np.full((6, 1), 0.3, np.float32))
  diffs = summary['max_abs_diff_vs_jax']  # export's own check on other frames
  assert diffs['serving_default'] < TOLERANCE and diffs['serve_uint8'] < TOLERANCE
  # The ROI crop of training is inside the exported model: the cropped border is ignored.
  changed = frames.copy()
  changed[:, :40] = 255
  changed[:, :, -6:] = 0
  np.testing.assert_array_equal(loaded.signatures['serve_uint8'](image=tf.constant(changed))[
      'n_outputs0'].numpy(), raw['n_outputs0'].numpy())


def test_tflite_equals_the_jax_model(exported):
  root, summary = exported
  assert summary['tflite'] == str(root / 'out' / 'model.tflite')
  frames = np.random.default_rng(2).integers(0, 256, (3, 120, 160, 3), np.uint8)
  floats = (tf.cast(frames, tf.float32) / 255.).numpy()
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    got = export.tflite_predict(root / 'out', floats)
    interpreter = tf.lite.Interpreter(model_path=str(root / 'out' / 'model.tflite'))
  expected = reference(root, frames)
  # TFLite runs its own kernels (XNNPACK): equal to 1e-5 relative to the output's size (this
  # 3-step model's outputs are still several units; a trained one's are within [-1, 1]).
  scale = max(1.0, float(np.max(np.abs(expected))))
  np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE * scale)
  # What Donkeycar's TfLite interpreter reads (parts/interpreter.py): the serving_default
  # signature, img_in in, n_outputs0 (angle) and n_outputs1 (throttle) out, as KerasLinear.
  signature = interpreter.get_signature_list()['serving_default']
  assert signature == {'inputs': ['img_in'], 'outputs': ['n_outputs0', 'n_outputs1']}
  (detail,) = interpreter.get_input_details()  # TfLite.get_input_shape('img_in') looks it up so
  assert detail['name'] == 'serving_default_img_in:0' and list(detail['shape']) == [1, 120, 160, 3]


def test_export_errors(exported, tmp_path, capsys):
  root, _ = exported
  with pytest.raises(WorkdirError, match='not a resflax run directory'):
    export.export(tmp_path / 'nothing', tmp_path / 'out')
  with pytest.raises(ResflaxError, match='not an empty directory'):
    export.export(root / 'run', root / 'out')
  assert cli.main(['export', '--workdir', str(tmp_path / 'nothing'), '--out', str(tmp_path)]) == 2
  assert capsys.readouterr().err.startswith('resflax: error: ')
  summary = json.loads((root / 'out' / 'export.json').read_text())
  assert summary['roi_crop'] == [40, 4, 2, 6] and summary['model'] == 'steering_conv_shortcut'


def test_export_refuses_a_normalised_run(exported, tmp_path):
  root, _ = exported
  run = tmp_path / 'normalised'
  run.mkdir()
  config = json.loads((root / 'run' / 'config.json').read_text())
  (run / 'config.json').write_text(json.dumps({**config, 'normalize': True}))
  with pytest.raises(ConfigError, match='normalize=True'):
    export.export(run, tmp_path / 'out')
  assert not (tmp_path / 'out').exists()

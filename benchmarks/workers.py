"""The measurements, each run by ``python scripts/bench.py --worker KIND`` in a process of its own.

One process per (framework, model) keeps Keras' backend choice (fixed at import) apart and gives
each its own peak RSS. Every worker returns a JSON-able dict; ``run`` adds the process's peak RSS.

Step timing (``time_steps``), the same for every framework: the first call (tracing / compiling)
and one more step are warm-up; then ``repeats`` repeats, each of as many steps as fill
``min_repeat_s`` (1 for the CNNs), every step waited for (``block_until_ready``, Keras' returned
logs, ``loss.item()``); the step time is the median over the repeats of their mean step time.
Inputs are random, float32, created once and placed on the device before timing.
"""

from __future__ import annotations

import functools
import json
import math
import os
import resource
import statistics
import sys
import time

from benchmarks import specs

MIB = 1024 * 1024


def time_steps(step, *, repeats: int, min_repeat_s: float, slow_step_s: float = 1.0,
               slow_repeats: int = 3) -> dict:
  """Times ``step()`` (which must wait for its result); see the module docstring.

  A step slower than ``slow_step_s`` gets at most ``slow_repeats`` repeats (CPU CNN steps take
  seconds).
  """
  start = time.perf_counter()
  step()
  first_done = time.perf_counter()
  first_call_s = first_done - start
  start = time.perf_counter()
  step()
  warm_s = time.perf_counter() - start
  per_repeat = max(1, math.ceil(min_repeat_s / max(warm_s, 1e-6)))
  if warm_s >= slow_step_s:
    repeats = min(repeats, slow_repeats)
  times = []
  for _ in range(max(1, repeats)):
    start = time.perf_counter()
    for _ in range(per_repeat):
      step()
    times.append((time.perf_counter() - start) / per_repeat)
  return {'step_ms': 1e3 * statistics.median(times), 'repeats_ms': [1e3 * t for t in times],
          'steps_per_repeat': per_repeat, 'first_call_s': first_call_s, 'first_done': first_done}


def _first_step_s(result: dict, t0: float) -> float:
  """Seconds from the worker's start (before importing its framework) to the end of step 1."""
  return result.pop('first_done') - t0


def random_batch(name: str, batch_size: int, seed: int = 0):
  """(images float32 ``[N, *input_shape]`` in [0, 1] (NHWC), labels int32 ``[N]`` or float32 ``[N]``)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  input_shape, task = specs.INPUTS[name]
  rng = np.random.default_rng(seed)
  images = rng.random((batch_size, *input_shape), dtype=np.float32)
  if task == 'classification':
    labels = rng.integers(0, specs.NUM_CLASSES, batch_size).astype(np.int32)
  else:
    labels = rng.uniform(-1, 1, batch_size).astype(np.float32)
  return images, labels


def _timing(args) -> dict:
  return dict(repeats=args.repeats, min_repeat_s=args.min_repeat_s)


# ----------------------------------------------------------------------------------------------
# Train steps.
# ----------------------------------------------------------------------------------------------
def resflax_step(args) -> dict:
  """``jax.jit(train_step, donate_argnums=0)`` on the experiment's model and optimizer."""
  t0 = time.perf_counter()
  import jax  # pylint: disable=g-import-not-at-top
  from resflax import models  # pylint: disable=g-import-not-at-top
  from resflax.train import state as state_lib, steps  # pylint: disable=g-import-not-at-top
  from resflax import backend  # pylint: disable=g-import-not-at-top
  from resflax.ops import onednn  # pylint: disable=g-import-not-at-top
  config = specs.bench_config(args.model)
  if getattr(args, 'conv_impl', ''):
    config.conv_impl = args.conv_impl
  spec = models.get_spec(args.model)
  classes = spec.task == 'classification'
  model = models.build(args.model, num_outputs=specs.NUM_CLASSES if classes else 1)
  tx = state_lib.make_optimizer(config, steps_per_epoch=1000)
  create = functools.partial(state_lib.create_state, model, tx, spec.input_shape)
  state = jax.jit(create)(jax.random.key(0))
  conv_impl = onednn.resolve(config.conv_impl)  # as loop.build does
  state = state.replace(apply_fn=onednn.route(state.apply_fn, conv_impl))
  images, labels = random_batch(args.model, args.batch_size)
  batch = jax.device_put({'image': images, 'label': labels})
  rng = jax.random.key(1)
  jitted = jax.jit(functools.partial(steps.train_step, loss=config.loss), donate_argnums=0)
  compile_start = time.perf_counter()
  compiled = jitted.lower(state, batch, rng).compile()
  compile_s = time.perf_counter() - compile_start
  if conv_impl == 'xla':
    cost = compiled.cost_analysis()
  else:  # XLA counts no FLOPs in a custom call: count those of the same step on XLA's convolutions
    cost = jitted.lower(state.replace(apply_fn=model.apply), batch, rng).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get('flops', 0.0)) if cost else 0.0

  def step():
    nonlocal state
    state, metrics = compiled(state, batch, rng)
    jax.block_until_ready((state, metrics))

  result = time_steps(step, **_timing(args))
  result['first_call_s'] += compile_s
  return {**result, 'first_step_s': _first_step_s(result, t0), 'compile_s': compile_s,
          'flops_per_step': flops, 'device': str(jax.devices()[0].device_kind),
          'mode': f'jax.jit, conv_impl={conv_impl}', 'optimizer': specs.optimizer_name(config),
          'loss': config.loss, 'backend': backend.describe(conv_impl),
          'versions': {'jax': jax.__version__}}


def keras_step(args) -> dict:
  """``model.train_on_batch`` after ``compile(Adam(amsgrad=...), categorical_crossentropy | mse)``.

  Keras' defaults otherwise: ``jit_compile='auto'`` (XLA on the JAX backend; a plain tf.function
  on the TensorFlow backend's CPU, XLA on its GPUs).
  """
  t0 = time.perf_counter()
  backend = specs.KERAS_BACKENDS[args.framework]
  if os.environ.get('KERAS_BACKEND') != backend:
    raise RuntimeError(f'KERAS_BACKEND must be {backend!r} before keras is imported')
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from benchmarks import keras_zoo  # pylint: disable=g-import-not-at-top
  from resflax.keras_seeds import build_keras_model  # pylint: disable=g-import-not-at-top
  config = specs.bench_config(args.model)
  classes = specs.INPUTS[args.model][1] == 'classification'
  keras.utils.set_random_seed(0)
  model = (build_keras_model(args.model) if args.model in specs.SEED_MODELS
           else keras_zoo.build_keras_model(args.model))
  # Keras' Adam defaults (beta_1 0.9, beta_2 0.999, epsilon 1e-7) are resflax's.
  model.compile(optimizer=keras.optimizers.Adam(config.learning_rate,
                                                amsgrad=specs.amsgrad(config)),
                loss='categorical_crossentropy' if classes else 'mse',
                metrics=['accuracy'] if classes else ['mae'])
  images, labels = random_batch(args.model, args.batch_size)
  if classes:
    labels = np.eye(specs.NUM_CLASSES, dtype=np.float32)[labels]
  x, y = keras.ops.convert_to_tensor(images), keras.ops.convert_to_tensor(labels)
  result = time_steps(lambda: model.train_on_batch(x, y), **_timing(args))
  device, flags = 'cpu', {}
  if backend == 'jax':  # the same XLA as resflax's: record its flags (they moved with `import resflax`)
    import jax  # pylint: disable=g-import-not-at-top
    from resflax import backend as backend_lib  # pylint: disable=g-import-not-at-top
    device, flags = str(jax.devices()[0].device_kind), {'backend': backend_lib.describe()}
  else:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    device = 'gpu' if tf.config.list_logical_devices('GPU') else 'cpu'
  return {**result, 'first_step_s': _first_step_s(result, t0), 'device': device,
          'mode': f'train_on_batch, jit_compile={model.jit_compile}',
          'optimizer': specs.optimizer_name(config), 'loss': model.loss, **flags,
          'versions': {'keras': keras.__version__, backend: _version(backend)}}


def _version(module_name: str) -> str:
  return getattr(sys.modules.get(module_name), '__version__', '?')


def torch_step(args) -> dict:
  """``zero_grad; loss(model(x), y).backward(); Adam(amsgrad=...).step()``, CUDA if present."""
  t0 = time.perf_counter()
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_seeds, torch_zoo  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  config = specs.bench_config(args.model)
  classes = specs.INPUTS[args.model][1] == 'classification'
  build = torch_seeds.build if args.model in specs.SEED_MODELS else torch_zoo.build
  model = build(args.model).to(device).train()
  opt = torch.optim.Adam(model.parameters(), lr=config.learning_rate, eps=1e-7,
                         amsgrad=specs.amsgrad(config))
  images, labels = random_batch(args.model, args.batch_size)
  if images.ndim == 4:
    images = images.transpose(0, 3, 1, 2)  # NHWC -> NCHW
  x = torch.from_numpy(images.copy()).to(device)
  y = torch.from_numpy(labels).to(device)
  if classes:
    y = y.long()
  loss_fn = torch.nn.CrossEntropyLoss() if classes else torch.nn.MSELoss()

  def step():
    opt.zero_grad(set_to_none=True)
    out = model(x)
    loss = loss_fn(out, y) if classes else loss_fn(out[:, 0], y)
    loss.backward()
    opt.step()
    if classes:
      (out.argmax(1) == y).float().mean()
    loss.item()  # waits for the device

  result = time_steps(step, **_timing(args))
  return {**result, 'first_step_s': _first_step_s(result, t0),
          'device': str(device) if device.type == 'cpu' else torch.cuda.get_device_name(),
          'mode': 'eager', 'optimizer': specs.optimizer_name(config),
          'loss': type(loss_fn).__name__, 'threads': torch.get_num_threads(),
          'versions': {'torch': torch.__version__}}


# ----------------------------------------------------------------------------------------------
# The machine and the rest of the loop.
# ----------------------------------------------------------------------------------------------
def matmul_peak(args) -> dict:
  """fp32 GFLOP/s of a jitted ``jnp.dot`` of two ``n x n`` matrices (median of several)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  n = args.matmul_size
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  result = time_steps(lambda: dot(a, b).block_until_ready(), repeats=max(5, args.repeats),
                      min_repeat_s=args.min_repeat_s)
  result.pop('first_done')
  return {'n': n, 'gflops': 2 * n**3 / (result['step_ms'] / 1e3) / 1e9, **result,
          'device': str(jax.devices()[0].device_kind)}


def mnist_5k_config(name: str, data_dir: str):
  config = specs.bench_config(name)
  config.dataset, config.data_dir, config.download = 'mnist_5k', data_dir, False
  return config


def input_pipeline(args) -> dict:
  """Images/sec of ``data.build(config, input_shape).train_batches(epoch)`` on mnist_5k alone.

  Epoch 0 (which loads the split into memory) is warm-up; then whole epochs until ``min_seconds``.
  """
  from resflax import data as data_lib  # pylint: disable=g-import-not-at-top
  from resflax import models  # pylint: disable=g-import-not-at-top
  config = mnist_5k_config(args.model, args.data_dir)
  data = data_lib.build(config, models.get_spec(args.model).input_shape)
  start = time.perf_counter()
  for _ in data.train_batches(0):
    pass
  first_epoch_s = time.perf_counter() - start
  images, epochs, start = 0, 0, time.perf_counter()
  while epochs < 1 or time.perf_counter() - start < args.pipeline_seconds:
    epochs += 1
    for batch in data.train_batches(epochs):
      images += len(batch['label'])
  elapsed = time.perf_counter() - start
  return {'model': args.model, 'batch_size': config.batch_size, 'epochs': epochs,
          'images': images, 'images_per_sec': images / elapsed, 'first_epoch_s': first_epoch_s}


E2E_EPOCHS = 4
E2E_FEEDS = {'tf.data': dict(data_on_device='off'), 'on device': dict(data_on_device='on')}


def end_to_end(args) -> dict:
  """``train_and_evaluate`` for 4 epochs of mnist_5k, once per feed (``E2E_FEEDS``).

  The loop logs a train row at each epoch end (``log_every_steps`` > the steps of an epoch) over
  that epoch's steps, without compilation (epoch 1), eval or checkpointing (the default 30 s floor
  between epoch-end saves leaves one save, at the end): one epoch of input, host->device transfer,
  steps and metric fetches. ``images_per_sec``: the median over epochs 2-4. ``wall_s``: the whole
  call (build, compile, 4 epochs, 4 evals, the final checkpoint).
  """
  import tempfile  # pylint: disable=g-import-not-at-top
  from resflax import train  # pylint: disable=g-import-not-at-top
  feeds = {}
  for feed, overrides in E2E_FEEDS.items():
    config = mnist_5k_config(args.model, args.data_dir)
    config.update(num_epochs=E2E_EPOCHS, progress='none', log_every_steps=10**9, **overrides)
    with tempfile.TemporaryDirectory(prefix='resflax-bench-') as workdir:
      start = time.perf_counter()
      final = train.train_and_evaluate(config, workdir)
      wall_s = time.perf_counter() - start
      with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        rows = [json.loads(line) for line in f]
    per_epoch = [r['images_per_sec'] for r in rows if r['split'] == 'train']
    feeds[feed] = {'images_per_sec': statistics.median(per_epoch[1:]), 'epochs_images_per_sec': per_epoch,
                   'wall_s': wall_s, 'steps': int(final['step']), **overrides}
  return {'model': args.model, 'batch_size': config.batch_size, 'epochs': E2E_EPOCHS,
          'steps_per_epoch': feeds['tf.data']['steps'] // E2E_EPOCHS, 'feeds': feeds}


KINDS = {
    'resflax': resflax_step, 'keras-tensorflow': keras_step, 'keras-jax': keras_step,
    'pytorch': torch_step, 'matmul': matmul_peak, 'pipeline': input_pipeline,
    'end-to-end': end_to_end,
}


def run(args) -> dict:
  """Runs worker ``args.worker``; adds the process's peak RSS (MiB) and the load average."""
  args.framework = args.worker
  result = KINDS[args.worker.split(':')[0]](args)
  result['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB
  result['load_1min'] = os.getloadavg()[0]
  return result

"""Copy a trained Keras model's weights into a Flax replica (``resflax.models``).

For users of the seed notebooks who bring their trained Keras models::

    import jax, jax.numpy as jnp
    from resflax import models
    from resflax.keras_port import keras_to_flax, load_keras_model

    keras_model = load_keras_model('mnist_resnet.keras')  # or .h5, or a keras.Model in memory
    module = models.build('mnist_resmlp', num_outputs=10)
    variables = module.init(jax.random.key(0), jnp.zeros((1, 784)))
    variables = keras_to_flax(keras_model, variables)
    probs = jax.nn.softmax(module.apply(variables, x, train=False))  # == keras_model(x), x [N, 784]

Layers are matched by order: the Keras layers that own weights, in ``model.layers`` order (for a
functional model Keras sorts them by graph depth, so a residual branch comes before a shortcut that
joins it at the same merge), against the Flax layers in the order the module calls them. That order
is read from the variables' dict order, which is the creation order as long as they come straight
from ``module.init``; ``jax.eval_shape``, ``jax.tree.map``, ``jax.jit(module.init)`` and some
checkpoint restores sort the keys instead, so for such variables pass ``module=`` and the order is
traced from the module itself (``module(x)`` on an input of the Keras model's shape, abstractly)::

    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 784)))  # no allocation
    variables = keras_to_flax(keras_model, shapes, module=module)

Weights: ``Dense`` and ``Conv1D/2D/3D`` kernels (``(in, out)``, ``(*window, in, out)``) copy as-is,
biases too; ``BatchNormalization`` gamma -> ``params`` scale, beta -> ``params`` bias,
moving_mean -> ``batch_stats`` mean, moving_variance -> ``batch_stats`` var. Every shape is checked:
a wrong model raises ``ValueError`` naming the Keras layer and the Flax path that do not fit.
Only layer kinds, order and shapes can be checked, not the wiring between layers: two models with
the same layers wired differently (``mnist_resmlp`` and ``mnist_densesum_mlp``) port into each other
without complaint.

Keras is an optional extra (``pip install "resflax[keras]"``, also in ``[dev]`` and ``[bench]``): it is
imported inside the functions, never at module import.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# Keras weight attribute -> (Flax collection, Flax variable name), per supported layer kind.
_DENSE_OR_CONV = (('kernel', 'params', 'kernel'), ('bias', 'params', 'bias'))
_BATCH_NORM = (
    ('gamma', 'params', 'scale'),
    ('beta', 'params', 'bias'),
    ('moving_mean', 'batch_stats', 'mean'),
    ('moving_variance', 'batch_stats', 'var'),
)
_COLLECTIONS = ('params', 'batch_stats')

Path = tuple[str, ...]


def load_keras_model(path: str | os.PathLike[str]) -> Any:
  """A Keras model from a ``.keras`` or (legacy) ``.h5`` file, uncompiled."""
  import keras  # pylint: disable=g-import-not-at-top

  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f'no Keras model file at {path!r}')
  return keras.saving.load_model(path, compile=False)


@dataclasses.dataclass
class _KerasLayer:
  label: str  # "'dense_3' (Dense)", for messages
  weights: dict[tuple[str, str], np.ndarray]  # (collection, flax name) -> value


@dataclasses.dataclass
class _FlaxLayer:
  path: Path
  leaves: dict[tuple[str, str], Any]  # (collection, name) -> array or ShapeDtypeStruct

  @property
  def label(self) -> str:
    return "'" + '/'.join(self.path) + "'"


def _keras_layers(model) -> list[_KerasLayer]:
  """The layers of ``model`` that own weights, in ``model.layers`` order (nested models inlined)."""
  import keras  # pylint: disable=g-import-not-at-top  (a keras.Model is in hand, so keras imports)

  out = []
  for layer in model.layers:
    if not layer.weights:
      continue
    if isinstance(layer, keras.Model):
      out.extend(_keras_layers(layer))
      continue
    kind = type(layer).__name__
    label = f'{layer.name!r} ({kind})'
    if isinstance(layer, keras.layers.BatchNormalization):
      table = _BATCH_NORM
    elif isinstance(layer, (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D,
                            keras.layers.Conv3D)):
      if getattr(layer, 'data_format', 'channels_last') != 'channels_last':
        raise ValueError(f'Keras layer {label} uses data_format={layer.data_format!r}; '
                         "the Flax replicas are channels_last (NHWC)")
      table = _DENSE_OR_CONV
    else:
      raise ValueError(f'Keras layer {label} owns weights but is not a Dense, Conv1D/2D/3D or '
                       'BatchNormalization layer: no Flax mapping for it')
    weights = {}
    for attr, collection, name in table:
      variable = getattr(layer, attr, None)
      if variable is not None:
        weights[(collection, name)] = np.asarray(keras.ops.convert_to_numpy(variable))
    if sum(v.size for v in weights.values()) != sum(int(np.prod(w.shape)) for w in layer.weights):
      raise ValueError(f'Keras layer {label} has weights that are not kernel/bias/gamma/beta/'
                       'moving statistics (quantized or LoRA?): cannot port it')
    out.append(_KerasLayer(label, weights))
  return out


def _walk(tree: Mapping[str, Any], path: Path = ()) -> Iterator[tuple[Path, dict[str, Any]]]:
  """(path, {name: leaf}) for every Flax module that owns variables in ``tree``, in dict order."""
  own = {k: v for k, v in tree.items() if not isinstance(v, Mapping)}
  if own:
    yield path, own
  for k, v in tree.items():
    if isinstance(v, Mapping):
      yield from _walk(v, path + (k,))


def _flax_layers(variables: Mapping[str, Any]) -> dict[Path, _FlaxLayer]:
  layers: dict[Path, _FlaxLayer] = {}
  for collection in _COLLECTIONS:
    for path, leaves in _walk(variables.get(collection, {})):
      layer = layers.setdefault(path, _FlaxLayer(path, {}))
      layer.leaves.update({(collection, name): leaf for name, leaf in leaves.items()})
  return layers


def flax_call_order(module: nn.Module, x: Any) -> list[Path]:
  """Paths of ``module``'s submodules in the order ``module.init(key, x)`` first calls them.

  Traced abstractly (``jax.eval_shape``): nothing is computed or allocated.
  """
  order: dict[Path, None] = {}

  def record(next_fun, args, kwargs, context):
    order.setdefault(tuple(context.module.path), None)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(module.init, jax.random.key(0), x)
  return list(order)


def _looks_sorted(tree: Mapping[str, Any]) -> bool:
  """Whether every dict level's keys are sorted (as after jax.tree.map / eval_shape)."""
  keys = list(tree)
  return keys == sorted(keys) and all(
      _looks_sorted(v) for v in tree.values() if isinstance(v, Mapping))


def _describe(pairs: dict[tuple[str, str], Any]) -> str:
  return ', '.join(f'{c}/{n} {tuple(v.shape)}' for (c, n), v in sorted(pairs.items())) or 'nothing'


def _rebuild(tree: Mapping[str, Any], new: dict[Path, Any], path: Path = ()) -> dict[str, Any]:
  return {k: _rebuild(v, new, path + (k,)) if isinstance(v, Mapping) else new.get(path + (k,), v)
          for k, v in tree.items()}


def keras_to_flax(keras_model: Any, flax_variables: Mapping[str, Any], *,
                  module: nn.Module | None = None,
                  example_input: Any = None) -> dict[str, Any]:
  """``flax_variables`` with every ``params``/``batch_stats`` leaf replaced by the Keras weight.

  Args:
    keras_model: a ``keras.Model`` (trained), or the path of a ``.keras`` / ``.h5`` file.
    flax_variables: the replica's variables, ``{'params': ..., 'batch_stats': ...}`` as returned by
      ``module.init`` (arrays or ``jax.ShapeDtypeStruct``: only shapes and dtypes are read). Other
      collections are passed through.
    module: the Flax module the variables belong to. Needed when the variables' dict order is not
      the creation order (after ``jax.eval_shape``, ``jax.tree.map``, a checkpoint restore): the
      layer order is then traced from ``module`` called on the Keras model's input shape.
    example_input: what to trace ``module`` on instead (an array or ``jax.ShapeDtypeStruct`` with a
      batch axis), for a module whose input differs from the Keras model's.

  Returns:
    A new variable dict of the same structure and dtypes (a fresh ``dict`` at every level).

  Raises:
    ValueError: a Keras layer and the Flax layer at the same position differ in kind or shape, or
      the two models have different numbers of layers with weights; the message names both.
  """
  if isinstance(keras_model, (str, os.PathLike)):
    keras_model = load_keras_model(keras_model)
  model_name = getattr(keras_model, 'name', '?')
  k_layers = _keras_layers(keras_model)
  f_by_path = _flax_layers(flax_variables)

  if module is not None:
    if example_input is None:
      if len(keras_model.inputs) != 1:
        raise ValueError(f'Keras model {model_name!r} has {len(keras_model.inputs)} inputs: pass '
                         'example_input= to trace module=')
      shape = tuple(1 if d is None else d for d in keras_model.inputs[0].shape)
      example_input = jax.ShapeDtypeStruct(shape, jnp.float32)
    try:
      traced = flax_call_order(module, example_input)
    except Exception as e:  # pylint: disable=broad-except  (the module's own shape errors)
      raise ValueError(
          f'cannot trace {type(module).__name__} on an input of shape '
          f'{tuple(example_input.shape)} (the Keras model {model_name!r} takes that shape): '
          f'{type(e).__name__}: {str(e).splitlines()[0]}. Is it the Keras model of this module?'
      ) from e
    order = [p for p in traced if p in f_by_path]
    missing = [p for p in f_by_path if p not in order]
    if missing:
      raise ValueError(f"Flax layer '{'/'.join(missing[0])}' is in the variables but "
                       f'{type(module).__name__} never calls it: are they its variables?')
    hint = ''
  else:
    param_paths = [p for p, _ in _walk(flax_variables.get('params', {}))]
    stats_only = [p for p in f_by_path if p not in param_paths]
    if stats_only:
      raise ValueError(f"Flax layer '{'/'.join(stats_only[0])}' has batch_stats but no params, so "
                       'its position is unknown: pass module= to trace the call order')
    order = param_paths
    hint = (' (the Flax variables\' keys are sorted, as after jax.eval_shape / jax.tree.map / a '
            'checkpoint restore, not in call order: pass module= to trace the order)'
            if _looks_sorted(flax_variables.get('params', {})) else '')
  f_layers = [f_by_path[p] for p in order]

  new: dict[Path, Any] = {}
  for i, (k, f) in enumerate(zip(k_layers, f_layers)):
    where = f'layer #{i}: Keras layer {k.label} vs Flax layer {f.label}'
    if k.weights.keys() != f.leaves.keys():
      raise ValueError(f'{where}: the Keras layer has {_describe(k.weights)} but the Flax layer '
                       f'has {_describe(f.leaves)}{hint}')
    for key, value in k.weights.items():
      target = f.leaves[key]
      if tuple(value.shape) != tuple(target.shape):
        raise ValueError(f'{where}: {key[0]}/{key[1]} shape {tuple(value.shape)} in Keras, '
                         f'{tuple(target.shape)} in Flax{hint}')
      new[(key[0],) + f.path + (key[1],)] = jnp.asarray(value, dtype=target.dtype)
  if len(k_layers) != len(f_layers):
    n = min(len(k_layers), len(f_layers))
    extra = (f'Keras layer {k_layers[n].label} has no Flax counterpart' if len(k_layers) > n
             else f'Flax layer {f_layers[n].label} has no Keras counterpart')
    raise ValueError(f'Keras model {model_name!r} has {len(k_layers)} layers with weights, the '
                     f'Flax variables {len(f_layers)}: {extra}{hint}')
  return _rebuild(flax_variables, new)

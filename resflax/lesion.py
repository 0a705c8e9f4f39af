"""Lesion study (Veit et al. 2016, "Residual networks behave like ensembles of relatively shallow
networks", arXiv:1605.06431 sec. 4): delete residual blocks of a trained net at test time.

Deleting block ``i`` keeps its shortcut and removes its residual branch: the branch (the ``body``
child of a ``blocks.ResidualBlock``, or the block module itself in a dense-additive stage) outputs
zeros, so a block ``act(body(x) + x)`` becomes ``act(x)``. In a plain net there is no shortcut to
keep; ``mode='skip'`` replaces the whole block by the identity where its input and output shapes
agree (Veit's comparison with VGG), and such a block with another shape cannot be deleted.

The blocks are the modules named ``block<i>`` (the naming convention of ``resflax.models``); the
model stays pure: deletion is a Linen method interceptor that scales each block's branch by a gate
in ``[0, 1]`` passed as an argument, so one compiled forward serves every set of deleted blocks.
"""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from resflax.errors import ConfigError

BLOCK_NAME = re.compile(r'^block\d+$')
MODES = ('zero_branch', 'skip')


def _is_block(module: nn.Module) -> bool:
  return bool(module.path) and BLOCK_NAME.match(module.path[-1]) is not None


def _block_shapes(model: nn.Module, variables, x) -> dict[str, tuple]:
  """``{path: (input shape, output shape)}`` of the model's blocks, in the order the forward pass
  calls them (one abstract trace, no compute)."""
  shapes = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == '__call__' and _is_block(context.module):
      shapes.setdefault('/'.join(context.module.path),
                        (getattr(args[0], 'shape', None) if args else None, out.shape))
    return out

  with nn.intercept_methods(record):
    jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  return shapes


def block_names(model: nn.Module, variables, x) -> list[str]:
  """The ``'/'``-joined paths of the model's blocks, in the order the forward pass calls them."""
  return list(_block_shapes(model, variables, x))


def gated_apply(model: nn.Module, names: list[str], mode: str = 'zero_branch'):
  """``f(variables, x, gates) -> outputs``: ``gates[k] = 0`` deletes block ``names[k]``, 1 keeps it.

  ``zero_branch``: a ``ResidualBlock``'s body output (any other block's output) times its gate.
  ``skip``: a block's output ``g * block(x) + (1 - g) * x``; a block that changes the shape keeps
  its output whatever its gate (see ``deletable``).
  """
  if mode not in MODES:
    raise ConfigError(f'unknown lesion mode {mode!r}: use one of {", ".join(MODES)}')
  index = {name: k for k, name in enumerate(names)}

  def apply(variables, x, gates):
    def intercept(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if context.method_name != '__call__':
        return out
      path = context.module.path
      if mode == 'zero_branch':
        # The body of a residual block, else a block that is itself the branch.
        if path and path[-1] == 'body' and '/'.join(path[:-1]) in index:
          return out * gates[index['/'.join(path[:-1])]]
        name = '/'.join(path)
        if name in index and not hasattr(context.module, 'body'):
          return out * gates[index[name]]
      else:
        name = '/'.join(path)
        if name in index and args and getattr(args[0], 'shape', None) == out.shape:
          g = gates[index[name]]
          return g * out + (1 - g) * args[0]
      return out

    with nn.intercept_methods(intercept):
      return model.apply(variables, x, train=False)

  return apply


def deletable(model: nn.Module, variables, x, names: list[str], mode: str) -> list[bool]:
  """Whether deleting each block changes the forward pass (``skip`` cannot delete a block that
  changes the shape)."""
  if mode == 'zero_branch':
    return [True] * len(names)
  shapes = _block_shapes(model, variables, x)
  return [shapes[n][0] == shapes[n][1] for n in names]


def accuracy_with_deletions(apply, variables, batches, gates_list: list[np.ndarray]) -> list[float]:
  """Test accuracy for each gate vector: ``batches`` is a list of eval batches (``image``,
  ``label``, ``mask``), as ``resflax.data.Data.eval_batches`` yields them."""
  @jax.jit
  def correct(variables, batch, gates):
    logits = apply(variables, batch['image'], gates)
    hits = (jnp.argmax(logits, -1) == batch['label']).astype(jnp.float32)
    return jnp.sum(hits * batch['mask']), jnp.sum(batch['mask'])

  results = []
  for gates in gates_list:
    gates = jnp.asarray(gates, jnp.float32)
    hits = count = 0.0
    for batch in batches:
      h, c = correct(variables, batch, gates)
      hits, count = hits + float(h), count + float(c)
    results.append(hits / count)
  return results

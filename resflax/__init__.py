"""resflax: residual and dense-additive networks in JAX/Flax.

The public API (imported on first use, so that ``import resflax`` stays light):

- ``resflax.load(workdir)``: a trained run, ``.config``, ``.model``, ``.variables``, ``.predict``;
- ``resflax.train(config, workdir)``: the programmatic ``resflax train``;
- ``resflax.models.register(name, factory, **defaults)``: a model preset from user code.
"""

from resflax import backend as _backend

# XLA:CPU's convolutions on Eigen, not YNNPACK (measured faster; see resflax/backend.py), unless
# the user's XLA_FLAGS say otherwise: before JAX starts its backend.
_backend.configure()

__all__ = ['Run', 'load', 'models', 'train']


def __getattr__(name):
  if name in ('Run', 'load'):
    from resflax import api  # pylint: disable=g-import-not-at-top
    return getattr(api, name)
  if name in ('train', 'models'):
    import importlib  # pylint: disable=g-import-not-at-top
    return importlib.import_module(f'resflax.{name}')
  raise AttributeError(f'module resflax has no attribute {name!r}')

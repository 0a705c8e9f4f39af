"""Training: the train state, pure steps, checkpoints, metric writers and the loop.

``resflax.train`` is also callable: ``resflax.train(config, workdir)`` is ``resflax.api.train``, the
programmatic ``resflax train`` (a package cannot share its name with a function of its parent, so the
package itself answers the call).
"""

import sys
import types

from resflax.train.loop import evaluate, train_and_evaluate
from resflax.train.state import TrainState, create_state, make_optimizer
from resflax.train.steps import eval_step, train_step


class _CallablePackage(types.ModuleType):
  """This package's module type: calling it trains (``resflax.api.train``)."""

  def __call__(self, config, workdir, **overrides):
    from resflax import api  # pylint: disable=g-import-not-at-top
    return api.train(config, workdir, **overrides)


sys.modules[__name__].__class__ = _CallablePackage

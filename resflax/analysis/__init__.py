"""Instruments on a trained (or freshly initialised) model: ``resflax analyze KIND``.

  resflax analyze paths --workdir runs/r56 --out analysis/r56          # Veit et al. 2016 sec. 4
  resflax analyze landscape --workdir runs/r56 --out analysis/r56      # Li et al. 2018
  resflax analyze hessian --workdir runs/r56 --out analysis/r56        # PyHessian
  resflax analyze signal --workdir runs/r56 --out analysis/r56 --init  # Brock et al. 2021

or from Python::

  from resflax import analysis
  subject = analysis.load_subject('runs/r56', num_examples=1000)  # or analysis.Subject(model, ...)
  result = analysis.paths.analyze(subject, seed=0)

Each reads the run through the public load path (``resflax.load``: the latest checkpoint; with
``init`` the model at initialisation from the run's seed), takes the first ``num_examples`` of its
evaluation split in eval mode, and writes ``OUT/KIND.json`` plus PNG figures. Every model resflax
trains works, built-in or the user's own: the residual blocks are the modules named ``block<i>``,
found by a Linen method interceptor, as ``resflax.lesion`` finds them.
"""

from __future__ import annotations

import time

from resflax.analysis import common, hessian, landscape, paths, signal_propagation
from resflax.analysis.common import Subject, load_subject
from resflax.errors import ConfigError

KINDS = {'paths': paths, 'landscape': landscape, 'hessian': hessian, 'signal': signal_propagation}


def run(kind: str, subject: Subject, out: str, *, seed: int = 0, **options) -> dict:
  """``KINDS[kind].analyze(subject)`` written to ``out/KIND.json`` with its figures; the result
  (with ``source`` and ``figures``) is returned."""
  if kind not in KINDS:
    raise ConfigError(f'unknown analysis {kind!r}: use one of {", ".join(KINDS)}')
  module = KINDS[kind]
  start = time.perf_counter()
  result = module.analyze(subject, seed=seed, **options)
  result = {'kind': kind, 'source': subject.source, **result,
            'seconds': round(time.perf_counter() - start, 2)}
  common.write_json(out, kind, result)
  result['figures'] = module.plot(result, str(out))
  common.write_json(out, kind, result)
  return result


def analyze(kind: str, workdir: str, out: str, *, num_examples: int = 1000, init: bool = False,
            seed: int = 0, **options) -> dict:
  """``resflax analyze KIND --workdir W --out DIR``."""
  if kind not in KINDS:  # before anything is loaded
    raise ConfigError(f'unknown analysis {kind!r}: use one of {", ".join(KINDS)}')
  subject = load_subject(workdir, num_examples=num_examples, init=init)
  return run(kind, subject, out, seed=seed, **options)

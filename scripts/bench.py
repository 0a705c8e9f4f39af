"""Benchmark resflax's train step against Keras 3 (TF and JAX backends) and PyTorch.

Same as ``resflax bench``; see ``benchmarks/__init__.py`` and ``--help``. The peers need the
optional extra: ``pip install -e ".[bench]"``. The worker processes of the benchmark run this
script too (``--worker KIND``).

  python scripts/bench.py                                   # the eight seed models (~15 min, 2 CPU cores)
  python scripts/bench.py --models zoo --json bench_zoo.json
  python scripts/bench.py --quick --models mnist_resmlp --frameworks resflax
"""

import os
import pathlib
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# The checkout: its benchmarks/ package (not installed with resflax) and its resflax.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import main  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':
  sys.exit(main())

"""``python -m resflax.bench``: the benchmark (and its worker processes)."""

import sys

from resflax.bench import main

sys.exit(main())

"""``python -m bench``: run the side-by-side benchmark suite (see ``bench/README.md``)."""

import sys

from bench.runner import main

sys.exit(main())

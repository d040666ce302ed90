"""`python -m ocbench ...`: the same CLI as the `ocbench` console script."""

import sys

from ocbench.cli import main

sys.exit(main())

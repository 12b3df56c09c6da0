"""``python -m x2ct.compare outputs/``: see ``x2ct.evaluation.comparison.cli``."""

import sys

from x2ct.evaluation.comparison.cli import main

sys.exit(main(sys.argv[1:]))

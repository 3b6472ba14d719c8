"""python -m gsm8k_bench.reporting.history: see cli.py."""

import sys

from gsm8k_bench.reporting.history.cli import main

sys.exit(main(sys.argv[1:]))

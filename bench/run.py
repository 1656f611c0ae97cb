"""Switchboard's benchmark harness: `.venv/bin/python bench/run.py --help`."""

import sys
from pathlib import Path

# The repository root, not bench/, so that bench/*.py never shadow a standard module.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.harness import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

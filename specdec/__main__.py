"""``python -m specdec``: see :mod:`specdec.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

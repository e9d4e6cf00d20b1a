"""``python -m sdk`` — see :mod:`sdk.cli` for commands and exit codes."""

from __future__ import annotations

import sys

from sdk.cli import main

if __name__ == "__main__":
    sys.exit(main())

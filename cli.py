#!/usr/bin/env python
"""Run inertia from a checkout: `python cli.py run --backbone wan --intervention relax`."""

import sys

from inertia.cli import main

if __name__ == "__main__":
    sys.exit(main())

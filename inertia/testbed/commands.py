"""The one `main()` shape of the test bed's stand-alone commands (`python -m inertia.testbed.train`,
`... .evaluate`, ...), the same contract as `inertia` itself: a user mistake prints one line
(`error: ...`) on stderr and exits with status 2, no traceback.

Imports nothing heavy and not pydantic: the trainer runs on machines with only torch, diffusers
and transformers.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from ..core.errors import InertiaError

#: Exit status of a command stopped by a user mistake (bad arguments, impossible settings).
EXIT_USAGE = 2


def run_command(
    prog: str,
    doc: str | None,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    command: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse `argv` with the parser `add_arguments` builds (described by the first line of
    `doc`, a module docstring), run `command` and return its exit status; an `InertiaError`
    becomes one `error: ...` line on stderr and status 2."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0] if doc else None)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return command(args)
    except InertiaError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE

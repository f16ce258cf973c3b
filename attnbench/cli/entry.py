"""The console script ``attnbench``: Ctrl-C is one line and exit 130 from the
first instant (torch takes seconds to import: a traceback from inside it, or
a second import that fails, is no answer), and a reader that goes away
(``attnbench report RUN | head -1``) is not an error."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

INTERRUPTED_EXIT_CODE = 130


def _interrupted(signum: int, frame: Any) -> None:
    # Until a command installs its own handling (the sweep saves what finished
    # first): nothing is half-written here, so stop at once and say so.
    try:
        sys.stderr.write("interrupted\n")
        sys.stderr.flush()
    finally:
        os._exit(INTERRUPTED_EXIT_CODE)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it into a closed pipe at exit is silent."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main() -> None:
    signal.signal(signal.SIGINT, _interrupted)
    from attnbench.cli.app import app

    try:
        app(prog_name="attnbench")
    finally:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _quiet_stdout()


if __name__ == "__main__":  # pragma: no cover - python -m attnbench.cli.entry
    main()

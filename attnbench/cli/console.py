"""The CLI's two streams and its ways of speaking: results on stdout (``out``),
progress, warnings and errors on stderr (``err``); JSON with a schema version;
the project's own errors as one message and their exit code."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from attnbench.errors import AttnbenchError

JSON_SCHEMA = 1

class ResultsConsole(Console):
    """stdout: a reader that goes away (``| head``) is not an error, as for other CLIs (rich exits 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(0)


out = ResultsConsole()  # its width is set per command by fit_output
PIPED_WIDTH = 200


def fit_output() -> None:
    """COLUMNS, when set, is the width; else the terminal's. Piped output gets a
    wide fixed width so that tables are never cut at 80 columns."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        out.width = int(columns)
    elif not out.is_terminal:
        out.width = PIPED_WIDTH


err = Console(stderr=True, soft_wrap=True)  # messages are never wrapped mid-path


@contextmanager
def user_errors() -> Iterator[None]:
    """Print the project's own errors as one message and exit with their code
    (the boundary does the same; this keeps what a command prints after an
    error, such as warnings, from running)."""
    try:
        yield
    except AttnbenchError as exc:  # escaped: a message may quote [brackets], e.g. attnbench[ray]
        err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False)
        raise typer.Exit(exc.exit_code) from None


def print_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"schema": JSON_SCHEMA, **payload}, indent=2, default=str) + "\n")


def warn(messages: list[str]) -> None:
    for message in messages:
        err.print(f"[yellow]warning:[/] {message}", markup=True, highlight=False)


def count_of(n: int, one: str, many: str | None = None) -> str:
    """``n`` and the noun, singular or plural: 1 variant, 2 variants."""
    return f"{n} {one if n == 1 else many or one + 's'}"


def duration_text(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"

"""The CLI's error boundary: the one place errors become exit codes."""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from typing import Any

import typer
from rich.markup import escape
from typer.core import TyperGroup
from typer.exceptions import TyperException

from attnbench.cli.console import err
from attnbench.errors import AttnbenchError

BUG_EXIT_CODE = 1


def save_traceback(exc: BaseException) -> str:
    """Write ``exc``'s full traceback to a new file in the temporary directory; its path."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    with tempfile.NamedTemporaryFile("w", prefix="attnbench-traceback-", suffix=".txt", delete=False,
                                     encoding="utf-8") as f:
        f.write(f"attnbench {' '.join(sys.argv[1:])}\n\n{text}")
    return f.name


class ErrorBoundary(TyperGroup):
    """The one place errors become exit codes: attnbench's own errors are the
    user's to fix (a message, their exit code); anything else is a bug in
    attnbench (exit 1, one line, and where the full traceback was saved)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        ctx.meta["attnbench.argv"] = list(args)  # the command as typed, for run.json
        return super().parse_args(ctx, args)

    def invoke(self, ctx: typer.Context) -> object:
        try:
            return super().invoke(ctx)
        except AttnbenchError as exc:  # escaped: a message may quote [brackets], e.g. attnbench[ray]
            err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except BrokenPipeError:  # the reader went away (| head): not an error, as for other CLIs
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(0) from None
        except (typer.Exit, typer.Abort, TyperException, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the boundary: report the bug, never a bare traceback
            try:
                where = f"the full traceback is in {save_traceback(exc)}"
            except OSError as write_error:
                where = f"the traceback could not be saved ({write_error})"
            err.print(f"[bold red]internal error[/] (a bug in attnbench, please report it): "
                      f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}\n"
                      f"{where}", markup=True, highlight=False)
            raise typer.Exit(BUG_EXIT_CODE) from None

"""The sweep's progress bar on stderr."""

from __future__ import annotations

from typing import Any

from attnbench.model import Case, Status


class Progress:
    """A rich progress bar on stderr (case i of n, name, elapsed, remaining)."""

    def __init__(self, total: int, quiet: bool, rounds: int = 1) -> None:
        self.rounds = rounds
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True)
        self.progress = Progress(TextColumn("[bold]visit" if rounds > 1 else "[bold]case"), MofNCompleteColumn(),
                                 BarColumn(),
                                 TextColumn("{task.description}"), TimeElapsedColumn(),
                                 TextColumn("eta"), TimeRemainingColumn(),
                                 console=self.console, disable=quiet, transient=False)
        self.task = self.progress.add_task("", total=total)

    def __enter__(self) -> Progress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def start(self, case: Case) -> None:
        where = f" round {case.round + 1}/{self.rounds}" if self.rounds > 1 else ""
        self.progress.update(self.task, description=f"{case.label} N={case.seq_len} H={case.heads} "
                                                    f"{case.device} {case.dtype}{where}")

    def finished(self, record: dict[str, Any]) -> None:
        from rich.markup import escape

        if record["status"] != Status.OK:
            case = record["case"]
            colour = "yellow" if record["status"] == Status.SKIPPED else "red"
            self.progress.console.log(f"[{colour}]{record['status']}[/] {escape(str(case['label']))} "
                                      f"N={case['seq_len']} H={case['heads']}: {escape(record.get('error') or '')}",
                                      markup=True)
        self.progress.advance(self.task)

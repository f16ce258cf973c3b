"""The sweep's progress on stderr: a rich progress bar on a terminal; plain
lines elsewhere (a CI log, a file), one per visit, never a bar cut at 80
columns."""

from __future__ import annotations

from typing import Any

from attnbench.model import Case, Status


class Progress:
    """Visit i of n, the case, elapsed and remaining time, on stderr; the visits
    that did not succeed, as they happen."""

    def __init__(self, total: int, quiet: bool, rounds: int = 1, console: Any = None) -> None:
        self.rounds = rounds
        self.total = total
        self.quiet = quiet
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console or Console(stderr=True)
        self.plain = not self.console.is_terminal
        self.done = 0
        self.progress = Progress(TextColumn("[bold]visit" if rounds > 1 else "[bold]case"), MofNCompleteColumn(),
                                 BarColumn(),
                                 TextColumn("{task.description}"), TimeElapsedColumn(),
                                 TextColumn("eta"), TimeRemainingColumn(),
                                 console=self.console, disable=quiet or self.plain, transient=False)
        self.task = self.progress.add_task("", total=total)

    def __enter__(self) -> Progress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def describe(self, label: str, seq_len: int, heads: int, device: str, dtype: str, round_index: int) -> str:
        where = f" round {round_index + 1}/{self.rounds}" if self.rounds > 1 else ""
        return f"{label} N={seq_len} H={heads} {device} {dtype}{where}"

    def start(self, case: Case) -> None:
        self.progress.update(self.task, description=self.describe(case.label, case.seq_len, case.heads, case.device,
                                                                  case.dtype, case.round))

    def finished(self, record: dict[str, Any]) -> None:
        from rich.markup import escape

        self.done += 1
        case = record["case"]
        if self.plain:
            if not self.quiet:
                what = self.describe(case["label"], case["seq_len"], case["heads"], case["device"], case["dtype"],
                                     int(record.get("round") or 0))
                self.console.print(f"{'visit' if self.rounds > 1 else 'case'} {self.done}/{self.total} {what}: "
                                   f"{record['status']}", markup=False, highlight=False, soft_wrap=True)
        elif record["status"] != Status.OK:
            # One line as it happens (a long sweep shows its failures at once); the
            # reason is printed once, in the table of failed cases at the end.
            colour = "yellow" if record["status"] == Status.SKIPPED else "red"
            self.progress.console.print(f"[{colour}]{record['status']}[/] {escape(str(case['label']))} "
                                        f"N={case['seq_len']} H={case['heads']}", markup=True, highlight=False)
        self.progress.advance(self.task)

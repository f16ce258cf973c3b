"""The quality measures of a run (the suite's ``quality:`` section): every task
not yet in quality.jsonl, each appended and synced to disk the moment it ends,
so that an interrupted run loses only the measurement in flight and
``--resume`` does the rest. Training progress (step, loss, accuracy) goes to
stderr.

The measures run in this process, one after another, with ``quality.threads``
torch threads: they are small, and a single thread keeps a training run
deterministic. A Ctrl-C stops the measurement in flight (nothing of it is
recorded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attnbench.bench.signals import SignalGuard
from attnbench.quality.plan import QualityTask, quality_tasks, run_task
from attnbench.store.results import QUALITY_FILE, append_record, read_quality, rewrite_records
from attnbench.suite.load import Suite
from attnbench.suite.quality import quality_variants

#: statuses of a quality measurement that count as a failure of the run (exit 3)
QUALITY_FAILURES = ("error",)


class QualityProgress:
    """A progress bar on stderr: measurement i of n, and a training run's step, loss and accuracy."""

    def __init__(self, total: int, quiet: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("[bold]quality"), MofNCompleteColumn(), BarColumn(),
                                 TextColumn("{task.description}"), TimeElapsedColumn(),
                                 console=Console(stderr=True), disable=quiet)
        self.task = self.progress.add_task("", total=total)

    def __enter__(self) -> QualityProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def start(self, task: QualityTask) -> None:
        self.progress.update(self.task, description=task.describe())

    def training(self, task: QualityTask, step: int, steps: int, loss: float, accuracy: float) -> None:
        self.progress.update(self.task, description=f"{task.describe()}: step {step}/{steps} "
                                                    f"loss {loss:.3f} acc {accuracy:.2f}")

    def finished(self, task: QualityTask, record: dict[str, Any]) -> None:
        from rich.markup import escape

        status = record["status"]
        if task.kind == "mqar" or status in QUALITY_FAILURES:
            shown = (f"accuracy {record['accuracy']:.3f}" if status == "ok" and record.get("accuracy") is not None
                     else f"[{'red' if status in QUALITY_FAILURES else 'yellow'}]{status}[/]")
            error = f": {escape(record['error'])}" if record.get("error") else ""
            self.progress.console.print(f"{escape(task.describe())}: {shown} ({record.get('train_s', 0):.1f} s)"
                                      f"{error}", markup=True)
        self.progress.advance(self.task)


def run_quality(suite: Suite, run_dir: Path, guard: SignalGuard, quiet: bool = False
                ) -> tuple[list[dict[str, Any]], int]:
    """Measure every quality task of ``suite`` not yet recorded in ``run_dir``; return all
    its quality records (the earlier ones included) and how many ran now."""
    import torch

    settings = suite.quality
    if settings is None:
        return [], 0
    path = run_dir / QUALITY_FILE
    done, warnings = read_quality(path)
    if warnings:  # drop a truncated last line so that appends start on a fresh line
        rewrite_records(path, done)
    records = list(done)
    done_ids = {r["task_id"] for r in done}
    tasks = [t for t in quality_tasks(settings, quality_variants(suite.variants)) if t.task_id not in done_ids]
    if not tasks:
        return records, 0
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    ran = 0
    try:
        with QualityProgress(len(tasks), quiet) as progress:
            for task in tasks:
                guard.check()
                progress.start(task)

                def hook(step: int, loss: float, accuracy: float, task: QualityTask = task) -> None:
                    progress.training(task, step, settings.mqar.steps, loss, accuracy)

                record = run_task(task, settings, hook)
                with guard.deferred():  # a finished measurement is recorded whole
                    append_record(path, record)
                    records.append(record)
                    ran += 1
                    progress.finished(task, record)
    finally:
        torch.set_num_threads(threads)
    return records, ran

"""What ``report`` and ``compare`` do beyond printing tables: the options
they share, their JSON, the files report writes, and the comparison of two
runs with its gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from attnbench.cli.console import err, out, print_json, user_errors, warn
from attnbench.errors import AttnbenchError

EXIT_UNRELIABLE = 4  # --strict: the run's timings are unreliable


def strict_exit(verdict: Any, strict: bool) -> int:
    """The exit code ``--strict`` adds for the run's verdict (0: none), saying why on stderr."""
    if not (strict and verdict.unreliable):
        return 0
    err.print("[bold red]--strict:[/] the run's timings are unreliable (see the first line); exit "
              f"{EXIT_UNRELIABLE}", markup=True, highlight=False)
    return EXIT_UNRELIABLE


PASS_NAMES_HELP = "forward, backward or forward_backward (or fwd, bwd, f+b)"


def pass_option(value: str | None) -> str | None:
    """--pass: a pass by its full or short name (fwd, bwd, f+b)."""
    from attnbench.model import PASS_SHORT, PASSES

    if value is None:
        return None
    names = {**{p: p for p in PASSES}, **{short: p for p, short in PASS_SHORT.items()}}
    if value not in names:
        raise AttnbenchError(f"--pass {value!r}: not a pass; use {PASS_NAMES_HELP}")
    return names[value]


def check_outputs(plot: Path | None, csv: str | None, as_json: bool, plot_tradeoff: Path | None = None,
                  html: Path | None = None, plot_decode: Path | None = None) -> None:
    """Refuse what cannot be written before anything is printed (an HTML page
    without the html extra: one line naming it)."""
    from attnbench.report.plots import FORMATS

    if html is not None:
        from attnbench.report.html_page import require_html

        require_html()

    for option, path in (("--plot", plot), ("--plot-tradeoff", plot_tradeoff), ("--plot-decode", plot_decode)):
        if path is not None and path.suffix.lower() not in FORMATS:
            raise AttnbenchError(f"{option} {path}: the plot must be a {' or '.join(FORMATS)} file")
    if csv == "-" and as_json:
        raise AttnbenchError("--csv - and --json both write to stdout: choose one")


def build_run_report(run_dir: Path, options: Any) -> Any:
    """The report of a run (``report.build.build_report``); a run with nothing
    to report shows its failed cases, then is refused (exit 2) saying why."""
    from attnbench.errors import ResultsError
    from attnbench.report.build import build_report
    from attnbench.report.terminal import failures_table

    report = build_report(run_dir, options)
    if report.nothing_measured:
        failed = failures_table(report.failed) if not report.frame.empty else None
        if failed is not None:
            out.print(failed)
        raise ResultsError(report.nothing_measured)
    return report


def print_baseline_comparison(run_dir: Path, baseline: str | None, pass_name: str | None, as_json: bool,
                              html: Path | None = None) -> None:
    """``compare RUN``: each variant's speed and memory against the baseline;
    with ``html``, the run's whole report (with that baseline) as a page."""
    from attnbench.report.build import ReportOptions, build_report
    from attnbench.report.cells import relative_legend
    from attnbench.report.json import baseline_payload
    from attnbench.report.terminal import comparison_tables

    with user_errors():
        report = build_report(run_dir, ReportOptions(baseline=baseline, pass_name=pass_name))
        if not as_json:
            warn(report.run.warnings)
        if report.baseline is None:
            raise AttnbenchError(f"{run_dir}: no finished cases to compare")
    if as_json:
        warn(report.run.warnings)
        print_json(baseline_payload(report, str(run_dir)))
    else:
        for p in report.passes:
            for table in comparison_tables(report, p):
                out.print(table)
        out.print(relative_legend(report), highlight=False)
    if html is not None:
        from attnbench.report.files import ReportFiles

        with user_errors():
            write_files(report, ReportFiles(html=html))


def csv_columns(frame: Any) -> list[str]:
    from attnbench.store.results import CSV_COLUMNS

    return [c for c in CSV_COLUMNS if c in frame.columns]


def write_files(report: Any, files: Any) -> None:
    """Write the report's files, saying where on stderr."""
    from attnbench.report.files import write_report_files

    messages: list[str] = []
    for path in write_report_files(report, files, messages):
        err.print(f"wrote {path}", highlight=False)
    for message in messages:
        err.print(f"note: {message}", highlight=False)


def print_two_runs(run_a: Path, run_b: Path, pass_name: str | None, fail_above: float | None,
                   min_effect: float, as_json: bool, html: Path | None = None) -> None:
    """``compare RUN_A RUN_B``: B against A, case by case, and with ``html`` the
    page of it; exit 1 when the gate (``--fail-above``) fails."""
    from dataclasses import asdict

    from attnbench.analysis.two_runs import compare_two_runs, gate, suite_differences
    from attnbench.report.roofline import calibration_table
    from attnbench.report.two_runs import compare_runs_tables, lost_case_lines, two_runs_warnings
    from attnbench.store.results import frame_records, load_run

    with user_errors():
        if fail_above is not None and not fail_above > 0:
            raise AttnbenchError(f"--fail-above must be a positive ratio such as 1.10, got {fail_above}")
        if not 0 <= min_effect < 1:
            raise AttnbenchError(f"--min-effect must be a fraction in [0, 1), got {min_effect}")
        a, b = load_run(run_a), load_run(run_b)
        runs = compare_two_runs(a.records, b.records, pass_name, min_effect)
        if runs.compared.empty:
            raise AttnbenchError(f"{run_a} and {run_b}: no cases to compare")
    same = run_a.resolve() == run_b.resolve()
    if same:
        err.print(f"note: {run_a} and {run_b} are the same run: every ratio is 1", highlight=False)
    warn(a.warnings + b.warnings)
    differences = suite_differences(a.meta, b.meta)
    if differences and not same:
        warn(["the two runs were made with different suites; what differs (A → B):\n  "
              + "\n  ".join(differences)])
    verdict = gate(runs, fail_above) if fail_above is not None else None
    shift = runs.shift
    if as_json:
        print_json({"run_a": str(run_a), "run_b": str(run_b), "same_run": same, "min_effect": min_effect,
                    "fail_above": fail_above, "regressions": verdict.count if verdict else 0,
                    "suite_differences": differences,
                    "lost": len(runs.lost), "shift": asdict(shift) if shift else None,
                    "calibration": {"a": a.meta.get("calibration"), "b": b.meta.get("calibration")},
                    "rows": frame_records(runs.compared), "summary": frame_records(runs.summary)})
    else:
        for table in compare_runs_tables(runs.compared, runs.summary, a.run_id, b.run_id, min_effect=min_effect,
                                         shift=shift):
            out.print(table)
        side_by_side = calibration_table([("A " + a.run_id, a.meta), ("B " + b.run_id, b.meta)])
        if side_by_side is not None:
            out.print(side_by_side)
    warn(two_runs_warnings(runs))
    if verdict is not None and verdict.shifted:
        err.print(f"[bold red]regression:[/] every case is slower together: B/A = {shift.ratio:.3f} "
                  f"[{shift.low:.3f}–{shift.high:.3f}], past {fail_above}x", markup=True, highlight=False)
    if len(runs.lost):
        level = "[bold red]not compared:[/]" if verdict is not None else "[yellow]warning:[/]"
        err.print(f"{level} {len(runs.lost)} case(s) measured in RUN_A are missing or failed in RUN_B:\n  "
                  + "\n  ".join(lost_case_lines(runs.lost)), markup=True, highlight=False)
    if verdict is not None and len(verdict.regressions):
        bad = verdict.regressions
        worst = bad.sort_values("ratio").iloc[-1]
        err.print(f"[bold red]regression:[/] {len(bad)} case(s) significantly slower than {fail_above}x; worst "
                  f"{worst['label']} N={worst['seq_len']} {worst['pass']}: {worst['ratio']:.2f}x",
                  markup=True, highlight=False)
    if html is not None:
        from attnbench.report.html import write_html
        from attnbench.report.html_compare import html_two_runs

        with user_errors():
            write_html(html, html_two_runs(a, b, runs, differences if not same else [], verdict))
        err.print(f"wrote {html}", highlight=False)
    if verdict is not None and verdict.failed:
        raise typer.Exit(1)

"""What ``report`` and ``compare`` do beyond printing tables: the options
they share, their JSON, the files report writes, and the comparison of two
runs with its gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from attnbench.cli.console import err, out, print_json, user_errors, warn
from attnbench.errors import AttnbenchError

PASS_NAMES_HELP = "forward, backward or forward_backward (or fwd, bwd, f+b)"


def pass_option(value: str | None) -> str | None:
    """--pass: a pass by its full or short name (fwd, bwd, f+b)."""
    from attnbench.model import PASSES
    from attnbench.report.terminal import PASS_SHORT

    if value is None:
        return None
    names = {**{p: p for p in PASSES}, **{short: p for p, short in PASS_SHORT.items()}}
    if value not in names:
        raise AttnbenchError(f"--pass {value!r}: not a pass; use {PASS_NAMES_HELP}")
    return names[value]


def check_outputs(plot: Path | None, csv: str | None, as_json: bool, plot_tradeoff: Path | None = None) -> None:
    """Refuse what cannot be written before anything is printed."""
    from attnbench.report.plots import FORMATS

    for option, path in (("--plot", plot), ("--plot-tradeoff", plot_tradeoff)):
        if path is not None and path.suffix.lower() not in FORMATS:
            raise AttnbenchError(f"{option} {path}: the plot must be a {' or '.join(FORMATS)} file")
    if csv == "-" and as_json:
        raise AttnbenchError("--csv - and --json both write to stdout: choose one")


COMPARE_JSON_COLUMNS = ["label", "variant", "family", "batch", "dim", "dtype", "device", "causal", "heads",
                        "seq_len", "pass", "status", "median_ms", "iqr_ms", "noisy", "rounds", "round_spread",
                        "baseline_ms", "speedup", "speedup_low", "speedup_high", "speedup_method", "peak_mem_mib",
                        "baseline_mem_mib", "mem_ratio", "mem_ratio_low", "mem_ratio_high", "flops", "flops_source",
                        "tflops", "tokens_per_s", "error"]


def compare_json(run_dir: Path, baseline: str | None, pass_name: str | None) -> None:
    """``compare --json``: one row per variant, case and pass, with speed-up and memory ratio."""
    from attnbench.analysis.baseline import with_baseline
    from attnbench.report.terminal import report_baseline
    from attnbench.store.results import frame_records, load_run

    with user_errors():
        run_data = load_run(run_dir)
        frame = run_data.frame()
        base = report_baseline(frame, run_data, baseline)
        if base is None:
            raise AttnbenchError(f"{run_dir}: no finished cases to compare")
        data = with_baseline(frame, base, run_data.records)
        if pass_name:
            data = data[data["pass"] == pass_name]
    warn(run_data.warnings)
    print_json({"run_id": run_data.run_id, "run_dir": str(run_dir),
                 "baseline": base, "passes": list(dict.fromkeys(data["pass"])),
                 "rows": frame_records(data, COMPARE_JSON_COLUMNS)})


def csv_columns(frame: Any) -> list[str]:
    from attnbench.store.results import CSV_COLUMNS

    return [c for c in CSV_COLUMNS if c in frame.columns]


def report_json(run_data: Any, frame: Any, base: str | None) -> None:
    """``report --json``: the tidy rows (the results.csv columns), the rows
    against the baseline, and per pass the scaling exponents and crossovers."""
    from attnbench.analysis.baseline import scaling_summary, with_baseline
    from attnbench.report.quality import quality_json
    from attnbench.report.terminal import measured_passes
    from attnbench.store.results import CSV_COLUMNS, frame_records

    relative = with_baseline(frame, base, run_data.records) if base is not None else frame.iloc[0:0]
    scaling = {p: frame_records(scaling_summary(frame, base, p)) for p in measured_passes(frame)}
    print_json({"run_id": run_data.run_id, "run_dir": str(run_data.path),
                 "suite": run_data.meta.get("suite_name"), "status": run_data.meta.get("status"),
                 "baseline": base, "warnings": run_data.warnings, "columns": CSV_COLUMNS,
                 "rows": frame_records(frame, CSV_COLUMNS),
                 "against_baseline": frame_records(relative, COMPARE_JSON_COLUMNS),
                 "scaling": scaling, "quality": quality_json(run_data.quality)})


def write_report_files(run_data: Any, frame: Any, base: str | None, csv: str | None, markdown: Path | None,
                       plot: Path | None, plot_tradeoff: Path | None = None) -> None:
    from attnbench.report.markdown import markdown_report, write_text
    from attnbench.store.results import write_csv

    if csv is not None:  # with the paired speed-ups, their intervals and the roofline fraction
        from attnbench.analysis.baseline import with_baseline
        from attnbench.report.roofline import with_peak_fraction

        tidy = with_baseline(frame, base, run_data.records) if base is not None else frame
        write_csv(with_peak_fraction(tidy, run_data.meta), Path(csv))
        err.print(f"wrote {csv}", highlight=False)
    if plot is not None:
        from attnbench.report.plots import plot_run

        plot_run(frame, plot, run_data.records, title=str(run_data.meta.get("suite_name") or ""), baseline=base)
        err.print(f"wrote {plot}", highlight=False)
    if plot_tradeoff is not None:
        from attnbench.analysis.quality import measured_scores
        from attnbench.report.plots import plot_tradeoff as draw_tradeoff

        measured = measured_scores(run_data.quality)
        draw_tradeoff(frame, plot_tradeoff, title=str(run_data.meta.get("suite_name") or ""),
                      quality=measured or None, quality_label="MQAR accuracy (measured, mean over seeds)")
        err.print(f"wrote {plot_tradeoff}", highlight=False)
    if markdown is not None:
        import os

        link = os.path.relpath(plot.resolve(), markdown.resolve().parent) if plot is not None else None
        write_text(markdown, markdown_report(run_data, base, plot=link, frame=frame))
        err.print(f"wrote {markdown}", highlight=False)


def compare_two_runs(run_a: Path, run_b: Path, pass_name: str | None, fail_above: float | None,
                      min_effect: float, as_json: bool) -> None:
    """``compare RUN_A RUN_B``: B against A, case by case; exit 1 on a regression past
    --fail-above or on a case of A that B lost."""
    from dataclasses import asdict

    from attnbench.analysis.baseline import compare_run_visits, compare_summary, lost_cases, moved_settings, regressions
    from attnbench.report.roofline import calibration_table
    from attnbench.report.two_runs import compare_runs_tables, lost_case_lines
    from attnbench.store.results import frame_records, load_run

    with user_errors():
        if fail_above is not None and not fail_above > 0:
            raise AttnbenchError(f"--fail-above must be a positive ratio such as 1.10, got {fail_above}")
        if not 0 <= min_effect < 1:
            raise AttnbenchError(f"--min-effect must be a fraction in [0, 1), got {min_effect}")
        a, b = load_run(run_a), load_run(run_b)
        compared, shift = compare_run_visits(a.records, b.records, min_effect=min_effect)
        if pass_name:
            compared = compared[compared["pass"] == pass_name]
        if compared.empty:
            raise AttnbenchError(f"{run_a} and {run_b}: no cases to compare")
    same = run_a.resolve() == run_b.resolve()
    if same:
        err.print(f"note: {run_a} and {run_b} are the same run: every ratio is 1", highlight=False)
    warn(a.warnings + b.warnings)
    summary = compare_summary(compared)
    bad = regressions(compared, fail_above) if fail_above is not None else compared.iloc[0:0]
    lost = lost_cases(compared)
    shifted = (fail_above is not None and shift is not None and shift.verdict == "slower"
               and shift.ratio > fail_above)
    if as_json:
        print_json({"run_a": str(run_a), "run_b": str(run_b), "same_run": same, "min_effect": min_effect,
                    "fail_above": fail_above, "regressions": len(bad) + int(shifted), "lost": len(lost),
                    "shift": asdict(shift) if shift else None,
                    "calibration": {"a": a.meta.get("calibration"), "b": b.meta.get("calibration")},
                    "rows": frame_records(compared), "summary": frame_records(summary)})
    else:
        for table in compare_runs_tables(compared, summary, a.run_id, b.run_id, min_effect=min_effect,
                                         shift=shift):
            out.print(table)
        side_by_side = calibration_table([("A " + a.run_id, a.meta), ("B " + b.run_id, b.meta)])
        if side_by_side is not None:
            out.print(side_by_side)
    others = int((compared["mark"] == "x").sum()) - len(lost)
    if others:
        warn([f"{others} case(s) not measured in RUN_A (marked x): nothing to compare them with"])
    moved = moved_settings(compared)
    if moved:
        warn([f"{len(moved)} setting(s) whose variants all moved together, beyond the other settings (each "
              "variant is judged against the others, so this shows only here: a change under all of them, or "
              "the machine's state for that setting):\n  " + "\n  ".join(moved)])
    undecided = int((compared["mark"] == "?").sum())
    if undecided:
        warn([f"{undecided} case(s) have too few rounds for a verdict (marked ?): a run needs timing.rounds >= 2 "
              "to tell a change from the drift between visits"])
    failed_gate = False
    if shifted:
        err.print(f"[bold red]regression:[/] every case is slower together: B/A = {shift.ratio:.3f} "
                  f"[{shift.low:.3f}–{shift.high:.3f}], past {fail_above}x", markup=True, highlight=False)
        failed_gate = True
    if len(lost):
        level = "[bold red]not compared:[/]" if fail_above is not None else "[yellow]warning:[/]"
        err.print(f"{level} {len(lost)} case(s) measured in RUN_A are missing or failed in RUN_B:\n  "
                  + "\n  ".join(lost_case_lines(lost)), markup=True, highlight=False)
        failed_gate = fail_above is not None
    if len(bad):
        worst = bad.sort_values("ratio").iloc[-1]
        err.print(f"[bold red]regression:[/] {len(bad)} case(s) significantly slower than {fail_above}x; worst "
                  f"{worst['label']} N={worst['seq_len']} {worst['pass']}: {worst['ratio']:.2f}x",
                  markup=True, highlight=False)
        failed_gate = True
    if failed_gate:
        raise typer.Exit(1)

"""The command line: each command declares its options and calls the library.

Results go to stdout; progress, warnings and errors to stderr. Exit codes:
0 done; 1 compare found a regression, or a bug in attnbench (an unexpected
exception: a short message and the file holding its traceback); 2 bad usage
or input (attnbench's own errors, ``attnbench.errors``); 3 some cases failed;
130 interrupted.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup
from typer.exceptions import TyperException

from attnbench.errors import AttnbenchError
from attnbench.stats import MIN_EFFECT

JSON_SCHEMA = 1
BUG_EXIT_CODE = 1

out = Console()
PIPED_WIDTH = 200


def _fit_output() -> None:
    """COLUMNS, when set, is the width; else the terminal's. Piped output gets a
    wide fixed width so that tables are never cut at 80 columns."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        out.width = int(columns)
    elif not out.is_terminal:
        out.width = PIPED_WIDTH
err = Console(stderr=True, soft_wrap=True)  # messages are never wrapped mid-path


def save_traceback(exc: BaseException) -> str:
    """Write ``exc``'s full traceback to a new file in the temporary directory; its path."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    with tempfile.NamedTemporaryFile("w", prefix="attnbench-traceback-", suffix=".txt", delete=False,
                                     encoding="utf-8") as f:
        f.write(f"attnbench {' '.join(sys.argv[1:])}\n\n{text}")
    return f.name


class _ErrorBoundary(TyperGroup):
    """The one place errors become exit codes: attnbench's own errors are the
    user's to fix (a message, their exit code); anything else is a bug in
    attnbench (exit 1, one line, and where the full traceback was saved)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        ctx.meta["attnbench.argv"] = list(args)  # the command as typed, for run.json
        return super().parse_args(ctx, args)

    def invoke(self, ctx: typer.Context) -> object:
        try:
            return super().invoke(ctx)
        except AttnbenchError as exc:
            err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
            raise typer.Exit(exc.exit_code) from None
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


app = typer.Typer(
    name="attnbench",
    cls=_ErrorBoundary,
    help="Measure what self-attention mechanisms cost: time, memory and FLOPs of efficient variants.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        from attnbench import __version__

        out.print(f"attnbench {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                          callback=_show_version)] = False,
) -> None:
    _fit_output()


@contextmanager
def _user_errors() -> Iterator[None]:
    """Print the project's own errors as one message and exit with their code
    (the boundary does the same; this keeps what a command prints after an
    error, such as warnings, from running)."""
    try:
        yield
    except AttnbenchError as exc:
        err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
        raise typer.Exit(exc.exit_code) from None


def _command_line(ctx: typer.Context) -> list[str]:
    """The command being run, as typed (``attnbench run ...``), for run.json."""
    args = ctx.meta.get("attnbench.argv")
    return ["attnbench", *(sys.argv[1:] if args is None else args)]


def _print_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"schema": JSON_SCHEMA, **payload}, indent=2, default=str) + "\n")


COMPARE_JSON_COLUMNS = ["label", "variant", "family", "batch", "dim", "dtype", "device", "causal", "heads",
                        "seq_len", "pass", "status", "median_ms", "iqr_ms", "noisy", "baseline_ms", "speedup",
                        "peak_mem_mib", "baseline_mem_mib", "mem_ratio", "flops", "flops_source", "tflops",
                        "tokens_per_s", "error"]


def _compare_json(run_dir: Path, baseline: str | None, pass_name: str | None) -> None:
    """``compare --json``: one row per variant, case and pass, with speed-up and memory ratio."""
    from attnbench.analysis import with_baseline
    from attnbench.report import report_baseline
    from attnbench.results import frame_records, load_run

    with _user_errors():
        run_data = load_run(run_dir)
        frame = run_data.frame()
        base = report_baseline(frame, run_data, baseline)
        if base is None:
            raise AttnbenchError(f"{run_dir}: no finished cases to compare")
        data = with_baseline(frame, base)
        if pass_name:
            data = data[data["pass"] == pass_name]
    _warn(run_data.warnings)
    _print_json({"run_id": run_data.run_id, "run_dir": str(run_dir),
                 "baseline": base, "passes": list(dict.fromkeys(data["pass"])),
                 "rows": frame_records(data, COMPARE_JSON_COLUMNS)})


def _warn(messages: list[str]) -> None:
    for message in messages:
        err.print(f"[yellow]warning:[/] {message}", markup=True, highlight=False)


@app.command()
def run(
    ctx: typer.Context,
    suite_path: Annotated[Path, typer.Argument(metavar="SUITE.yaml", help="The suite to run.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Where run directories are created.")] = Path("results"),
    resume: Annotated[Path | None, typer.Option(help="Finish an interrupted run: only its missing cases run.",
                                                metavar="RUN_DIR")] = None,
    device: Annotated[str | None, typer.Option(help="Run every case on this device (cpu, cuda, cuda:N, "
                                                    "auto).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="The suite's smaller 'quick' setting.")] = False,
    in_process: Annotated[bool, typer.Option("--in-process", help="Run cases in this process (for "
                                             "debugging: a crash or hang then stops the sweep).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run a suite and write results/<run-id>/ (run.json, cases.jsonl, results.csv).

    Example: [bold]attnbench run suites/quick.yaml[/]
    """
    from attnbench import suite as suite_mod
    from attnbench.bench.sweep import RunOptions, resume_command, run_suite
    from attnbench.report import failures_table, run_legend, run_tables

    with _user_errors():
        suite = suite_mod.load(suite_path, quick=quick)
        if device:
            suite = suite.with_device(device)
        options = RunOptions(out_dir=out_dir, resume=resume, in_process=in_process, quiet=quiet,
                             command=_command_line(ctx))
        summary = run_suite(suite, options)
    _warn(summary.warnings)
    from attnbench.results import records_frame

    frame = records_frame(summary.records, summary.run_dir.name)
    for table in run_tables(frame):
        out.print(table)
    if not frame.empty:
        out.print(run_legend(frame), highlight=False)
    failed = failures_table(frame)
    if failed is not None:
        out.print(failed)
    err.print(f"results: {summary.run_dir}", highlight=False)
    if summary.interrupted:
        from rich.markup import escape

        command = resume_command(summary, str(suite_path), quick=quick, device=device)
        err.print(f"[yellow]interrupted[/]: what finished is saved. Resume with:\n  {escape(command)}",
                  markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(summary.exit_code)


PASS_NAMES_HELP = "forward, backward or forward_backward (or fwd, bwd, f+b)"


def _pass_option(value: str | None) -> str | None:
    """--pass: a pass by its full or short name (fwd, bwd, f+b)."""
    from attnbench.model import PASSES
    from attnbench.report import PASS_SHORT

    if value is None:
        return None
    names = {**{p: p for p in PASSES}, **{short: p for p, short in PASS_SHORT.items()}}
    if value not in names:
        raise AttnbenchError(f"--pass {value!r}: not a pass; use {PASS_NAMES_HELP}")
    return names[value]


def _check_outputs(plot: Path | None, csv: str | None, as_json: bool) -> None:
    """Refuse what cannot be written before anything is printed."""
    if plot is not None:
        from attnbench.plots import FORMATS

        if plot.suffix.lower() not in FORMATS:
            raise AttnbenchError(f"--plot {plot}: the plot must be a {' or '.join(FORMATS)} file")
    if csv == "-" and as_json:
        raise AttnbenchError("--csv - and --json both write to stdout: choose one")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A results directory (see attnbench runs).",
                                            show_default=False)],
    csv: Annotated[str | None, typer.Option("--csv", metavar="FILE", help="Write the tidy CSV here ('-': to "
                                            "stdout, instead of the tables).", show_default=False)] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="Write the whole report as markdown here.",
                                                  metavar="FILE", show_default=False)] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Plot time and memory vs N (log-log) to a .png or "
                                                             ".svg file.", metavar="FILE", show_default=False)] = None,
    baseline: Annotated[str | None, typer.Option(help="Variant to compare against [default: the suite's "
                                                      "baseline, else softmax].", metavar="VARIANT",
                                                 show_default=False)] = None,
    variants: Annotated[list[str] | None, typer.Option("--variant", metavar="LABEL", help="Only this variant "
                                                       "(repeat for more).", show_default=False)] = None,
    ns: Annotated[list[int] | None, typer.Option("--n", metavar="N", help="Only this sequence length (repeat "
                                                 "for more).", show_default=False)] = None,
    pass_name: Annotated[str | None, typer.Option("--pass", metavar="PASS", help=f"Only this pass: "
                                                  f"{PASS_NAMES_HELP}.", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows, speed-ups, scaling exponents and "
                                          "crossovers as JSON on stdout.")] = False,
) -> None:
    """Print a run's tables again from disk; write its CSV, markdown and plot.

    Example: [bold]attnbench report results/20260101-120000-quick --csv quick.csv[/]
    """
    from attnbench.analysis import select_rows
    from attnbench.errors import ResultsError
    from attnbench.report import failures_table, nothing_measured, report_baseline
    from attnbench.results import load_run

    with _user_errors():
        _check_outputs(plot, csv, as_json)
        only_pass = _pass_option(pass_name)
        run_data = load_run(run_dir)
        frame = select_rows(run_data.frame(), variants, ns, only_pass)
        why = nothing_measured(run_data, frame)
        if why:
            failed = failures_table(frame) if not frame.empty else None
            if failed is not None:
                out.print(failed)
            raise ResultsError(why)
        base = report_baseline(frame, run_data, baseline)
    _warn(run_data.warnings)
    if as_json:
        _report_json(run_data, frame, base)
    elif csv == "-":
        frame.to_csv(sys.stdout, index=False, columns=_csv_columns(frame))
    else:
        from attnbench.report import terminal_report

        for item in terminal_report(run_data, frame, base):
            out.print(item, highlight=False)
    with _user_errors():
        _write_report_files(run_data, frame, base, csv if csv != "-" else None, markdown, plot)


def _csv_columns(frame: Any) -> list[str]:
    from attnbench.results import CSV_COLUMNS

    return [c for c in CSV_COLUMNS if c in frame.columns]


def _report_json(run_data: Any, frame: Any, base: str | None) -> None:
    """``report --json``: the tidy rows (the results.csv columns), the rows
    against the baseline, and per pass the scaling exponents and crossovers."""
    from attnbench.analysis import scaling_summary, with_baseline
    from attnbench.report import measured_passes
    from attnbench.results import CSV_COLUMNS, frame_records

    relative = with_baseline(frame, base) if base is not None else frame.iloc[0:0]
    scaling = {p: frame_records(scaling_summary(frame, base, p)) for p in measured_passes(frame)}
    _print_json({"run_id": run_data.run_id, "run_dir": str(run_data.path),
                 "suite": run_data.meta.get("suite_name"), "status": run_data.meta.get("status"),
                 "baseline": base, "warnings": run_data.warnings, "columns": CSV_COLUMNS,
                 "rows": frame_records(frame, CSV_COLUMNS),
                 "against_baseline": frame_records(relative, COMPARE_JSON_COLUMNS),
                 "scaling": scaling})


def _write_report_files(run_data: Any, frame: Any, base: str | None, csv: str | None, markdown: Path | None,
                        plot: Path | None) -> None:
    from attnbench.markdown import markdown_report, write_text
    from attnbench.results import write_csv

    if csv is not None:
        write_csv(frame, Path(csv))
        err.print(f"wrote {csv}", highlight=False)
    if plot is not None:
        from attnbench.plots import plot_run

        plot_run(frame, plot, run_data.records, title=str(run_data.meta.get("suite_name") or ""), baseline=base)
        err.print(f"wrote {plot}", highlight=False)
    if markdown is not None:
        import os

        link = os.path.relpath(plot.resolve(), markdown.resolve().parent) if plot is not None else None
        write_text(markdown, markdown_report(run_data, base, plot=link, frame=frame))
        err.print(f"wrote {markdown}", highlight=False)


@app.command()
def compare(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_A", help="A results directory.", show_default=False)],
    run_b: Annotated[Path | None, typer.Argument(metavar="RUN_B", help="A second run: compare it against "
                                                 "RUN_A case by case (B/A).", show_default=False)] = None,
    fail_above: Annotated[float | None, typer.Option("--fail-above", help="With RUN_B: exit 1 when a "
                                                     "significant slowdown B/A exceeds this ratio (e.g. 1.10), "
                                                     "or when a case measured in RUN_A is missing or failed "
                                                     "in RUN_B.", metavar="RATIO", show_default=False)] = None,
    min_effect: Annotated[float, typer.Option("--min-effect", metavar="FRACTION", help="With RUN_B: changes "
                                              "smaller than this fraction are never significant.")] = MIN_EFFECT,
    baseline: Annotated[str | None, typer.Option(help="With one run: the variant to compare against "
                                                      "[default: the suite's baseline, else softmax].",
                                                 metavar="VARIANT", show_default=False)] = None,
    pass_name: Annotated[str | None, typer.Option("--pass", metavar="PASS", help=f"Only this pass: "
                                                  f"{PASS_NAMES_HELP} [default: all measured].",
                                                  show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison rows as JSON on stdout.")] = False,
) -> None:
    """One run: each variant against a baseline. Two runs: RUN_B against RUN_A, case by case.

    With one run: each variant's speed-up and memory ratio against a baseline,
    laid out like Long Range Arena's Table 2 (rows variants, columns N, cells
    "steps/s (speed-up)").

    With RUN_B: per case and pass the ratio of medians B/A, a Mann-Whitney U
    test on the raw samples, and marks as asv prints them: + slower, - faster,
    ~ no significant change, x failed or missing. With --fail-above the exit
    code is 1 on a significant slowdown past the ratio, and also when a case
    measured in RUN_A is missing or failed in RUN_B (a gate must not pass on
    what it could not compare).

    Example: [bold]attnbench compare results/20260101-120000-quick --baseline softmax[/]
    Example: [bold]attnbench compare results/before results/after --fail-above 1.10[/]
    """
    with _user_errors():
        only_pass = _pass_option(pass_name)
        if run_b is not None:
            if baseline is not None:
                raise AttnbenchError("--baseline applies to one run (each variant against it); comparing "
                                     "RUN_B against RUN_A has no baseline: drop --baseline")
        elif fail_above is not None:
            raise AttnbenchError("--fail-above needs two runs: compare RUN_A RUN_B --fail-above RATIO")
    if run_b is not None:
        return _compare_two_runs(run_dir, run_b, only_pass, fail_above, min_effect, as_json)
    if as_json:
        return _compare_json(run_dir, baseline, only_pass)
    from attnbench.report import RELATIVE_LEGEND, comparison_tables, report_baseline
    from attnbench.results import load_run
    from attnbench.suite import PASSES

    with _user_errors():
        run_data = load_run(run_dir)
        frame = run_data.frame()
        _warn(run_data.warnings)
        base = report_baseline(frame, run_data, baseline)
        if base is None:
            raise AttnbenchError(f"{run_dir}: no finished cases to compare")
        passes = [only_pass] if only_pass else [p for p in PASSES if p in set(frame["pass"])]
        for p in passes:
            for table in comparison_tables(frame, base, p):
                out.print(table)
        out.print(RELATIVE_LEGEND, highlight=False)


def _compare_two_runs(run_a: Path, run_b: Path, pass_name: str | None, fail_above: float | None,
                      min_effect: float, as_json: bool) -> None:
    """``compare RUN_A RUN_B``: B against A, case by case; exit 1 on a regression past
    --fail-above or on a case of A that B lost."""
    from attnbench.analysis import compare_runs, compare_summary, lost_cases, regressions
    from attnbench.report import compare_runs_tables, lost_case_lines
    from attnbench.results import frame_records, load_run

    with _user_errors():
        if fail_above is not None and not fail_above > 0:
            raise AttnbenchError(f"--fail-above must be a positive ratio such as 1.10, got {fail_above}")
        if not 0 <= min_effect < 1:
            raise AttnbenchError(f"--min-effect must be a fraction in [0, 1), got {min_effect}")
        a, b = load_run(run_a), load_run(run_b)
        compared = compare_runs(a.records, b.records, min_effect=min_effect)
        if pass_name:
            compared = compared[compared["pass"] == pass_name]
        if compared.empty:
            raise AttnbenchError(f"{run_a} and {run_b}: no cases to compare")
    same = run_a.resolve() == run_b.resolve()
    if same:
        err.print(f"note: {run_a} and {run_b} are the same run: every ratio is 1", highlight=False)
    _warn(a.warnings + b.warnings)
    summary = compare_summary(compared)
    bad = regressions(compared, fail_above) if fail_above is not None else compared.iloc[0:0]
    lost = lost_cases(compared)
    if as_json:
        _print_json({"run_a": str(run_a), "run_b": str(run_b), "same_run": same, "min_effect": min_effect,
                     "fail_above": fail_above, "regressions": len(bad), "lost": len(lost),
                     "rows": frame_records(compared), "summary": frame_records(summary)})
    else:
        for table in compare_runs_tables(compared, summary, a.run_id, b.run_id, min_effect=min_effect):
            out.print(table)
    others = int((compared["mark"] == "x").sum()) - len(lost)
    if others:
        _warn([f"{others} case(s) not measured in RUN_A (marked x): nothing to compare them with"])
    failed_gate = False
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


@app.command("list")
def list_variants(
    names: Annotated[list[str] | None, typer.Argument(
        metavar="[NAME]...", help="Show these variants in full: a registered name, or an import path "
                                  "MODULE:CLASS such as examples.my_attention:MyAttention.",
        show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every registered variant (built in and plugins): family, complexity, causal
    support; with NAME, one variant in full (description, paper, parameters with
    type, default, choices and meaning).

    Example: [bold]attnbench list linformer[/]
    """
    from dataclasses import asdict

    from attnbench.catalog import parameter_rows, variant_detail, variants_table
    from attnbench.variants import variant_info, variant_names

    with _user_errors():
        infos = [variant_info(name) for name in names or []]
    if as_json:
        shown = infos or [variant_info(n) for n in variant_names()]
        _print_json({"variants": [{**asdict(i), "parameters": parameter_rows(i.name)} for i in shown]})
        return
    if not names:
        out.print(variants_table(variant_names()))
        return
    for i, info in enumerate(infos):
        if i:
            out.print()
        for item in variant_detail(info.name):
            out.print(item)


@app.command()
def validate(
    suite_path: Annotated[Path, typer.Argument(metavar="SUITE.yaml", help="The suite to check.")],
    quick: Annotated[bool, typer.Option("--quick", help="Check the quick setting.")] = False,
) -> None:
    """Check a suite and run nothing.

    Example: [bold]attnbench validate suites/quick.yaml[/]
    """
    from attnbench import suite as suite_mod
    from attnbench.bench.skip import device_unavailable

    with _user_errors():
        suite = suite_mod.load(suite_path, quick=quick)
    cases = suite.cases()
    for device in dict.fromkeys(c.device for c in cases):
        reason = device_unavailable(device)
        if reason:  # a suite for another machine may still be valid
            _warn([f"{reason}: its {sum(c.device == device for c in cases)} case(s) on {device} would be "
                   "skipped here"])
    out.print(f"{suite_path}: ok — {len(suite.variants)} variants, {len(cases)} cases, "
              f"{sum(len(c.passes) for c in cases)} timed passes", highlight=False)


@app.command()
def schema() -> None:
    """Print the JSON Schema (draft 2020-12) of suite files, for editors: save it
    and point a YAML language server at it with a first line
    [bold]# yaml-language-server: $schema=suite.schema.json[/]. The package ships
    the same file as attnbench/data/suite.schema.json.

    Example: [bold]attnbench schema > suite.schema.json[/]
    """
    from attnbench.schema import schema_text

    sys.stdout.write(schema_text())


@app.command()
def env(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """What this machine offers (Python, torch, CUDA, GPUs, CPU, SDPA backends)
    and what would make timings noisy.

    Example: [bold]attnbench env --json[/]
    """
    from attnbench.env import collect_environment, environment_rows

    data = collect_environment()
    if as_json:
        _print_json({"environment": data})
        return
    from rich.table import Table

    table = Table(title="environment", show_header=False)
    table.add_column("key", no_wrap=True, style="bold")
    table.add_column("value")
    for key, value in environment_rows(data):
        table.add_row(key, value)
    out.print(table)
    _warn(data["warnings"])


def main(argv: list[str] | None = None) -> Callable[..., Any]:  # pragma: no cover - console entry
    return app(argv)

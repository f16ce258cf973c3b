"""The command line: each command declares its options and calls the library.

Results go to stdout; progress, warnings and errors to stderr. Exit codes:
0 done; 1 compare found a regression, or a bug in attnbench (an unexpected
exception: a short message and the file holding its traceback); 2 bad usage
or input (attnbench's own errors, ``attnbench.errors``); 3 some cases failed;
130 interrupted.
"""

from __future__ import annotations

import json
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup
from typer.exceptions import TyperException

from attnbench.errors import AttnbenchError
from attnbench.stats import MIN_EFFECT

JSON_SCHEMA = 1
BUG_EXIT_CODE = 1

# Piped output gets a wide fixed width so that tables are never cut at 80 columns.
out = Console(width=None if sys.stdout.isatty() else 200)
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

    def invoke(self, ctx: typer.Context) -> object:
        try:
            return super().invoke(ctx)
        except AttnbenchError as exc:  # escaped: a message may quote [brackets], e.g. attnbench[ray]
            err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False)
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
    pass


@contextmanager
def _user_errors() -> Iterator[None]:
    """Print the project's own errors as one message and exit with their code
    (the boundary does the same; this keeps what a command prints after an
    error, such as warnings, from running)."""
    try:
        yield
    except AttnbenchError as exc:  # escaped: a message may quote [brackets], e.g. attnbench[ray]
        err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False)
        raise typer.Exit(exc.exit_code) from None


def _print_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"schema": JSON_SCHEMA, **payload}, indent=2, default=str) + "\n")


COMPARE_JSON_COLUMNS = ["label", "variant", "family", "batch", "dim", "dtype", "device", "causal", "heads",
                        "seq_len", "pass", "status", "median_ms", "iqr_ms", "noisy", "rounds", "round_spread",
                        "baseline_ms", "speedup", "speedup_low", "speedup_high", "speedup_method", "peak_mem_mib",
                        "baseline_mem_mib", "mem_ratio", "mem_ratio_low", "mem_ratio_high", "flops", "flops_source",
                        "tflops", "tokens_per_s", "error"]


def _report_json(run_dir: Path) -> None:
    """``report --json``: the run's tidy rows (the results.csv columns)."""
    from attnbench.quality.tables import quality_json
    from attnbench.results import CSV_COLUMNS, frame_records, load_run

    with _user_errors():
        run_data = load_run(run_dir)
        frame = run_data.frame()
    _warn(run_data.warnings)
    _print_json({"run_id": run_data.run_id, "run_dir": str(run_dir),
                 "suite": run_data.meta.get("suite_name"), "status": run_data.meta.get("status"),
                 "warnings": run_data.warnings, "columns": CSV_COLUMNS, "rows": frame_records(frame, CSV_COLUMNS),
                 "quality": quality_json(run_data.quality)})


def _compare_json(run_dir: Path, baseline: str | None, pass_name: str | None) -> None:
    """``compare --json``: one row per variant, case and pass, with speed-up and memory ratio."""
    from attnbench.analysis import default_baseline, with_baseline
    from attnbench.results import frame_records, load_run

    with _user_errors():
        run_data = load_run(run_dir)
        frame = run_data.frame()
        base = baseline or default_baseline(frame, run_data.meta.get("baseline"))
        if base is None:
            raise AttnbenchError(f"{run_dir}: no finished cases to compare")
        data = with_baseline(frame, base, run_data.records)
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
    shard: Annotated[str | None, typer.Option(help="Run only part K of N of the suite (whole setting groups, "
                                                   "balanced by estimated time), e.g. 2/8; join the parts with "
                                                   "attnbench merge.", metavar="K/N")] = None,
    devices: Annotated[str | None, typer.Option(help="One worker per device, each pinned to it: cuda:0,cuda:1,... "
                                                     "or all (every GPU here).", metavar="LIST")] = None,
    allow_shared_cpu: Annotated[bool, typer.Option("--allow-shared-cpu", help="With --devices cpu,cpu,...: run "
                                                   "several CPU workers, each on its share of the cores (they "
                                                   "still disturb each other; the run is marked).")] = False,
    executor: Annotated[str, typer.Option(help="Where cases run: local (worker processes here) or ray (tasks "
                                               "on a Ray cluster).")] = "local",
    address: Annotated[str | None, typer.Option(help="With --executor ray: the cluster to join (auto, or "
                                                     "HOST:PORT); without it a local cluster is started.")] = None,
) -> None:
    """Run a suite and write results/<run-id>/ (run.json, cases.jsonl, results.csv).

    Example: [bold]attnbench run suites/quick.yaml[/]
    Example: [bold]attnbench run suites/gpu.yaml --devices all[/]
    Example: [bold]attnbench run suites/gpu.yaml --executor ray --address auto[/]
    Example: [bold]attnbench run suites/gpu.yaml --shard $SLURM_ARRAY_TASK_ID/8 --out shards[/]
    """
    from attnbench import suite as suite_mod
    from attnbench.bench.shard import parse_shard
    from attnbench.bench.sweep import RunOptions, resume_command, run_suite, spread_options
    from attnbench.quality.tables import quality_tables
    from attnbench.report import failures_table, run_tables

    with _user_errors():
        part = parse_shard(shard) if shard is not None else None
        spread = spread_options(executor=executor, address=address, devices=devices,
                                allow_shared_cpu=allow_shared_cpu, in_process=in_process, device=device)
        suite = suite_mod.load(suite_path, quick=quick)
        if device or spread.device:
            suite = suite.with_device(device or spread.device)
        options = RunOptions(out_dir=out_dir, resume=resume, in_process=in_process, quiet=quiet, shard=part,
                             executor=executor, address=address, devices=spread.devices,
                             allow_shared_cpu=allow_shared_cpu)
        summary = run_suite(suite, options)
    _warn(summary.warnings)
    from attnbench.results import records_frame

    frame = records_frame(summary.records, summary.run_dir.name)
    for table in run_tables(frame):
        out.print(table)
    for table in quality_tables(summary.quality):
        out.print(table)
    failed = failures_table(frame)
    if failed is not None:
        out.print(failed)
    err.print(f"results: {summary.run_dir}", highlight=False)
    if summary.interrupted:
        from rich.markup import escape

        command = resume_command(summary, str(suite_path), quick=quick, device=device, extra=spread.args)
        err.print(f"[yellow]interrupted[/]: what finished is saved. Resume with:\n  {escape(command)}",
                  markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(summary.exit_code)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A results directory.")],
    csv: Annotated[Path | None, typer.Option("--csv", help="Write the tidy CSV here.")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="Write the whole report as markdown here.",
                                                  metavar="FILE")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Plot time and memory vs N (log-log) to a .png or "
                                                             ".svg file.", metavar="FILE")] = None,
    baseline: Annotated[str | None, typer.Option(help="Variant to compare against (default: the suite's "
                                                      "baseline, else softmax).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the tidy rows as JSON on stdout.")] = False,
) -> None:
    """Print a run's tables again from disk.

    Example: [bold]attnbench report results/20260101-120000-quick --csv quick.csv[/]
    """
    if as_json:
        return _report_json(run_dir)
    from attnbench.analysis import check_pairable
    from attnbench.markdown import markdown_report, write_text
    from attnbench.report import report_baseline, terminal_report
    from attnbench.results import load_run, write_csv

    with _user_errors():
        run_data = load_run(run_dir)
        frame = run_data.frame()
        _warn(run_data.warnings)
        base = report_baseline(frame, run_data, baseline)
        if base is not None:
            check_pairable(frame)  # before anything is printed
        for item in terminal_report(run_data, frame, base):
            out.print(item)
        if csv is not None:  # with the paired speed-ups, their intervals and the roofline fraction
            from attnbench.analysis import with_baseline
            from attnbench.roofline import with_peak_fraction

            tidy = with_baseline(frame, base, run_data.records) if base is not None else frame
            write_csv(with_peak_fraction(tidy, run_data.meta), csv)
            err.print(f"wrote {csv}", highlight=False)
        if plot is not None:
            from attnbench.plots import plot_run

            plot_run(frame, plot, run_data.records, title=str(run_data.meta.get("suite_name") or ""), baseline=base)
            err.print(f"wrote {plot}", highlight=False)
        if markdown is not None:
            link = None
            if plot is not None:
                import os

                link = os.path.relpath(plot.resolve(), markdown.resolve().parent)
            write_text(markdown, markdown_report(run_data, base, plot=link, frame=frame))
            err.print(f"wrote {markdown}", highlight=False)


@app.command()
def compare(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A results directory.")],
    run_b: Annotated[Path | None, typer.Argument(metavar="[RUN_B]", help="A second run: compare it against "
                                                 "RUN_DIR case by case (B/A).")] = None,
    fail_above: Annotated[float | None, typer.Option("--fail-above", help="With RUN_B: exit 1 when a "
                                                     "significant slowdown B/A exceeds this ratio (e.g. 1.10).",
                                                     metavar="R")] = None,
    min_effect: Annotated[float, typer.Option("--min-effect", help="With RUN_B: changes smaller than this "
                                              "fraction are never significant.")] = MIN_EFFECT,
    baseline: Annotated[str | None, typer.Option(help="Variant to compare against (default softmax).")] = None,
    pass_name: Annotated[str | None, typer.Option("--pass", help="forward, backward or forward_backward "
                                                                 "(default: all measured).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison rows as JSON on stdout.")] = False,
) -> None:
    """Each variant's speed-up and memory ratio against a baseline, laid out like
    Long Range Arena's Table 2 (rows models, columns N, cells "steps/s (speed-up)").

    With a second run, RUN_B against RUN_DIR: per case and pass the ratio of
    visit medians B/A, a test with the visit (one case in one round) as the unit,
    beyond the drift all cases share and the minimum effect, and marks as asv
    prints them: + slower, - faster, ~ no change, ? too few rounds, x failed or
    missing; the two runs' calibrations side by side.

    Example: [bold]attnbench compare results/20260101-120000-quick --baseline softmax[/]
    Example: [bold]attnbench compare results/before results/after --fail-above 1.10[/]
    """
    if run_b is not None:
        return _compare_two_runs(run_dir, run_b, pass_name, fail_above, min_effect, as_json)
    if fail_above is not None:
        err.print("[bold red]error:[/] --fail-above needs two runs: compare RUN_A RUN_B --fail-above R",
                  markup=True, highlight=False)
        raise typer.Exit(2)
    if as_json:
        return _compare_json(run_dir, baseline, pass_name)
    from attnbench.analysis import default_baseline
    from attnbench.report import comparison_tables
    from attnbench.results import load_run
    from attnbench.suite import PASSES

    with _user_errors():
        run_data = load_run(run_dir)
        frame = run_data.frame()
        _warn(run_data.warnings)
        base = baseline or default_baseline(frame, run_data.meta.get("baseline"))
        if base is None:
            raise AttnbenchError(f"{run_dir}: no finished cases to compare")
        passes = [pass_name] if pass_name else [p for p in PASSES if p in set(frame["pass"])]
        for p in passes:
            for table in comparison_tables(frame, base, p, run_data.records):
                out.print(table)


def _compare_two_runs(run_a: Path, run_b: Path, pass_name: str | None, fail_above: float | None,
                      min_effect: float, as_json: bool) -> None:
    """``compare RUN_A RUN_B``: B against A, case by case; exit 1 on a regression past --fail-above."""
    from dataclasses import asdict

    from attnbench.analysis import compare_run_visits, compare_summary, regressions
    from attnbench.report import compare_runs_tables
    from attnbench.results import frame_records, load_run
    from attnbench.roofline import calibration_table

    with _user_errors():
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
    _warn(a.warnings + b.warnings)
    summary = compare_summary(compared)
    bad = regressions(compared, fail_above) if fail_above is not None else compared.iloc[0:0]
    shifted = (fail_above is not None and shift is not None and shift.verdict == "slower"
               and shift.ratio > fail_above)
    if as_json:
        _print_json({"run_a": str(run_a), "run_b": str(run_b), "min_effect": min_effect, "fail_above": fail_above,
                     "regressions": len(bad) + int(shifted), "shift": asdict(shift) if shift else None,
                     "calibration": {"a": a.meta.get("calibration"), "b": b.meta.get("calibration")},
                     "rows": frame_records(compared), "summary": frame_records(summary)})
    else:
        for table in compare_runs_tables(compared, summary, a.run_id, b.run_id, min_effect=min_effect,
                                         shift=shift):
            out.print(table)
        side_by_side = calibration_table([("A " + a.run_id, a.meta), ("B " + b.run_id, b.meta)])
        if side_by_side is not None:
            out.print(side_by_side)
    missing = int((compared["mark"] == "x").sum())
    if missing:
        _warn([f"{missing} case(s) failed or are missing in one of the runs (marked x)"])
    undecided = int((compared["mark"] == "?").sum())
    if undecided:
        _warn([f"{undecided} case(s) have too few rounds for a verdict (marked ?): a run needs timing.rounds >= 2 "
               "to tell a change from the drift between visits"])
    if shifted:
        err.print(f"[bold red]regression:[/] every case is slower together: B/A = {shift.ratio:.3f} "
                  f"[{shift.low:.3f}–{shift.high:.3f}], past {fail_above}x", markup=True, highlight=False)
        if not len(bad):
            raise typer.Exit(1)
    if len(bad):
        worst = bad.sort_values("ratio").iloc[-1]
        err.print(f"[bold red]regression:[/] {len(bad)} case(s) significantly slower than {fail_above}x; worst "
                  f"{worst['label']} N={worst['seq_len']} {worst['pass']}: {worst['ratio']:.2f}x",
                  markup=True, highlight=False)
        raise typer.Exit(1)


@app.command()
def merge(
    parts: Annotated[list[Path], typer.Argument(metavar="RUN_DIR...", help="The parts: results directories of "
                                                "one suite (e.g. its shards).")],
    out_dir: Annotated[Path, typer.Option("--out", help="The merged results directory (new).",
                                          metavar="RUN_DIR")],
) -> None:
    """Merge the parts of one sweep (shards of a batch array, runs on several
    machines) into one results directory that report and compare read.

    The parts must be runs of the same suite with the same attnbench version
    and git commit, and no case may be in two of them.

    Example: [bold]attnbench merge shards/* --out results/gpu-merged[/]
    """
    from attnbench.merge import merge_runs

    with _user_errors():
        summary = merge_runs(parts, out_dir, command=list(sys.argv))
    _warn(summary.warnings)
    out.print(f"merged {summary.parts} runs, {len(summary.records)} cases -> {summary.run_dir}"
              + ("" if summary.complete else " (incomplete)"), highlight=False)


@app.command("list")
def list_variants(
    import_paths: Annotated[list[str] | None, typer.Argument(
        metavar="[MODULE:CLASS]...", help="Custom variants to import and list too, e.g. "
                                          "examples.my_attention:MyAttention.", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every registered variant (built in, plugins, and any import paths given):
    family, paper, complexity, causal support, parameters, origin.

    Example: [bold]attnbench list examples.my_attention:MyAttention --json[/]
    """
    from dataclasses import asdict

    from rich.table import Table

    from attnbench.variants import variant_info, variant_names

    with _user_errors():
        for name in import_paths or []:
            variant_info(name)
    infos = [variant_info(n) for n in variant_names()]
    if as_json:
        _print_json({"variants": [asdict(i) for i in infos]})
        return
    table = Table(title="attnbench variants")
    for col in ("variant", "family", "paper", "complexity", "causal", "defaults", "origin"):
        table.add_column(col, no_wrap=col in ("variant", "family", "paper"))
    for i in infos:
        defaults = ", ".join(f"{k}={v}" for k, v in i.defaults.items())
        table.add_row(i.name, i.family, f"arXiv:{i.paper}" if i.paper else "", i.complexity,
                      "yes" if i.causal else "no", defaults, i.origin)
    out.print(table)


@app.command()
def validate(
    suite_path: Annotated[Path, typer.Argument(metavar="SUITE.yaml", help="The suite to check.")],
    quick: Annotated[bool, typer.Option("--quick", help="Check the quick setting.")] = False,
) -> None:
    """Check a suite and run nothing.

    Example: [bold]attnbench validate suites/quick.yaml[/]
    """
    from attnbench import suite as suite_mod

    with _user_errors():
        suite = suite_mod.load(suite_path, quick=quick)
    cases = suite.cases()
    quality = ""
    if suite.quality is not None:
        from attnbench.quality.plan import quality_tasks
        from attnbench.suite_quality import quality_variants

        tasks = quality_tasks(suite.quality, quality_variants(suite.variants))
        kinds = [t.kind for t in tasks]
        quality = f", quality: {kinds.count('approx')} approx + {kinds.count('mqar')} mqar measurements"
    rounds = suite.timing.rounds
    out.print(f"{suite_path}: ok — {len(suite.variants)} variants, {len(cases)} cases, "
              f"{sum(len(c.passes) for c in cases)} timed passes, {rounds} round{'s' if rounds > 1 else ''} "
              f"({len(cases) * rounds} visits){quality}", highlight=False)


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

"""The command line: each command declares its options and calls the library.

Results go to stdout; progress, warnings and errors to stderr. Exit codes:
0 done; 1 compare found a regression, or a bug in attnbench (an unexpected
exception: a short message and the file holding its traceback); 2 bad usage
or input (attnbench's own errors, ``attnbench.errors``); 3 some cases failed;
130 interrupted.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from attnbench.cli import help as cli_help  # noqa: F401 - plain option types and usage names in --help
from attnbench.cli.boundary import ErrorBoundary
from attnbench.cli.console import (
    count_of,
    duration_text,
    err,
    fit_output,
    out,
    print_json,
    user_errors,
    warn,
)
from attnbench.cli.outputs import (
    EXIT_UNRELIABLE,
    PASS_NAMES_HELP,
    build_run_report,
    check_outputs,
    csv_columns,
    pass_option,
    print_baseline_comparison,
    print_two_runs,
    strict_exit,
    write_files,
)
from attnbench.errors import AttnbenchError
from attnbench.stats.between_runs import MIN_EFFECT

app = typer.Typer(
    name="attnbench",
    cls=ErrorBoundary,
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
    fit_output()





def _command_line(ctx: typer.Context) -> list[str]:
    """The command being run, as typed (``attnbench run ...``), for run.json."""
    args = ctx.meta.get("attnbench.argv")
    return ["attnbench", *(sys.argv[1:] if args is None else args)]





@app.command()
def run(
    ctx: typer.Context,
    suite_path: Annotated[Path, typer.Argument(metavar="SUITE", help="The suite file (YAML) to run.",
                                               show_default=False)],
    out_dir: Annotated[Path, typer.Option("--out", metavar="DIR", help="Where run directories are created.")
                       ] = Path("results"),
    resume: Annotated[Path | None, typer.Option(help="Finish an interrupted run: only its missing cases run.",
                                                metavar="RUN_DIR", show_default=False)] = None,
    device: Annotated[str | None, typer.Option(help="Run every case on this device (cpu, cuda, cuda:N, "
                                                    "auto) \\[default: the suite's devices].", metavar="DEVICE",
                                               show_default=False)] = None,
    quick: Annotated[bool, typer.Option("--quick", help="The suite's smaller quick: setting.")] = False,
    in_process: Annotated[bool, typer.Option("--in-process", help="Run cases in this process (for "
                                             "debugging: a crash or hang then stops the sweep).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 4 when the run's timings are unreliable (the "
                                         "verdict on the first line), for CI.")] = False,
    shard: Annotated[str | None, typer.Option(help="Run only part K of N of the suite (whole setting groups, "
                                                   "balanced by estimated time), e.g. 2/8; join the parts with "
                                                   "attnbench merge.", metavar="K/N")] = None,
    devices: Annotated[str | None, typer.Option(help="One worker per device, each pinned to it: cuda:0,cuda:1,... "
                                                     "or all (every GPU here).", metavar="LIST")] = None,
    allow_shared_cpu: Annotated[bool, typer.Option("--allow-shared-cpu", help="With --devices cpu,cpu,...: run "
                                                   "several CPU workers, each on its share of the cores (they "
                                                   "still disturb each other; the run is marked).")] = False,
    executor: Annotated[str, typer.Option(help="Where cases run: local (worker processes here) or ray (tasks "
                                               "on a Ray cluster).", metavar="NAME")] = "local",
    address: Annotated[str | None, typer.Option(help="With --executor ray: the cluster to join (auto, or "
                                                     "HOST:PORT); without it a local cluster is started.",
                                                metavar="ADDRESS", show_default=False)] = None,
) -> None:
    """Run a suite and write results/<run-id>/ (run.json, cases.jsonl, results.csv).

    Example: [bold]attnbench run suites/quick.yaml[/]
    Example: [bold]attnbench run suites/gpu.yaml --devices all[/]
    Example: [bold]attnbench run suites/gpu.yaml --executor ray --address auto[/]
    Example: [bold]attnbench run suites/gpu.yaml --shard $SLURM_ARRAY_TASK_ID/8 --out shards[/]
    """
    from attnbench.bench.executors.spread import spread_options
    from attnbench.bench.rundir import RunOptions
    from attnbench.bench.shard import parse_shard
    from attnbench.bench.sweep import resume_command, run_suite
    from attnbench.report.build import report_of_records
    from attnbench.report.terminal import run_end
    from attnbench.suite import load as suite_mod

    with user_errors():
        part = parse_shard(shard) if shard is not None else None
        spread = spread_options(executor=executor, address=address, devices=devices,
                                allow_shared_cpu=allow_shared_cpu, in_process=in_process, device=device)
        suite = suite_mod.load(suite_path, quick=quick)
        if quick and "quick" not in suite.raw:
            warn([f"{suite_path} has no quick: section; --quick runs the full suite"])
        if device or spread.device:
            suite = suite.with_device(device or spread.device)
        options = RunOptions(out_dir=out_dir, resume=resume, in_process=in_process, quiet=quiet, shard=part,
                             executor=executor, address=address, devices=spread.devices,
                             allow_shared_cpu=allow_shared_cpu, command=_command_line(ctx))
        summary = run_suite(suite, options)
    if summary.interrupted and not summary.visits:  # nothing to show, nothing to resume
        err.print(f"interrupted before any case was measured ({summary.run_dir} holds nothing)", highlight=False)
        raise typer.Exit(summary.exit_code)
    warn(summary.warnings)
    report = report_of_records(summary.run_dir, summary.records, summary.quality)
    for item in run_end(report):
        out.print(item, highlight=False)
    if report.traceback_note:
        err.print(report.traceback_note, highlight=False)
    err.print(f"results: {summary.run_dir}", highlight=False)
    if summary.interrupted:
        from rich.markup import escape

        command = resume_command(summary, str(suite_path), quick=quick, device=device, extra=spread.args)
        err.print(f"[yellow]interrupted[/]: what finished is saved. Resume with:\n  {escape(command)}",
                  markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(summary.exit_code or strict_exit(report.verdict, strict))


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
    baseline: Annotated[str | None, typer.Option(help="Variant to compare against \\[default: the suite's "
                                                      "baseline, else softmax].", metavar="VARIANT",
                                                 show_default=False)] = None,
    variants: Annotated[list[str] | None, typer.Option("--variant", metavar="LABEL", help="Only this variant "
                                                       "(repeat for more).", show_default=False)] = None,
    ns: Annotated[list[int] | None, typer.Option("--n", metavar="N", help="Only this sequence length (repeat "
                                                 "for more).", show_default=False)] = None,
    pass_name: Annotated[str | None, typer.Option("--pass", metavar="PASS", help=f"Only this pass: "
                                                  f"{PASS_NAMES_HELP}.", show_default=False)] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 4 when the run's timings are unreliable (the "
                                         "verdict on the first line), for CI.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows, speed-ups, scaling exponents and "
                                          "crossovers as JSON on stdout.")] = False,
    plot_tradeoff: Annotated[Path | None, typer.Option(
        "--plot-tradeoff", metavar="FILE", help="Draw LRA's Figure 3 (speed, quality, memory) for the run beside "
        "the paper's own, to a .png or .svg file: quality is the run's MQAR accuracy when it measured it, else "
        "LRA's published score.", show_default=False)] = None,
    html: Annotated[Path | None, typer.Option("--html", metavar="FILE", help="Write the whole report as one "
                                              "self-contained HTML page (charts, sortable tables; opens offline). "
                                              "Needs the html extra.", show_default=False)] = None,
    plot_decode: Annotated[Path | None, typer.Option(
        "--plot-decode", metavar="FILE", help="Plot decode time per token and the cache or state against N "
        "(log-log) to a .png or .svg file.", show_default=False)] = None,
) -> None:
    """Print a run's tables again from disk; write its CSV, markdown and plot.

    Example: [bold]attnbench report results/20260101-120000-quick --csv quick.csv[/]
    Example: [bold]attnbench report results/20260101-120000-quick --html quick.html[/]
    """
    from attnbench.report.build import ReportOptions
    from attnbench.report.files import ReportFiles

    with user_errors():
        check_outputs(plot, csv, as_json, plot_tradeoff, html, plot_decode)
        options = ReportOptions(baseline=baseline, variants=variants, seq_lens=ns, pass_name=pass_option(pass_name))
        report = build_run_report(run_dir, options)
    warn(report.run.warnings)
    if as_json:
        from attnbench.report.json import report_payload

        print_json(report_payload(report))
    elif csv == "-":
        report.frame.to_csv(sys.stdout, index=False, columns=csv_columns(report.frame))
    else:
        from attnbench.report.terminal import terminal_report

        for item in terminal_report(report):
            out.print(item, highlight=False)
    with user_errors():
        write_files(report, ReportFiles(csv=Path(csv) if csv not in (None, "-") else None, markdown=markdown,
                                        plot=plot, plot_tradeoff=plot_tradeoff, html=html,
                                        plot_decode=plot_decode))
    if strict_exit(report.verdict, strict):
        raise typer.Exit(EXIT_UNRELIABLE)


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
                                                      "\\[default: the suite's baseline, else softmax].",
                                                 metavar="VARIANT", show_default=False)] = None,
    pass_name: Annotated[str | None, typer.Option("--pass", metavar="PASS", help=f"Only this pass: "
                                                  f"{PASS_NAMES_HELP} \\[default: all measured].",
                                                  show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison rows as JSON on stdout.")] = False,
    html: Annotated[Path | None, typer.Option("--html", metavar="FILE", help="Write the comparison as one "
                                              "self-contained HTML page (with one run: its whole report). Needs "
                                              "the html extra.", show_default=False)] = None,
) -> None:
    """One run: each variant against a baseline. Two runs: RUN_B against RUN_A, case by case.

    With one run: each variant's speed-up and memory ratio against a baseline,
    laid out like Long Range Arena's Table 2 (rows variants, columns N, cells
    "steps/s (speed-up)").

    With RUN_B: per case and pass the ratio of visit medians B/A, a test with
    the visit (one case in one round) as the unit, beyond the drift all cases
    share and the minimum effect, and marks as asv prints them: + slower,
    - faster, ~ no change, ? too few rounds, x failed or missing; the two runs'
    calibrations side by side. With --fail-above the exit
    code is 1 on a significant slowdown past the ratio, and also when a case
    measured in RUN_A is missing or failed in RUN_B (a gate must not pass on
    what it could not compare).

    Example: [bold]attnbench compare results/20260101-120000-quick --baseline softmax[/]
    Example: [bold]attnbench compare results/before results/after --fail-above 1.10[/]
    Example: [bold]attnbench compare results/before results/after --html compare.html[/]
    """
    with user_errors():
        only_pass = pass_option(pass_name)
        if run_b is not None:
            if baseline is not None:
                raise AttnbenchError("--baseline applies to one run (each variant against it); comparing "
                                     "RUN_B against RUN_A has no baseline: drop --baseline")
        elif fail_above is not None:
            raise AttnbenchError("--fail-above needs two runs: compare RUN_A RUN_B --fail-above RATIO")
        check_outputs(None, None, as_json, html=html)
    if run_b is not None:
        return print_two_runs(run_dir, run_b, only_pass, fail_above, min_effect, as_json, html)
    print_baseline_comparison(run_dir, baseline, only_pass, as_json, html)


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
    from attnbench.store.merge import merge_runs

    with user_errors():
        summary = merge_runs(parts, out_dir, command=list(sys.argv))
    warn(summary.warnings)
    out.print(f"merged {summary.parts} runs, {len(summary.records)} cases -> {summary.run_dir}"
              + ("" if summary.complete else " (incomplete)"), highlight=False)


@app.command("list")
def list_variants(
    names: Annotated[list[str] | None, typer.Argument(
        metavar="NAME", help="Show these variants in full: a registered name, or an import path "
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

    from attnbench.report.catalog import parameter_rows, variant_detail, variants_table
    from attnbench.variants import variant_info, variant_names

    with user_errors():
        infos = [variant_info(name) for name in names or []]
    if as_json:
        shown = infos or [variant_info(n) for n in variant_names()]
        print_json({"variants": [{**asdict(i), "parameters": parameter_rows(i.name)} for i in shown]})
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
    suite_path: Annotated[Path, typer.Argument(metavar="SUITE", help="The suite file (YAML) to check.",
                                               show_default=False)],
    quick: Annotated[bool, typer.Option("--quick", help="Check the suite's quick: setting.")] = False,
    runs_dir: Annotated[Path, typer.Option("--runs", metavar="DIR", help="Where earlier runs are, for the "
                                           "time estimate.")] = Path("results"),
) -> None:
    """Check a suite and run nothing: every error with its line, then what would run.

    Example: [bold]attnbench validate suites/quick.yaml[/]
    """
    from attnbench.bench.skip import device_unavailable, memory_skip_reason
    from attnbench.store.results import estimate_from_runs
    from attnbench.suite import load as suite_mod

    with user_errors():
        suite = suite_mod.load(suite_path, quick=quick)
    if quick and "quick" not in suite.raw:
        warn([f"{suite_path} has no quick: section; --quick checks (and runs) the full suite"])
    cases = suite.cases()
    if suite.refusals:
        warn(suite.refused())
    too_big = [(c, memory_skip_reason(c)) for c in cases if c.device == "cpu" and c.round == 0]
    too_big = [(c, why) for c, why in too_big if why]
    if too_big:
        warn([f"{len(too_big)} case(s) would not fit in this machine's free memory and would be skipped:\n  "
              + "\n  ".join(f"{c.label} N={c.seq_len} H={c.heads}: {why.removeprefix('skipped: ')}"
                             for c, why in too_big[:10])
              + (f"\n  ... and {len(too_big) - 10} more" if len(too_big) > 10 else "")])
    for device in dict.fromkeys(c.device for c in cases):
        reason = device_unavailable(device)
        if reason:  # a suite for another machine may still be valid
            warn([f"{reason}: its {sum(c.device == device for c in cases)} case(s) on {device} would be "
                  "skipped here"])
    variants = len(suite.variants)
    quality = ""
    if suite.quality is not None:
        from attnbench.quality.plan import quality_tasks
        from attnbench.suite.quality import quality_variants

        tasks = quality_tasks(suite.quality, quality_variants(suite.variants))
        kinds = [t.kind for t in tasks]
        quality = f", quality: {kinds.count('approx')} approx + {kinds.count('mqar')} mqar measurements"
    rounds = suite.timing.rounds
    out.print(f"{suite_path}: ok — {variants} variant{'s' * (variants != 1)}, {count_of(len(cases), 'case')}, "
              f"{count_of(sum(len(c.passes) for c in cases), 'timed pass', 'timed passes')}, "
              f"{count_of(rounds, 'round')} ({count_of(len(cases) * rounds, 'visit')}){quality}", highlight=False)
    estimate = estimate_from_runs(runs_dir, suite.name, [c.case_id for c in cases], rounds)
    if estimate is not None:
        seconds, known, run_id = estimate
        share = "" if known == len(cases) else f" for the {known} of its cases measured there"
        out.print(f"estimated time: about {duration_text(seconds)}{share} (from {run_id})", highlight=False)


@app.command()
def runs(
    root: Annotated[Path, typer.Argument(metavar="DIR", help="Where the runs are.")] = Path("results"),
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The runs in DIR: suite, date, status, cases done, machine.

    Example: [bold]attnbench runs results[/]
    """
    from attnbench.report.terminal import runs_table
    from attnbench.store.results import run_summaries

    rows = run_summaries(root)
    if as_json:
        print_json({"runs": rows})
        return
    if not rows:
        with user_errors():
            raise AttnbenchError(f"{root}: no runs there (a run is a directory with a run.json)")
    table = runs_table(rows, root)
    out.print(table)


@app.command("help")
def help_command(
    ctx: typer.Context,
    command: Annotated[str | None, typer.Argument(metavar="COMMAND", help="A command, e.g. run.",
                                                  show_default=False)] = None,
) -> None:
    """The help of attnbench, or of one COMMAND (as COMMAND --help).

    Example: [bold]attnbench help run[/]
    """
    root = ctx.parent
    assert root is not None  # a subcommand always has its group's context
    if command is None:
        typer.echo(root.get_help(), nl=False)
        return
    sub = root.command.get_command(root, command)  # type: ignore[attr-defined]
    if sub is None:
        from attnbench.errors import did_you_mean

        names = root.command.list_commands(root)  # type: ignore[attr-defined]
        with user_errors():
            raise AttnbenchError(f"no command {command!r}.{did_you_mean(command, names)} Commands: "
                                 f"{', '.join(names)}")
    typer.echo(sub.get_help(typer.Context(sub, info_name=command, parent=root)), nl=False)


@app.command()
def schema() -> None:
    """Print the JSON Schema (draft 2020-12) of suite files, for editors: save it
    and point a YAML language server at it with a first line
    [bold]# yaml-language-server: $schema=suite.schema.json[/]. The package ships
    the same file as attnbench/data/suite.schema.json.

    Example: [bold]attnbench schema > suite.schema.json[/]
    """
    from attnbench.suite.schema import schema_text

    sys.stdout.write(schema_text())


@app.command()
def env(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """What this machine offers (Python, torch, CUDA, GPUs, CPU, SDPA backends)
    and what would make timings noisy.

    Example: [bold]attnbench env --json[/]
    """
    from attnbench.bench.environment import collect_environment, environment_rows

    data = collect_environment()
    if as_json:
        print_json({"environment": data})
        return
    from rich.table import Table

    table = Table(title="environment", show_header=False)
    table.add_column("key", no_wrap=True, style="bold")
    table.add_column("value")
    for key, value in environment_rows(data):
        table.add_row(key, value)
    out.print(table)
    warn(data["warnings"])


"""Rendering results: rich tables for the terminal, markdown, CSV; the published
table beside the measured one; the comparison of two runs."""

from __future__ import annotations

import math

import pandas as pd
from rich.table import Table

from attnbench.analysis.agreement import (
    agreement_interval,
    alternative_choices,
    published_correlation,
    published_side_by_side,
)
from attnbench.analysis.baseline import (
    SETTING,
    default_baseline,
    describe_setting,
    label_order,
    scaling_summary,
    settings_groups,
    table_groups,
    with_baseline,
)
from attnbench.errors import DataError
from attnbench.model import PASSES, Status
from attnbench.report.quality import quality_tables
from attnbench.report.roofline import roofline_tables, run_notes
from attnbench.store.published import load_published

STATUS_SHORT = {s: ("OOM" if s == Status.OOM else s.value) for s in Status if s != Status.OK}
NOISY_MARK = "~"
PASS_SHORT = {"forward": "fwd", "backward": "bwd", "forward_backward": "f+b"}


def fmt_ms(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_mib(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


EMPTY = "-"  # the one mark of a cell with nothing to show


def cell_time(row: pd.Series | None) -> str:
    if row is None:
        return EMPTY
    if row["status"] != Status.OK:
        return STATUS_SHORT.get(row["status"], row["status"])
    return fmt_ms(row["median_ms"]) + (NOISY_MARK if row["noisy"] else "")


def lookup_rows(group: pd.DataFrame) -> dict[tuple, pd.Series]:
    return {(r["label"], r["heads"], r["seq_len"], r["pass"]): pd.Series(r)
            for r in group.to_dict("records")}


def _setting_title(setting: dict, several: bool) -> str:
    """The setting in a table's title, only when the run has several (else the header says it)."""
    return f" — {describe_setting(setting)}" if several else ""


def run_legend(frame: pd.DataFrame) -> str:
    """What a cell of ``run_tables`` holds, said once under them."""
    shown = measured_passes(frame)
    return (f"each cell: median ms of {', '.join(PASS_SHORT[p] for p in shown)} (a line each), then the peak "
            f"MiB; {NOISY_MARK} noisy (IQR/median > 10%)")


def run_tables(frame: pd.DataFrame, title: str = "") -> list[Table]:
    """The table printed after a run: rows variant × heads, columns N; each
    cell the median time (ms) of every measured pass, one line each, and the
    peak memory (MiB) of the largest pass (``run_legend`` says so)."""
    tables = []
    groups = settings_groups(frame)
    for setting, group in groups:
        lookup = lookup_rows(group)
        shown = measured_passes(group)
        ns = sorted(set(group["seq_len"]))
        table = Table(title=f"{title}median ms, peak MiB{_setting_title(setting, len(groups) > 1)}")
        table.add_column("variant", no_wrap=True, style="bold")
        table.add_column("heads", justify="right")
        for n in ns:
            table.add_column(f"N={n}", justify="right")
        for label in label_order(group):
            for heads in sorted(set(group[group["label"] == label]["heads"])):
                cells = []
                for n in ns:
                    rows = [lookup.get((label, heads, n, p)) for p in shown]
                    if all(r is None for r in rows):
                        cells.append(EMPTY)
                        continue
                    times = "\n".join(cell_time(r) for r in rows)
                    mems = [r["peak_mem_mib"] for r in rows if r is not None and r["status"] == Status.OK
                            and r["peak_mem_mib"] is not None and not pd.isna(r["peak_mem_mib"])]
                    cells.append(times + (f"\n{fmt_mib(max(mems))}" if mems else ""))
                table.add_row(label, str(heads), *cells)
        tables.append(table)
    return tables


def relative_cell(row: pd.Series | None, kind: str) -> str:
    """LRA Table 2 style: 'steps/s (speed-up x)' or 'MiB (ratio x)'."""
    if row is None:
        return EMPTY
    if row["status"] != Status.OK:
        return STATUS_SHORT.get(row["status"], row["status"])
    noisy = NOISY_MARK if row["noisy"] and kind == "speed" else ""
    if kind == "speed":
        rate = 1e3 / row["median_ms"]
        value = f"{rate:,.1f}" if rate < 1000 else f"{rate:,.0f}"
        ratio, low, high = row.get("speedup"), row.get("speedup_low"), row.get("speedup_high")
        if row.get("speedup_method") != "t-rounds":  # one round: the samples' interval ignores drift; not shown
            low = high = None
    else:
        value = fmt_mib(row["peak_mem_mib"])
        ratio, low, high = row.get("mem_ratio"), row.get("mem_ratio_low"), row.get("mem_ratio_high")
    if ratio is None or pd.isna(ratio):
        return value + noisy
    return f"{value}{noisy} ({_ratio(ratio)}{_interval(ratio, low, high)})"


def _interval(ratio: float, low: float | None, high: float | None) -> str:
    """`` [17.9–19.0]`` after a ratio, in its precision; nothing when there is no
    interval or it is the ratio itself (memory on CPU repeats exactly)."""
    if low is None or high is None or pd.isna(low) or pd.isna(high) or low == high:
        return ""
    digits = _ratio(ratio).rstrip("x")
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    return f" [{low:.{decimals}f}–{high:.{decimals}f}]"


RELATIVE_KINDS = (("speed", "steps/s (speed-up)"), ("memory", "peak MiB (ratio)"))


def relative_rows(data: pd.DataFrame, pass_name: str):  # noqa: ANN201 - a generator
    """Per setting and head count of ``data`` (already ``with_baseline``):
    (setting, heads, ns, {kind: rows of [label, cell per N]}) for each RELATIVE_KINDS."""
    for setting, heads, sub in table_groups(data):
        lookup = lookup_rows(sub)
        ns = sorted(set(sub["seq_len"]))
        yield setting, heads, ns, {
            kind: [[label, *[relative_cell(lookup.get((label, heads, n, pass_name)), kind) for n in ns]]
                   for label in label_order(sub)]
            for kind, _ in RELATIVE_KINDS}


def n_table(title: str, labels: list[str], ns: list[int], rows: list[list[str]],
            caption: str | None = None) -> Table:
    """Rows of ``labels`` (the first bold), then one right-aligned column per N."""
    table = Table(title=title, caption=caption)
    for i, label in enumerate(labels):
        table.add_column(label, no_wrap=True, style=None if i else "bold")
    for n in ns:
        table.add_column(f"N={n}", justify="right")
    for row in rows:
        table.add_row(*row)
    return table


RELATIVE_LEGEND = "speed-up = baseline time / time; memory ratio = peak / baseline peak"
PAIRED_LEGEND = ("; paired within rounds: geometric mean [95% interval] over this run's rounds "
                 "(the drift between runs is not in it)")


def relative_legend(records: list[dict]) -> str:
    """RELATIVE_LEGEND, and what the brackets are where cases have rounds to pair."""
    paired = any(len(r.get("rounds") or []) >= 2 for r in records)
    return RELATIVE_LEGEND + (PAIRED_LEGEND if paired else "")


def comparison_tables(frame: pd.DataFrame, baseline: str, pass_name: str,
                      records: list[dict] | None = None) -> list[Table]:
    """Speed and memory against ``baseline`` for one pass, one pair of tables per
    setting and head count: rows variants, columns N (RELATIVE_LEGEND, said once
    by the caller, explains the ratios). With the run's case ``records``, the
    ratios are paired by round, with their 95% intervals."""
    data = with_baseline(frame[frame["pass"] == pass_name], baseline, records)
    groups = list(relative_rows(data, pass_name))
    several_settings = len({describe_setting(g[0]) for g in groups}) > 1
    several_heads = len({g[1] for g in groups}) > 1
    return [n_table(f"{pass_name}: {what} vs {baseline}" + (f", {heads} heads" if several_heads else "")
                    + _setting_title(setting, several_settings), ["variant"], ns, by_kind[kind])
            for setting, heads, ns, by_kind in groups
            for kind, what in RELATIVE_KINDS]


FAILURE_COLUMNS = ("status", "variant", "N", "heads", "reason")


def failure_rows(frame: pd.DataFrame) -> list[list[str]]:
    """One row per case that did not succeed (FAILURE_COLUMNS)."""
    bad = frame[frame["status"] != Status.OK].drop_duplicates(subset=["case_id", "status"])
    return [[STATUS_SHORT.get(r.status, r.status), r.label, str(r.seq_len), str(r.heads), str(r.error or "")]
            for r in bad.itertuples(index=False)]


def failures_table(frame: pd.DataFrame) -> Table | None:
    rows = failure_rows(frame)
    if not rows:
        return None
    table = Table(title="cases that did not succeed")
    for col in FAILURE_COLUMNS:
        table.add_column(col, no_wrap=col != "reason", justify="right" if col in ("N", "heads") else "left")
    for row in rows:
        table.add_row(*row)
    return table


# --- the full report: scaling, published table, agreement -----------------------

def measured_passes(frame: pd.DataFrame) -> list[str]:
    """Passes shown in a report: every pass the run measured, in PASSES order."""
    return [p for p in PASSES if p in set(frame["pass"])]


def _fmt_exp(value: float) -> str:
    return EMPTY if value is None or pd.isna(value) else f"{value:.2f}"


def _fmt_r2(value: float) -> str:
    return EMPTY if value is None or pd.isna(value) else f"{value:.3f}"


SCALING_COLUMNS = ("variant", "heads", "N's", "time k", "R²", "k top", "mem k", "R²", "x-over")
SCALING_LEGEND = ("time ∝ N^k and memory ∝ N^k, fitted on log-log; R² from three N up; k top: fitted on "
                  "the larger half of the N (small N carry fixed overheads); N's: how many N were fitted; "
                  "x-over: the N where the variant becomes faster than the baseline and stays faster, "
                  "interpolated in log-log (< below the N measured, > never within them; ≈ where the "
                  "fitted power laws would cross)")


def scaling_table(summary: pd.DataFrame, pass_name: str, baseline: str | None) -> Table:
    """Rich table of ``analysis.scaling_summary``: exponents of time and memory in
    N with R², and the crossover N against the baseline (SCALING_LEGEND, said
    once by the caller, explains the columns)."""
    table = Table(title=f"{pass_name}: scaling in N, crossover vs {baseline or EMPTY}")
    multi = summary[SETTING].drop_duplicates().shape[0] > 1 if not summary.empty else False
    if multi:
        table.add_column("setting", no_wrap=True)
    for col in SCALING_COLUMNS:
        table.add_column(col, justify="left" if col in ("variant", "x-over") else "right",
                         no_wrap=col != "x-over", style="bold" if col == "variant" else None)
    for r, cells in zip(summary.to_dict("records"), scaling_rows(summary), strict=True):
        table.add_row(*([describe_setting(r)] if multi else []), *cells)
    return table


def short_crossover(text: str) -> str:
    """``analysis.Crossover``'s text, short enough for a narrow column:
    ``< 128`` (below the range), ``> 4,096`` (never in it), ``> 4,096, ≈9,000 fit``."""
    import re

    below = re.fullmatch(r"below the range \(< ([\d,]+)\)", text)
    if below:
        return f"< {below.group(1)}"
    never = re.fullmatch(r"never \(≤ ([\d,]+)\)(?:, ≈([\d,]+) extrapolated)?", text)
    if never:
        return f"> {never.group(1)}" + (f", ≈{never.group(2)} fit" if never.group(2) else "")
    return text


def scaling_rows(summary: pd.DataFrame) -> list[list[str]]:
    """The cells of ``analysis.scaling_summary`` per row, in SCALING_COLUMNS order."""
    return [[r["label"], str(r["heads"]), str(r["points"]), _fmt_exp(r["time_exponent"]), _fmt_r2(r["time_r2"]),
             _fmt_exp(r["time_exponent_top"]), _fmt_exp(r["mem_exponent"]), _fmt_r2(r["mem_r2"]),
             short_crossover(r["crossover"])]
            for r in summary.to_dict("records")]



def published_rows(published) -> tuple[list[str], list[int], dict[tuple[str, int], dict]]:
    frame = published.frame
    ns = sorted(set(int(n) for n in frame["seq_len"]))
    cells = {(r["model"], int(r["seq_len"])): r for r in frame.to_dict("records")}
    return published.models(), ns, cells


def published_cells(published) -> tuple[list[int], dict[str, list[list[str]]], list[str]]:
    """The published table as printed: its N, rows [model, variant, cell per N] for
    "speed" and "memory", and the footnotes."""
    models, ns, cells = published_rows(published)
    base_model = str(published.meta.get("baseline_model", ""))
    rows: dict[str, list[list[str]]] = {"speed": [], "memory": []}
    for model in models:
        variant = next((r["variant"] for (m, _), r in cells.items() if m == model), "")
        found = [cells.get((model, n)) for n in ns]
        rows["speed"].append([model, variant, *[_pub_speed(r, base_model) for r in found]])
        rows["memory"].append([model, variant, *["" if r is None or pd.isna(r.get("memory_gb"))
                                                 else f"{r['memory_gb']:.2f}" for r in found]])
    notes = [f"{m} at N={n}: {r['note']}" for (m, n), r in cells.items() if r.get("note")]
    return ns, rows, notes


def _pub_speed(r: dict | None, baseline_model: str) -> str:
    if r is None or pd.isna(r.get("steps_per_s")):
        return ""
    value = f"{r['steps_per_s']:.1f}"
    if r["model"] == baseline_model:
        return value
    printed = r.get("printed_speedup")
    rel = printed if printed is not None and not pd.isna(printed) else r.get("relative_speed")
    mark = " †" if r.get("note") else ""
    return f"{value} ({rel:.1f}x){mark}"


def published_tables(published) -> list[Table]:
    """The published table as printed in its paper: steps/s (relative speed) and
    peak memory, rows models (with the attnbench variant), columns N."""
    ns, rows, notes = published_cells(published)
    caption = published.citation + (" † " + "; ".join(notes) if notes else "")
    return [n_table(f"published: {published.title} — {what}, {published.pass_name}", ["model", "variant"],
                    ns, rows[kind], caption=caption if kind == "memory" else None)
            for kind, what in (("speed", "steps/s (speed-up)"), ("memory", "peak memory (GB)"))]


def _ratio(value: float) -> str:
    if value is None or pd.isna(value):
        return "-"
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x"


def side_by_side_rows(both: pd.DataFrame, kind: str) -> tuple[list[int], list[list[str]]]:
    """Rows model (label), cells "measured x / published x" per N."""
    ns = sorted(set(both["seq_len"]))
    measured, published = (("measured_speedup", "published_speedup") if kind == "speed"
                           else ("measured_mem_ratio", "published_mem_ratio"))
    cells = {(r["model"], r["seq_len"]): r for r in both.to_dict("records")}
    rows = []
    for model in dict.fromkeys(both["model"]):
        label = both[both["model"] == model]["label"].iloc[0]
        row = [f"{model} ({label})"]
        for n in ns:
            r = cells.get((model, n))
            row.append("" if r is None else f"{_ratio(r[measured])} / {_ratio(r[published])}")
        rows.append(row)
    return ns, rows


#: the side-by-side tables: measured relative figures over the published ones
SIDE_BY_SIDE_KINDS = (("speed", "speed-up"), ("memory", "memory ratio"))


def side_by_side_tables(both: pd.DataFrame, published) -> list[Table]:
    """Measured against published, relative to each side's baseline model."""
    if both.empty:
        return []
    baseline = published.meta.get("baseline_model", "the baseline")
    return [n_table(f"{what}, measured / {published.name} ({published.pass_name}), against {baseline}",
                    ["model (variant)"], *side_by_side_rows(both, kind))
            for kind, what in SIDE_BY_SIDE_KINDS]


def agreement_text(agreement, records: list[dict] | None = None) -> str:
    """One line on the rank agreement between measured and published relative
    speeds; with the run's records, its 95% interval over rounds."""
    if agreement is None:
        return "rank agreement with the published table: not enough models in common to compute it"
    rho = "undefined" if pd.isna(agreement.rho) else f"{agreement.rho:+.2f}"
    if records is not None and not pd.isna(agreement.rho):
        interval = agreement_interval(agreement, records)
        if interval.has_interval:
            rho += f" [{interval.low:+.2f} to {interval.high:+.2f}, 95% over {interval.rounds} rounds]"
    models = ", ".join(agreement.pairs["label"])
    return (f"Spearman rank correlation of relative speed at N={agreement.seq_len} ({agreement.pass_name}) "
            f"with {agreement.table}: ρ = {rho} over {agreement.models} models ({models})")


def agreement_lines(frame: pd.DataFrame, table, both: pd.DataFrame | None = None,
                    records: list[dict] | None = None) -> list[str]:
    """The rank agreement, then the same with each other label of a model the run
    measured twice (LRA's Reformer as LRA ran it and at the paper's defaults)."""
    lines = [agreement_text(published_correlation(frame, table, both=both), records)]
    for chosen in alternative_choices(frame, table):
        which = ", ".join(f"{label} as {variant}" for variant, label in chosen.items())
        lines.append(f"with {which}: " + agreement_text(published_correlation(frame, table, chosen=chosen), records))
    return lines


def report_sections(run, baseline: str | None, frame: pd.DataFrame) -> list:
    """Everything ``attnbench report`` prints after the run and comparison tables:
    per pass the scaling exponents and crossovers; the published table (when the
    suite names one) with the rank correlation of relative speeds."""
    out: list = []
    if frame.empty:
        return out
    for pass_name in measured_passes(frame):
        out.append(scaling_table(scaling_summary(frame, baseline, pass_name), pass_name, baseline))
    out.append(SCALING_LEGEND)
    name = run.meta.get("published")
    if name:
        try:
            published = load_published(str(name))
        except DataError as exc:
            out.append(f"[yellow]warning:[/] {exc}")
            return out
        both = published_side_by_side(frame, published)
        out.extend(published_tables(published))
        out.extend(side_by_side_tables(both, published))
        out.extend(agreement_lines(frame, published, both, run.records))
    return out


def terminal_report(run, frame: pd.DataFrame, baseline: str | None) -> list:
    """``attnbench report``, in order: the run's tables; against the baseline the
    speed and memory tables of the reported passes (when there is more than one
    variant); scaling, crossovers and the published table; the failed cases."""
    out: list = [report_header(run, frame), *run_tables(frame), run_legend(frame)]
    if baseline is not None and len(set(frame["label"])) > 1:
        for pass_name in measured_passes(frame):
            out.extend(comparison_tables(frame, baseline, pass_name, run.records))
        out.append(relative_legend(run.records))
    out.extend(roofline_tables(frame, run.meta))
    out.extend(run_notes(run.meta, run.records))
    out.extend(report_sections(run, baseline, frame))
    out.extend(quality_tables(run.quality))
    failed = failures_table(frame)
    if failed is not None:
        out.append(failed)
        note = traceback_note(run.records, run.path)
        if note:
            out.append(note)
    return out


def report_header(run, frame: pd.DataFrame) -> str:
    """The report's first lines: run id, suite, date, machine, and the setting
    when there is one (the tables' titles then leave it out)."""
    meta, env = run.meta, run.meta.get("environment") or {}
    gpus = env.get("gpus") or []
    gpu = ", ".join(g.get("name", "?") if isinstance(g, dict) else str(g) for g in gpus) if gpus else ""
    cores = env.get("cpu_cores_logical")
    machine = ", ".join(x for x in (gpu, env.get("cpu_model"), f"{cores} cores" if cores else "",
                                    f"torch {env['torch']}" if env.get("torch") else "") if x)
    started = str(meta.get("started_at") or "")[:16].replace("T", " ")
    lines = [f"run {run.run_id} · suite {meta.get('suite_name') or EMPTY} · {started or EMPTY} · "
             f"{meta.get('status') or EMPTY}", f"machine: {machine or EMPTY}"]
    groups = settings_groups(frame)
    if len(groups) == 1:
        lines.append(f"setting: {describe_setting(groups[0][0])}")
    return "\n".join(lines)


def report_baseline(frame: pd.DataFrame, run, chosen: str | None) -> str | None:
    """The variant a report compares against: the one asked for (which must be
    in the run), else the suite's, else softmax."""
    if chosen is not None and not frame.empty and chosen not in set(frame["label"]):
        raise DataError(f"--baseline {chosen!r} is not in this run; its variants: {', '.join(label_order(frame))}")
    return default_baseline(frame, chosen or run.meta.get("baseline"))


def traceback_note(records: list[dict], run_dir) -> str | None:
    """Where the full tracebacks are, when some failed case kept one (custom layers do)."""
    failed = [r for r in records if r.get("status") != Status.OK]
    if any(r.get("traceback") or any(p.get("traceback") for p in r.get("passes", [])) for r in failed):
        return f"full tracebacks of the failed cases: {run_dir}/cases.jsonl (key 'traceback')"
    return None


def nothing_measured(run, frame: pd.DataFrame) -> str | None:
    """Why a run (or its rows ``frame``) has nothing to report, and how to go on; None when it has."""
    if not frame.empty and (frame["status"] == Status.OK).any():
        return None
    status = run.meta.get("status", "unknown")
    if not run.records:
        what = "no case was measured"
    elif frame.empty:
        what = "no case matches the filters given"
    else:
        what = f"no case was measured: all {len(run.records)} failed or were skipped"
    message = f"{run.path}: {what} (run.json: status {status})"
    suite_path = run.meta.get("suite_path")
    if suite_path and status in ("interrupted", "running") and frame.empty:
        message += f"; resume it with: attnbench run {suite_path} --resume {run.path}"
    return message


def runs_table(rows: list[dict], root) -> Table:
    """``attnbench runs``: one row per run directory (``results.run_summaries``)."""
    from pathlib import Path

    table = Table(title=f"runs in {root}", caption="attnbench report RUN_DIR: one run's tables",
                  caption_justify="left")
    for col in ("run", "suite", "started", "status", "cases", "machine"):
        table.add_column(col, no_wrap=col in ("run", "started"), style="bold" if col == "run" else None)
    for r in rows:
        cases = f"{r['cases_done']}/{r['cases_total']}" if r["cases_total"] is not None else "-"
        started = str(r["started_at"] or "-")[:16].replace("T", " ")
        table.add_row(Path(r["run_dir"]).name, r["suite"] or "-", started, r["status"] or "-", cases,
                      r["machine"] or "-")
    return table

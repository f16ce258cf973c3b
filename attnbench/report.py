"""Rendering results: rich tables for the terminal, markdown, CSV; the published
table beside the measured one; the comparison of two runs."""

from __future__ import annotations

import math

import pandas as pd
from rich.table import Table

from attnbench.analysis import (
    SETTING,
    agreement_interval,
    default_baseline,
    describe_setting,
    label_order,
    load_published,
    published_correlation,
    published_side_by_side,
    scaling_summary,
    settings_groups,
    table_groups,
    with_baseline,
)
from attnbench.errors import DataError
from attnbench.model import PASSES, REPORTED_PASSES, Status
from attnbench.paired import MIN_EFFECT, CommonShift
from attnbench.quality.tables import quality_tables
from attnbench.roofline import roofline_tables, run_notes

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


def cell_time(row: pd.Series | None) -> str:
    if row is None:
        return "-"
    if row["status"] != Status.OK:
        return STATUS_SHORT.get(row["status"], row["status"])
    return fmt_ms(row["median_ms"]) + (NOISY_MARK if row["noisy"] else "")


def lookup_rows(group: pd.DataFrame) -> dict[tuple, pd.Series]:
    return {(r["label"], r["heads"], r["seq_len"], r["pass"]): pd.Series(r)
            for r in group.to_dict("records")}


def run_tables(frame: pd.DataFrame, title: str = "") -> list[Table]:
    """The table printed after a run: rows variant × heads, columns N; each
    cell the median forward and forward+backward time (ms) and the peak memory
    (MiB) of the largest pass."""
    tables = []
    for setting, group in settings_groups(frame):
        lookup = lookup_rows(group)
        shown = measured_passes(group)
        ns = sorted(set(group["seq_len"]))
        table = Table(title=f"{title}{describe_setting(setting)}",
                      caption=f"median ms ({' / '.join(PASS_SHORT[p] for p in shown)}) · peak MiB; "
                              f"{NOISY_MARK} = noisy (IQR/median > 10%)")
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
                        cells.append("")
                        continue
                    times = " / ".join(cell_time(r) for r in rows)
                    mems = [r["peak_mem_mib"] for r in rows if r is not None and r["status"] == Status.OK
                            and r["peak_mem_mib"] is not None and not pd.isna(r["peak_mem_mib"])]
                    cells.append(times + (f"\n{fmt_mib(max(mems))} MiB" if mems else ""))
                table.add_row(label, str(heads), *cells)
        tables.append(table)
    return tables


def relative_cell(row: pd.Series | None, kind: str) -> str:
    """LRA Table 2 style: 'steps/s (speed-up x)' or 'MiB (ratio x)'."""
    if row is None:
        return ""
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


def comparison_tables(frame: pd.DataFrame, baseline: str, pass_name: str,
                      records: list[dict] | None = None) -> list[Table]:
    """Speed and memory against ``baseline`` for one pass, one pair of tables per
    setting and head count: rows variants, columns N. With the run's case
    ``records``, the ratios are paired by round, with their 95% intervals."""
    data = with_baseline(frame[frame["pass"] == pass_name], baseline, records)
    paired = records is not None and (data["speedup_method"] == "t-rounds").any()
    caption = ("speed-up = baseline time / time; memory ratio = peak / baseline peak"
               + ("; paired within rounds: geometric mean [95% interval] over rounds" if paired else ""))
    return [n_table(f"{pass_name}: {what} vs {baseline} — {describe_setting(setting)}, {heads} heads",
                    ["model"], ns, by_kind[kind], caption=caption)
            for setting, heads, ns, by_kind in relative_rows(data, pass_name)
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
    """Passes shown in a report: forward and forward_backward (the papers' inference
    and training), or whatever the run measured when it has neither."""
    present = [p for p in PASSES if p in set(frame["pass"])]
    shown = [p for p in present if p in REPORTED_PASSES]
    return shown or present


def _fmt_exp(value: float) -> str:
    return "-" if value is None or pd.isna(value) else f"{value:.2f}"


def _fmt_r2(value: float) -> str:
    return "-" if value is None or pd.isna(value) else f"{value:.3f}"


SCALING_COLUMNS = ("model", "heads", "N points", "time k", "R²", "k, upper half", "memory k", "R²", "crossover N")


def scaling_table(summary: pd.DataFrame, pass_name: str, baseline: str | None) -> Table:
    """Rich table of ``analysis.scaling_summary``: exponents of time and memory in
    N with R², and the crossover N against the baseline."""
    table = Table(title=f"{pass_name}: scaling in N (time ∝ N^k, fitted on log-log) and crossover vs "
                        f"{baseline or '-'}",
                  caption="R² shown from three N up; k, upper half: fitted on the larger half of the N only "
                          "(small N carry fixed overheads); crossover: the N where the variant becomes faster "
                          "than the baseline and stays faster, interpolated in log-log")
    multi = summary[SETTING].drop_duplicates().shape[0] > 1 if not summary.empty else False
    if multi:
        table.add_column("setting", no_wrap=True)
    for col in SCALING_COLUMNS:
        table.add_column(col, justify="left" if col in ("model", "crossover N") else "right",
                         no_wrap=col == "model", style="bold" if col == "model" else None)
    for r, cells in zip(summary.to_dict("records"), scaling_rows(summary), strict=True):
        table.add_row(*([describe_setting(r)] if multi else []), *cells)
    return table


def scaling_rows(summary: pd.DataFrame) -> list[list[str]]:
    """The cells of ``analysis.scaling_summary`` per row, in SCALING_COLUMNS order."""
    return [[r["label"], str(r["heads"]), str(r["points"]), _fmt_exp(r["time_exponent"]), _fmt_r2(r["time_r2"]),
             _fmt_exp(r["time_exponent_top"]), _fmt_exp(r["mem_exponent"]), _fmt_r2(r["mem_r2"]), r["crossover"]]
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


def report_sections(run, baseline: str | None, frame: pd.DataFrame) -> list:
    """Everything ``attnbench report`` prints after the run and comparison tables:
    per pass the scaling exponents and crossovers; the published table (when the
    suite names one) with the rank correlation of relative speeds."""
    out: list = []
    if frame.empty:
        return out
    for pass_name in measured_passes(frame):
        out.append(scaling_table(scaling_summary(frame, baseline, pass_name), pass_name, baseline))
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
        out.append(agreement_text(published_correlation(frame, published, both=both), run.records))
    return out


def terminal_report(run, frame: pd.DataFrame, baseline: str | None) -> list:
    """``attnbench report``, in order: the run's tables; against the baseline the
    speed and memory tables of the reported passes (when there is more than one
    variant); scaling, crossovers and the published table; the failed cases."""
    out: list = list(run_tables(frame))
    if baseline is not None and len(set(frame["label"])) > 1:
        for pass_name in [p for p in REPORTED_PASSES if p in set(frame["pass"])]:
            out.extend(comparison_tables(frame, baseline, pass_name, run.records))
    out.extend(roofline_tables(frame, run.meta))
    out.extend(run_notes(run.meta, run.records))
    out.extend(report_sections(run, baseline, frame))
    out.extend(quality_tables(run.quality))
    failed = failures_table(frame)
    if failed is not None:
        out.append(failed)
    return out


def report_baseline(frame: pd.DataFrame, run, chosen: str | None) -> str | None:
    """The variant a report compares against: the one asked for, else the suite's, else softmax."""
    return default_baseline(frame, chosen or run.meta.get("baseline"))


# --- two runs -------------------------------------------------------------------------

def compare_runs_tables(compared: pd.DataFrame, summary: pd.DataFrame, name_a: str, name_b: str,
                        only_changed: bool = False, min_effect: float = MIN_EFFECT,
                        shift: CommonShift | None = None) -> list:
    """asv-style: per case and pass the mark, the medians of A's and B's visits,
    their ratio, and the change beyond the runs' common drift with its 90%
    interval; the common shift; then per variant the geometric mean of the ratios."""
    table = Table(title=f"{name_b} against {name_a}: the middle visit's median (ms), B/A the geometric mean "
                        "over visits",
                  caption=f"+ slower, - faster: the 90% interval of the change (beyond the drift all cases share, "
                          f"up to {min_effect:.0%}) lies wholly beyond ±{min_effect:.0%}; ~ no change that large; "
                          "? too few rounds for a verdict (2 visits a side at least); x failed or missing")
    for col in ("", "model", "N", "heads", "pass", "visits", "A ms", "B ms", "B/A", "change [90%]"):
        table.add_column(col, justify="left" if col in ("", "model", "pass") else "right", no_wrap=True)
    styles = {"+": "red", "-": "green", "x": "yellow", "?": "yellow"}
    for r in compared.to_dict("records"):
        if only_changed and r["mark"] == "~":
            continue
        mark = r["mark"]
        if mark == "x":
            cells = [fmt_ms(r["median_a_ms"]), fmt_ms(r["median_b_ms"]), f"{r['status_a']} / {r['status_b']}", ""]
        else:
            change = "" if pd.isna(r["low"]) else (f"{r['relative'] - 1:+.1%} [{r['low'] - 1:+.1%}, "
                                                   f"{r['high'] - 1:+.1%}]")
            cells = [fmt_ms(r["median_a_ms"]), fmt_ms(r["median_b_ms"]), f"{r['ratio']:.3f}",
                     change or "too few rounds"]
        style = styles.get(mark)
        table.add_row(f"[{style}]{mark}[/]" if style else mark, r["label"], str(r["seq_len"]), str(r["heads"]),
                      PASS_SHORT.get(r["pass"], r["pass"]), f"{r['n_a']}/{r['n_b']}", *cells)
    out: list = [table, shift_text(shift, min_effect)]
    totals = Table(title="per variant: geometric mean of B/A over the cases measured in both runs")
    for col in ("model", "pass", "cases", "geomean B/A", "+", "-", "~", "?", "x"):
        totals.add_column(col, justify="left" if col in ("model", "pass") else "right", no_wrap=True)
    for r in summary.to_dict("records"):
        g = r["geomean_ratio"]
        totals.add_row(r["label"], PASS_SHORT.get(r["pass"], r["pass"]), str(r["cases"]),
                       "-" if pd.isna(g) else f"{g:.3f}", str(r["slower"]), str(r["faster"]), str(r["same"]),
                       str(r["undecided"]), str(r["failed"]))
    out.append(totals)
    return out


def shift_text(shift: CommonShift | None, min_effect: float = MIN_EFFECT) -> str:
    """One line on how much every case moved together between the two runs."""
    if shift is None:
        return ("common shift: too few cases in both runs to tell the machine's drift from a change "
                "(each case is judged as measured)")
    verdict = {"same": f"within ±{min_effect:.0%}: the machine's drift between runs, discounted from every case",
               "slower": "every case slower: a change under all of them (a library, the machine: see the "
                         "calibrations)",
               "faster": "every case faster: a change under all of them (a library, the machine: see the "
                         "calibrations)"}[shift.verdict]
    return (f"common shift over {shift.cases} cases: B/A = {shift.ratio:.3f} [{shift.low:.3f}–{shift.high:.3f}], "
            f"{verdict}; up to {min_effect:.0%} of it is discounted")

"""The cells of a report: how a figure is written (milliseconds, MiB, ratios
with their intervals, marks), and the rows of each table as text, shared by
the terminal and markdown renderings. Formatting only: every figure comes
from the report (``attnbench.report.build``)."""

from __future__ import annotations

import html
import math
import re

import pandas as pd

from attnbench.analysis.baseline import label_order, measured_passes, table_groups
from attnbench.analysis.verdict import Verdict
from attnbench.model import PASS_SHORT, Status
from attnbench.report.build import AgreementLine, PublishedSection, RunReport

STATUS_SHORT = {s: ("OOM" if s == Status.OOM else s.value) for s in Status if s != Status.OK}
NOISY_MARK = "~"


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
        if paired_differs(row):
            return f"{value}{noisy} ({ratio_text(ratio)}{PAIRED_MARK}{interval_text(ratio, low, high)})"
    else:
        value = fmt_mib(row["peak_mem_mib"])
        ratio, low, high = row.get("mem_ratio"), row.get("mem_ratio_low"), row.get("mem_ratio_high")
    if ratio is None or pd.isna(ratio):
        return value + noisy
    return f"{value}{noisy} ({ratio_text(ratio)}{interval_text(ratio, low, high)})"


def interval_text(ratio: float, low: float | None, high: float | None) -> str:
    """`` [17.9–19.0]`` after a ratio, in its precision; nothing when there is no
    interval or it is the ratio itself (memory on CPU repeats exactly)."""
    if low is None or high is None or pd.isna(low) or pd.isna(high) or low == high:
        return ""
    digits = ratio_text(ratio).rstrip("x")
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



def run_legend(frame: pd.DataFrame) -> str:
    """What a cell of the run's tables holds, said once under them."""
    shown = measured_passes(frame)
    return (f"each cell: median ms of {', '.join(PASS_SHORT[p] for p in shown)} (a line each), then the peak "
            f"MiB; {NOISY_MARK} noisy (IQR/median > 10%)")


RELATIVE_LEGEND = "speed-up = baseline time / time; memory ratio = peak / baseline peak"
# A paired speed-up further than this (in log) from the ratio of the medians
# shown beside it is marked: the medians mix moments the pairing keeps apart.
PAIRED_DIFFERS, PAIRED_MARK = math.log(1.10), "*"
PAIRED_LEGEND = ("; paired within rounds: geometric mean [95% interval] over this run's rounds "
                 "(the drift between runs is not in it)")


PAIRED_DIFFERS_LEGEND = (f"; {PAIRED_MARK} the paired estimate differs from the ratio of the medians shown "
                         "by over 10%: the medians mix rounds the pairing keeps apart")


def paired_differs(row: dict | pd.Series) -> bool:
    """Whether a row's paired speed-up is further than PAIRED_DIFFERS from the ratio of its medians."""
    ratio, medians = row.get("speedup"), row.get("speedup_medians")
    if ratio is None or medians is None or pd.isna(ratio) or pd.isna(medians) or ratio <= 0 or medians <= 0:
        return False
    return abs(math.log(ratio / medians)) > PAIRED_DIFFERS


def relative_legend(report: RunReport) -> str:
    """RELATIVE_LEGEND, what the brackets are where cases have rounds to pair,
    and what the mark of a paired estimate far from its medians' ratio means."""
    paired = any(len(r.get("rounds") or []) >= 2 for r in report.records)
    rows = report.relative
    marked = not rows.empty and "speedup_medians" in rows and any(paired_differs(r) for r in rows.to_dict("records"))
    return RELATIVE_LEGEND + (PAIRED_LEGEND if paired else "") + (PAIRED_DIFFERS_LEGEND if marked else "")



FAILURE_COLUMNS = ("status", "variant", "N", "heads", "reason")


def failure_rows(failed: pd.DataFrame) -> list[list[str]]:
    """One row per case that did not succeed (``RunReport.failed``), in FAILURE_COLUMNS."""
    bad = failed
    return [[STATUS_SHORT.get(r.status, r.status), r.label, str(r.seq_len), str(r.heads), str(r.error or "")]
            for r in bad.itertuples(index=False)]



def fmt_exponent(value: float) -> str:
    return EMPTY if value is None or pd.isna(value) else f"{value:.2f}"


def fmt_r2(value: float) -> str:
    return EMPTY if value is None or pd.isna(value) else f"{value:.3f}"


SCALING_COLUMNS = ("variant", "heads", "N's", "time k", "R²", "k top", "mem k", "R²", "x-over")
SCALING_LEGEND = ("time ∝ N^k and memory ∝ N^k, fitted on log-log; R² from three N up; k top: fitted on "
                  "the larger half of the N (small N carry fixed overheads); N's: how many N were fitted; "
                  "x-over: the N where the variant becomes faster than the baseline and stays faster, "
                  "interpolated in log-log (< below the N measured, > never within them; ≈ where the "
                  "fitted power laws would cross); poor: the times scatter about the power law (R² < 0.9 and "
                  "residuals over 10%), so no exponent or crossover is claimed")



def short_crossover(text: str) -> str:
    """``analysis.Crossover``'s text, short enough for a narrow column:
    ``< 128`` (below the range), ``> 4,096`` (never in it), ``> 4,096, ≈9,000 fit``."""
    below = re.fullmatch(r"below the range \(< ([\d,]+)\)", text)
    if below:
        return f"< {below.group(1)}"
    never = re.fullmatch(r"never \(≤ ([\d,]+)\)(?:, ≈([\d,]+) extrapolated)?", text)
    if never:
        return f"> {never.group(1)}" + (f", ≈{never.group(2)} fit" if never.group(2) else "")
    return text


POOR_FIT = "poor"  # a fit whose points scatter about the power law: no figure claimed


def scaling_rows(summary: pd.DataFrame) -> list[list[str]]:
    """The cells of ``analysis.scaling.scaling_summary`` per row, in SCALING_COLUMNS
    order; an exponent or crossover of a poor fit is written ``poor``."""
    def exponent(r: dict, key: str, poor: str) -> str:
        return POOR_FIT if r.get(poor) else fmt_exponent(r[key])

    return [[r["label"], str(r["heads"]), str(r["points"]), exponent(r, "time_exponent", "time_fit_poor"),
             fmt_r2(r["time_r2"]), exponent(r, "time_exponent_top", "time_fit_poor"),
             exponent(r, "mem_exponent", "mem_fit_poor"), fmt_r2(r["mem_r2"]),
             POOR_FIT if r.get("crossover_poor") else short_crossover(r["crossover"])]
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
        rows["speed"].append([model, variant, *[published_speed(r, base_model) for r in found]])
        rows["memory"].append([model, variant, *["" if r is None or pd.isna(r.get("memory_gb"))
                                                 else f"{r['memory_gb']:.2f}" for r in found]])
    notes = [f"{m} at N={n}: {r['note']}" for (m, n), r in cells.items() if r.get("note")]
    return ns, rows, notes


def published_speed(r: dict | None, baseline_model: str) -> str:
    if r is None or pd.isna(r.get("steps_per_s")):
        return ""
    value = f"{r['steps_per_s']:.1f}"
    if r["model"] == baseline_model:
        return value
    printed = r.get("printed_speedup")
    rel = printed if printed is not None and not pd.isna(printed) else r.get("relative_speed")
    mark = " †" if r.get("note") else ""
    return f"{value} ({rel:.1f}x){mark}"



def ratio_text(value: float) -> str:
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
            row.append("" if r is None else f"{ratio_text(r[measured])} / {ratio_text(r[published])}")
        rows.append(row)
    return ns, rows



#: the side-by-side tables: measured relative figures over the published ones
SIDE_BY_SIDE_KINDS = (("speed", "speed-up"), ("memory", "memory ratio"))



def agreement_text(line: AgreementLine) -> str:
    """One line on the rank agreement between measured and published relative
    speeds, with its 95% interval over the run's rounds where it has one."""
    prefix = ""
    if line.chosen:
        prefix = f"with {', '.join(f'{label} as {variant}' for variant, label in line.chosen.items())}: "
    agreement = line.agreement
    if agreement is None:
        return prefix + "rank agreement with the published table: not enough models in common to compute it"
    rho = "undefined" if pd.isna(agreement.rho) else f"{agreement.rho:+.2f}"
    interval = line.interval
    if interval is not None and interval.has_interval:
        rho += f" [{interval.low:+.2f} to {interval.high:+.2f}, 95% over {interval.rounds} rounds]"
    models = ", ".join(agreement.pairs["label"])
    return (f"{prefix}Spearman rank correlation of relative speed at N={agreement.seq_len} ({agreement.pass_name}) "
            f"with {agreement.table}: ρ = {rho} over {agreement.models} models ({models})")


def agreement_lines(section: PublishedSection) -> list[str]:
    """The rank agreement, then the same with each other label of a model the run
    measured twice (LRA's Reformer as LRA ran it and at the paper's defaults)."""
    return [agreement_text(line) for line in section.agreements]


VERDICT_STYLES = {"trustworthy": "bold green", "noisy": "bold yellow", "unreliable": "bold red", "unjudged": "dim"}


_MARKUP_PREFIX = re.compile(r"^\[[a-z ]+\](warning|note):\[/\]\s*")


def plain_note(line: str) -> str:
    """A report note without its terminal colour (``[yellow]warning:[/] x`` -> ``warning: x``)."""
    return _MARKUP_PREFIX.sub(lambda m: f"{m.group(1)}: ", line)


def plain_notes(report: RunReport) -> list[str]:
    """The run's warnings (calibration, noise, and what reading it found), as
    plain lines for the markdown and HTML reports."""
    return [plain_note(line) for line in report.notes] + [f"warning: {w}" for w in report.run.warnings]


def verdict_text(verdict: Verdict, markup: bool = False) -> str:
    """The verdict's one line; with ``markup``, its level coloured for rich."""
    line = verdict.headline
    if not markup:
        return line
    level = verdict.level
    return line.replace(level, f"[{VERDICT_STYLES[level]}]{level}[/]", 1)


def fastest_lines(report: RunReport) -> list[str]:
    """hyperfine's summary, per pass at the largest N: which variant ran fastest
    against the baseline, by how much, with its paired interval."""
    lines = []
    several_heads = report.relative["heads"].nunique() > 1 if not report.relative.empty else False
    for row in report.fastest:
        ratio = float(row["speedup"])
        paired = row.get("speedup_method") == "t-rounds"
        low, high = (row["speedup_low"], row["speedup_high"]) if paired else (None, None)
        if ratio < 1:  # every variant slower: how much slower the least slow one ran
            low, high = (None, None) if low is None else (1 / high, 1 / low)
            ratio, how = 1 / ratio, "slower"
        else:
            how = "faster"
        figure = ratio_text(ratio) + interval_text(ratio, low, high)
        heads = f", {row['heads']} heads" if several_heads else ""
        lines.append(f"{row['label']} ran {figure} {how} than {report.baseline} at N={row['seq_len']}{heads}, "
                     f"{row['pass']}")
    return lines



ALLOCATOR_MEANING = {
    "steady": "glibc malloc's thresholds fixed in the workers: large tensors are reused, as with jemalloc or "
              "tcmalloc",
    "default": "glibc's own thresholds: every tensor over 32 MiB is mapped afresh and pays its page faults",
}


def allocator_text(allocator: str | None) -> str | None:
    """The allocator line of a report's header (None when the run does not say)."""
    if allocator is None:
        return None
    meaning = ALLOCATOR_MEANING.get(allocator.split(" ")[0])
    return f"{allocator} ({meaning})" if meaning else allocator


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]|"})


def md_escape(text: object) -> str:
    """Text from a run (labels, parameters, errors, paths) as literal markdown:
    no HTML (``<b>`` shows as typed), no emphasis or link, and a ``|`` that
    cannot end a table cell."""
    return html.escape(str(text), quote=False).translate(_MD_SPECIAL)

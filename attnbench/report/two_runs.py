"""The tables of ``compare RUN_A RUN_B``: per case and pass the mark, the
visit medians of both runs and their ratio; the shift all cases share; the
geometric mean per variant; the cases a gate could not compare."""

from __future__ import annotations

import pandas as pd
from rich.table import Table

from attnbench.analysis.two_runs import TwoRuns
from attnbench.model import PASS_SHORT
from attnbench.report.cells import fmt_ms
from attnbench.stats.between_runs import MIN_EFFECT, CommonShift


def lost_case_lines(lost: pd.DataFrame, most: int = 10) -> list[str]:
    """One line per case of ``analysis.lost_cases`` (at most ``most``, then a count)."""
    lines = [f"{r['label']} N={r['seq_len']} heads={r['heads']} {PASS_SHORT.get(r['pass'], r['pass'])}: "
             f"{r['status_b']} in RUN_B" for r in lost.head(most).to_dict("records")]
    if len(lost) > most:
        lines.append(f"... and {len(lost) - most} more")
    return lines


def two_runs_warnings(runs: TwoRuns) -> list[str]:
    """What a reader of a comparison must be told beside it: cases B has that A
    lacks, settings whose variants all moved together, cases with too few rounds."""
    out = []
    if runs.missing_in_a:
        out.append(f"{runs.missing_in_a} case(s) not measured in RUN_A (marked x): nothing to compare them with")
    if runs.moved:
        out.append(f"{len(runs.moved)} setting(s) whose variants all moved together, beyond the other settings "
                   "(each variant is judged against the others, so this shows only here: a change under all of "
                   "them, or the machine's state for that setting):\n  " + "\n  ".join(runs.moved))
    if runs.undecided:
        out.append(f"{runs.undecided} case(s) have too few rounds for a verdict (marked ?): a run needs "
                   "timing.rounds >= 2 to tell a change from the drift between visits")
    return out


# --- two runs -------------------------------------------------------------------------

COMPARE_COLUMNS = ("", "variant", "N", "heads", "pass", "visits", "A ms", "B ms", "B/A", "change [90%]")
SUMMARY_COLUMNS = ("variant", "pass", "cases", "geomean B/A", "+", "-", "~", "?", "x")


def compare_title(name_a: str, name_b: str) -> str:
    return (f"{name_b} against {name_a}: the middle visit's median (ms), B/A the geometric mean "
            "over visits")


def compare_caption(min_effect: float = MIN_EFFECT) -> str:
    """What the marks and the change column of the comparison mean."""
    return (f"+ slower, - faster: the 90% interval of the change lies wholly beyond ±{min_effect:.0%}; "
            "~ no change that large; ? too few rounds for a verdict (2 visits a side at least); "
            "x failed or missing. The change is relative to the variants visited beside the case "
            "(same setting, same rounds; 3 at least) so the machine's drift cancels; "
            f"* where there are fewer: beyond the drift all cases share, up to {min_effect:.0%}")


def compare_cells(r: dict) -> list[str]:
    """A row of ``analysis.two_runs.compare_run_visits`` as the cells of COMPARE_COLUMNS."""
    mark = r["mark"]
    if mark == "x":
        cells = [fmt_ms(r["median_a_ms"]), fmt_ms(r["median_b_ms"]), f"{r['status_a']} / {r['status_b']}", ""]
    else:
        change = "" if pd.isna(r["low"]) else (f"{r['relative'] - 1:+.1%} [{r['low'] - 1:+.1%}, "
                                               f"{r['high'] - 1:+.1%}]" + ("" if r.get("against") == "peers"
                                                                           else "*"))
        cells = [fmt_ms(r["median_a_ms"]), fmt_ms(r["median_b_ms"]), f"{r['ratio']:.3f}",
                 change or "too few rounds"]
    return [mark, r["label"], str(r["seq_len"]), str(r["heads"]), PASS_SHORT.get(r["pass"], r["pass"]),
            f"{r['n_a']}/{r['n_b']}", *cells]


def summary_cells(r: dict) -> list[str]:
    """A row of ``analysis.two_runs.compare_summary`` as the cells of SUMMARY_COLUMNS."""
    g = r["geomean_ratio"]
    return [r["label"], PASS_SHORT.get(r["pass"], r["pass"]), str(r["cases"]), "-" if pd.isna(g) else f"{g:.3f}",
            str(r["slower"]), str(r["faster"]), str(r["same"]), str(r["undecided"]), str(r["failed"])]


def compare_runs_tables(compared: pd.DataFrame, summary: pd.DataFrame, name_a: str, name_b: str,
                        only_changed: bool = False, min_effect: float = MIN_EFFECT,
                        shift: CommonShift | None = None) -> list:
    """asv-style: per case and pass the mark, the medians of A's and B's visits,
    their ratio, and the change relative to the case's peers (or beyond the
    runs' common drift) with its 90% interval; the common shift; then per
    variant the geometric mean of the ratios."""
    table = Table(title=compare_title(name_a, name_b), caption=compare_caption(min_effect))
    for col in COMPARE_COLUMNS:
        table.add_column(col, justify="left" if col in ("", "variant", "pass") else "right", no_wrap=True)
    styles = {"+": "red", "-": "green", "x": "yellow", "?": "yellow"}
    for r in compared.to_dict("records"):
        if only_changed and r["mark"] == "~":
            continue
        cells = compare_cells(r)
        style = styles.get(r["mark"])
        table.add_row(f"[{style}]{cells[0]}[/]" if style else cells[0], *cells[1:])
    out: list = [table, shift_text(shift, min_effect)]
    totals = Table(title="per variant: geometric mean of B/A over the cases measured in both runs")
    for col in SUMMARY_COLUMNS:
        totals.add_column(col, justify="left" if col in ("variant", "pass") else "right", no_wrap=True)
    for r in summary.to_dict("records"):
        totals.add_row(*summary_cells(r))
    out.append(totals)
    return out


def shift_text(shift: CommonShift | None, min_effect: float = MIN_EFFECT) -> str:
    """One line on how much every case moved together between the two runs."""
    if shift is None:
        return ("common shift: too few cases in both runs to tell the machine's drift from a change "
                "(each case is judged as measured)")
    verdict = {"same": f"within ±{min_effect:.0%}: the machine's drift between runs",
               "slower": "every case slower: a change under all of them (a library, the machine: see the "
                         "calibrations)",
               "faster": "every case faster: a change under all of them (a library, the machine: see the "
                         "calibrations)"}[shift.verdict]
    return (f"common shift over {shift.cases} cases: B/A = {shift.ratio:.3f} [{shift.low:.3f}–{shift.high:.3f}], "
            f"{verdict}; cases with peers are judged against them, the others beyond up to {min_effect:.0%} of it")

"""The report of a run, computed once.

``build_report`` turns a run directory and the report's options (baseline,
filters, pass) into a ``RunReport``: the rows, the rows against the baseline,
per pass the scaling exponents and crossovers, the roofline fractions, the
published table beside the measured one with the rank agreements, the quality
summaries, the failures and the warnings. The terminal, markdown and JSON
renderings, the CSV and the plots read it and compute nothing of their own.
Each part is computed the first time a rendering asks for it, then kept: a
run's closing table does not pay for the scaling fits it does not show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from attnbench.analysis.agreement import (
    Agreement,
    agreement_interval,
    alternative_choices,
    published_correlation,
    published_side_by_side,
)
from attnbench.analysis.baseline import check_pairable, default_baseline, label_order, select_rows, with_baseline
from attnbench.analysis.quality import ApproxTable, MQARSummary, approx_table, measured_scores, mqar_summary
from attnbench.analysis.roofline import calibrations, run_notes, with_peak_fraction
from attnbench.analysis.scaling import scaling_summary
from attnbench.analysis.serving import (
    Crossover,
    DecodeScaling,
    crossovers,
    decode_rows,
    decode_scaling,
    with_kv_labels,
)
from attnbench.analysis.verdict import Verdict, run_verdict
from attnbench.errors import DataError
from attnbench.model import PASSES, Status
from attnbench.stats.paired import Interval
from attnbench.store.published import PublishedTable, load_published
from attnbench.store.results import Run, load_run


@dataclass(frozen=True)
class ReportOptions:
    """What ``attnbench report`` was asked for: the baseline (None: the suite's,
    else softmax) and the rows kept (None keeps all)."""

    baseline: str | None = None
    variants: Sequence[str] | None = None
    seq_lens: Sequence[int] | None = None
    pass_name: str | None = None


@dataclass(frozen=True)
class AgreementLine:
    """The rank agreement with a published table, for one way of pairing the
    run's labels with the table's models (``chosen``; None: the default)."""

    chosen: dict[str, str] | None
    agreement: Agreement | None
    interval: Interval | None  # over the run's rounds; None without an agreement


@dataclass(frozen=True)
class PublishedSection:
    """The suite's published table beside the run: the table (None when it
    could not be loaded: ``error`` says why), the relative figures side by
    side and the rank agreements."""

    name: str
    table: PublishedTable | None = None
    error: str | None = None
    side_by_side: pd.DataFrame = field(default_factory=pd.DataFrame)
    agreements: list[AgreementLine] = field(default_factory=list)


class RunReport:
    """Everything a report of one run shows, as data (see the module's docstring)."""

    def __init__(self, run: Run, frame: pd.DataFrame, baseline: str | None) -> None:
        self.run = run
        self.cases_frame = frame  # the tidy rows kept by the options, labelled as the suite does
        self.frame = with_kv_labels(frame)  # ... with grouped-query cases labelled apart (sdpa kv2)
        self.baseline = baseline

    # --- the run ------------------------------------------------------------------------

    @property
    def meta(self) -> dict[str, Any]:
        return self.run.meta

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.run.records

    @cached_property
    def passes(self) -> list[str]:
        """Every pass the rows hold, in PASSES order."""
        present = set(self.frame["pass"]) if not self.frame.empty else set()
        return [p for p in PASSES if p in present]

    @cached_property
    def several_variants(self) -> bool:
        return len(set(self.frame["label"])) > 1 if not self.frame.empty else False

    @cached_property
    def nothing_measured(self) -> str | None:
        """Why there is nothing to report, and how to go on; None when there is."""
        frame, run = self.frame, self.run
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

    # --- against the baseline, scaling, roofline ---------------------------------------

    @cached_property
    def relative(self) -> pd.DataFrame:
        """The rows with the baseline's figures, speed-ups and memory ratios
        (paired within rounds, with intervals); no rows without a baseline."""
        if self.baseline is None:
            return self.frame.iloc[0:0]
        return with_kv_labels(with_baseline(self.cases_frame, self.baseline, self.records))

    def relative_of(self, pass_name: str) -> pd.DataFrame:
        return self.relative[self.relative["pass"] == pass_name]

    @cached_property
    def scaling(self) -> dict[str, pd.DataFrame]:
        """Per pass: the scaling exponents and the crossover against the baseline."""
        return {p: scaling_summary(self.frame, self.baseline, p) for p in self.passes}

    @cached_property
    def decode(self) -> pd.DataFrame:
        """The decode table: µs per token, tokens/s, cache, achieved GB/s and % of the bound."""
        return decode_rows(self.cases_frame)

    @cached_property
    def decode_scaling(self) -> list[DecodeScaling]:
        """Per decode series: how its step and its cache grow with N."""
        return decode_scaling(self.cases_frame)

    @cached_property
    def crossovers(self) -> list[Crossover]:
        """Where each mechanism's decode overtakes the KV cache's, in time and memory."""
        return crossovers(self.cases_frame)

    @cached_property
    def calibrations(self) -> dict[tuple[str, str], dict[str, Any]]:
        """(device, dtype) -> the calibration at the run's start."""
        return calibrations(self.meta)

    @cached_property
    def roofline(self) -> pd.DataFrame:
        """The rows with ``peak_fraction``: achieved FLOP/s over the measured peak."""
        return with_peak_fraction(self.frame, self.meta)

    @cached_property
    def tidy(self) -> pd.DataFrame:
        """What ``--csv`` writes: the rows against the baseline (all the rows
        when there is none) with the roofline fraction."""
        return with_peak_fraction(self.relative if self.baseline is not None else self.frame, self.meta)

    @cached_property
    def allocator(self) -> str | None:
        """The CPU allocator the run's workers used (timing.allocator; older runs:
        what their calibration recorded); None when the run does not say."""
        starts = (self.meta.get("calibration") or {}).get("start") or []
        applied = next((c.get("malloc") for c in starts if isinstance(c, dict) and c.get("malloc")), None)
        setting = self.meta.get("allocator") or applied
        if setting and applied and applied != setting:
            return f"{setting} (not applied here: {applied})"
        return setting

    @cached_property
    def verdict(self) -> Verdict:
        """Whether the run's timings can be trusted (of the whole run, whatever the filters)."""
        rows = self.run.frame()
        return run_verdict(self.meta, rows, with_peak_fraction(rows, self.meta, best=True)["peak_fraction"])

    @cached_property
    def fastest(self) -> list[dict[str, Any]]:
        """Per pass, at the largest N, the variant that ran fastest against the
        baseline: its row against the baseline (speed-up and interval)."""
        out = []
        if self.baseline is None or not self.several_variants:
            return out
        for pass_name in self.passes:
            rows = self.relative_of(pass_name)
            rows = rows[(rows["status"] == Status.OK) & (rows["label"] != self.baseline) & rows["speedup"].notna()]
            if rows.empty:
                continue
            top = rows[rows["seq_len"] == rows["seq_len"].max()]
            out.append(top.loc[top["speedup"].idxmax()].to_dict())
        return out

    @cached_property
    def notes(self) -> list[str]:
        """Warnings from the run's calibrations and noise record."""
        return run_notes(self.meta, self.records)

    # --- a paper, quality, failures -----------------------------------------------------

    @cached_property
    def published(self) -> PublishedSection | None:
        """The published table the suite names, beside the run; None when it names none."""
        name = self.meta.get("published")
        if not name or self.frame.empty:
            return None
        try:
            table = load_published(str(name))
        except DataError as exc:
            return PublishedSection(str(name), error=str(exc))
        return published_section(self.frame, table, self.records)

    @cached_property
    def approx(self) -> ApproxTable | None:
        return approx_table(self.run.quality)

    @cached_property
    def mqar(self) -> MQARSummary | None:
        return mqar_summary(self.run.quality)

    @cached_property
    def measured_scores(self) -> dict[str, float]:
        """Per label, the run's mean MQAR accuracy (the trade-off chart's quality)."""
        return measured_scores(self.run.quality)

    @cached_property
    def failed(self) -> pd.DataFrame:
        """One row per case and status that did not succeed."""
        if self.frame.empty:
            return self.frame
        return self.frame[self.frame["status"] != Status.OK].drop_duplicates(subset=["case_id", "status"])

    @cached_property
    def traceback_note(self) -> str | None:
        """Where the full tracebacks are, when some failed case kept one (custom layers do)."""
        failed = [r for r in self.records if r.get("status") != Status.OK]
        if any(r.get("traceback") or any(p.get("traceback") for p in r.get("passes", [])) for r in failed):
            return f"full tracebacks of the failed cases: {self.run.path}/cases.jsonl (key 'traceback')"
        return None


def published_section(frame: pd.DataFrame, table: PublishedTable,
                      records: list[dict[str, Any]] | None = None) -> PublishedSection:
    """``table`` beside the run's rows ``frame``: the relative figures side by
    side, the rank agreement, and the same with each other label of a model the
    run measured twice; with the run's ``records``, each agreement's interval
    over rounds."""
    def line(chosen: dict[str, str] | None, agreement: Agreement | None) -> AgreementLine:
        interval = None
        if records is not None and agreement is not None and not pd.isna(agreement.rho):
            interval = agreement_interval(agreement, records)
        return AgreementLine(chosen, agreement, interval)

    both = published_side_by_side(frame, table)
    lines = [line(None, published_correlation(frame, table, both=both))]
    lines += [line(chosen, published_correlation(frame, table, chosen=chosen))
              for chosen in alternative_choices(frame, table)]
    return PublishedSection(table.name, table, None, both, lines)


def report_baseline(frame: pd.DataFrame, run: Run, chosen: str | None) -> str | None:
    """The variant a report compares against: the one asked for (which must be
    in the run), else the suite's, else softmax."""
    if chosen is not None and not frame.empty and chosen not in set(frame["label"]):
        raise DataError(f"--baseline {chosen!r} is not in this run; its variants: {', '.join(label_order(frame))}")
    return default_baseline(frame, chosen or run.meta.get("baseline"))


def build_report(run: Run | str | Path, options: ReportOptions | None = None) -> RunReport:
    """The report of ``run`` (a run directory, or a run read already) under
    ``options``. Raises ``DataError`` for a name the run does not have (a
    variant, an N, a baseline) and when the baseline's rows cannot be paired;
    a run with nothing to report still gives a report (``nothing_measured``)."""
    options = options or ReportOptions()
    run = run if isinstance(run, Run) else load_run(run)
    frame = select_rows(run.frame(), options.variants, options.seq_lens, options.pass_name)
    report = RunReport(run, frame, None)
    if report.nothing_measured:
        return report
    baseline = report_baseline(frame, run, options.baseline)
    if baseline is not None:
        check_pairable(frame)
    return RunReport(run, frame, baseline)


def report_of_records(run_dir: Path, records: list[dict[str, Any]], quality: list[dict[str, Any]]) -> RunReport:
    """The report of a run that has just finished, from the records in hand
    (its run.json for the calibrations and the noise record)."""
    import json

    from attnbench.store.results import records_frame

    try:
        meta = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    run = Run(path=run_dir, meta=meta, records=records, quality=quality)
    frame = records_frame(records, run.run_id, meta)
    baseline = default_baseline(frame, meta.get("baseline")) if not frame.empty else None
    try:
        check_pairable(frame)
    except DataError:
        baseline = None
    return RunReport(run, frame, baseline)

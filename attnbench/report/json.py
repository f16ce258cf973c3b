"""The report of a run as the JSON that ``report --json`` and ``compare --json``
print: the tidy rows, the rows against the baseline, per pass the scaling
exponents and crossovers, the quality summaries."""

from __future__ import annotations

from typing import Any

from attnbench.report.build import RunReport
from attnbench.report.cells import fastest_lines
from attnbench.report.quality import quality_json
from attnbench.report.serving import decode_json
from attnbench.store.results import CSV_COLUMNS, frame_records

COMPARE_JSON_COLUMNS = ["label", "variant", "family", "batch", "dim", "dtype", "device", "causal", "heads",
                        "seq_len", "pass", "status", "median_ms", "iqr_ms", "noisy", "rounds", "round_spread",
                        "baseline_ms", "speedup", "speedup_low", "speedup_high", "speedup_method", "peak_mem_mib",
                        "baseline_mem_mib", "mem_ratio", "mem_ratio_low", "mem_ratio_high", "flops", "flops_source",
                        "tflops", "tokens_per_s", "error"]


def report_payload(report: RunReport) -> dict[str, Any]:
    """``report --json``: the tidy rows (the results.csv columns), the rows
    against the baseline, and per pass the scaling exponents and crossovers."""
    run = report.run
    return {"run_id": run.run_id, "run_dir": str(run.path), "suite": run.meta.get("suite_name"),
            "status": run.meta.get("status"), "verdict": report.verdict.to_dict(), "allocator": report.allocator,
            "baseline": report.baseline, "warnings": run.warnings,
            "columns": CSV_COLUMNS, "rows": frame_records(report.frame, CSV_COLUMNS),
            "against_baseline": frame_records(report.relative, COMPARE_JSON_COLUMNS),
            "scaling": {p: frame_records(summary) for p, summary in report.scaling.items()},
            "quality": quality_json(report), "decode": decode_json(report), "summary": fastest_lines(report)}


def baseline_payload(report: RunReport, run_dir: str) -> dict[str, Any]:
    """``compare RUN --json``: one row per variant, case and pass, with speed-up and memory ratio."""
    data = report.relative
    return {"run_id": report.run.run_id, "run_dir": run_dir, "baseline": report.baseline,
            "passes": list(dict.fromkeys(data["pass"])), "rows": frame_records(data, COMPARE_JSON_COLUMNS)}

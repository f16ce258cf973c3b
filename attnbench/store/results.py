"""Results on disk: run.json, cases.jsonl (one record per finished visit of
a case, appended and flushed at once) and the tidy results.csv derived from
them (one row per case and pass, its visits merged)."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from attnbench.errors import ResultsError
from attnbench.model import STATUSES, Status, case_field
from attnbench.stats.samples import NOISY_REL_IQR, summarize
from attnbench.store.visits import latest_visits, merge_visits, round_spread, visit_medians

RECORD_SCHEMA = 1

CSV_COLUMNS = [
    "run_id", "variant", "label", "family", "params", "batch", "seq_len", "heads", "dim", "head_dim",
    "dtype", "device", "causal", "threads", "pass", "status", "median_ms", "iqr_ms", "min_ms", "mean_ms",
    "std_ms", "samples", "rounds", "round_spread", "rel_iqr", "noisy", "peak_mem_mib", "peak_reserved_mib",
    "flops", "flops_source", "tflops", "tokens_per_s", "param_count", "error", "compile", "compile_s",
    "sdpa_backend", "device_name", "case_id", "host", "worker_device", "device_model",
    # Serving (prefill, decode): key/value heads; the cache or state after the prompt; the steps a decode
    # pass timed; its achieved bytes per second, and the share of the bound the copy bandwidth sets.
    "kv_heads", "cache_mib", "decode_steps", "bandwidth_gbs", "bandwidth_pct",
]


def best_calibrated(meta: dict[str, Any] | None, figure: str) -> dict[tuple[str, str], float]:
    """(device, dtype) -> the highest of a calibration ``figure`` (``matmul_flops``,
    ``bandwidth_bytes_per_s``) at the run's start, between its rounds and at its end
    (run.json's ``calibration``): what the machine showed it can do."""
    found: dict[tuple[str, str], float] = {}
    calibration = (meta or {}).get("calibration") or {}
    for when in ("start", "rounds", "end"):
        for c in calibration.get(when) or []:
            value = c.get(figure) if isinstance(c, dict) and not c.get("error") else None
            if value:
                key = (c.get("device"), c.get("dtype"))
                found[key] = max(found.get(key, 0.0), float(value))
    return found


def write_atomic(path: Path, text: str) -> None:
    """Write a file so that a reader never sees it half-written; a path that
    cannot be written is a ResultsError naming it."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ResultsError(f"{path}: cannot write there ({exc.strerror or exc})") from None
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes the file 0600: give it the mode open() would
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ResultsError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _record_line(record: dict[str, Any]) -> str:
    """One case as a line of cases.jsonl."""
    return json.dumps(record, separators=(",", ":"), allow_nan=False, default=str) + "\n"


def rewrite_records(path: Path, records: list[dict[str, Any]]) -> None:
    """Replace cases.jsonl with these records, atomically."""
    write_atomic(path, "".join(_record_line(r) for r in records))


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one case to cases.jsonl and make it durable before returning."""
    line = _record_line(record)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


@dataclass
class Run:
    """A results directory read back: metadata, case records, warnings."""

    path: Path
    meta: dict[str, Any]
    records: list[dict[str, Any]]  # one per case, its visits merged (visits.merge_visits)
    warnings: list[str] = field(default_factory=list)
    visits: list[dict[str, Any]] = field(default_factory=list)  # as cases.jsonl holds them, one per visit
    quality: list[dict[str, Any]] = field(default_factory=list)  # quality.jsonl's records

    @property
    def run_id(self) -> str:
        return str(self.meta.get("run_id", self.path.name))

    def frame(self) -> pd.DataFrame:
        return records_frame(self.records, self.run_id, self.meta)


_CASE_FIELDS = {"variant": str, "label": str, "params": dict, "batch": int, "seq_len": int, "heads": int,
                "dim": int, "dtype": str, "device": str, "causal": bool, "passes": list}


def check_record(record: Any) -> None:
    """Raise ValueError unless ``record`` has the shape the runner writes
    (so that a hand-edited or foreign line is reported, not a traceback)."""
    if not isinstance(record, dict):
        raise ValueError("not a case record (a JSON object)")
    for key in ("case_id", "case", "status"):
        if key not in record:
            raise ValueError(f"not a case record: no {key!r}")
    case = record["case"]
    if not isinstance(case, dict):
        raise ValueError("'case' is not an object")
    for key, kind in _CASE_FIELDS.items():
        if not isinstance(case.get(key), kind):
            raise ValueError(f"case.{key} is missing or not a {kind.__name__}")
    if case["heads"] <= 0:
        raise ValueError("case.heads must be positive")
    if record["status"] not in STATUSES:
        raise ValueError(f"unknown status {record['status']!r}")
    passes = record.get("passes", [])
    if not isinstance(passes, list):
        raise ValueError("'passes' is not a list")
    for p in passes:
        if not isinstance(p, dict) or not isinstance(p.get("pass"), str) or p.get("status") not in STATUSES:
            raise ValueError("'passes' holds something that is not a pass result")
        samples = p.get("samples_ms") or []
        if not isinstance(samples, list) or not all(
                isinstance(x, int | float) and not isinstance(x, bool) for x in samples):
            raise ValueError(f"pass {p['pass']!r}: samples_ms is not a list of numbers")


QUALITY_FILE = "quality.jsonl"  # the quality measures' records, beside cases.jsonl
_QUALITY_FIELDS = {"task_id": str, "kind": str, "label": str, "variant": str, "status": str, "seed": int}


def check_quality_record(record: Any) -> None:
    """Raise ValueError unless ``record`` has the shape of a quality.jsonl line."""
    if not isinstance(record, dict):
        raise ValueError("not a quality record (a JSON object)")
    for key, kind in _QUALITY_FIELDS.items():
        if not isinstance(record.get(key), kind):
            raise ValueError(f"not a quality record: {key!r} is missing or not a {kind.__name__}")


def read_quality(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Read quality.jsonl (none: no records), the last record of a task winning."""
    records, warnings = read_records(path, check_quality_record)
    return list({r["task_id"]: r for r in records}.values()), warnings


def read_records(path: Path, check: Any = check_record) -> tuple[list[dict[str, Any]], list[str]]:
    """Read cases.jsonl (or, with ``check_quality_record``, quality.jsonl). A truncated
    last line (a run killed mid-write) is dropped with a warning; a bad line elsewhere
    is an error naming it."""
    records: list[dict[str, Any]] = []
    warnings: list[str] = []
    try:
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
    except FileNotFoundError:
        return [], []
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read: {exc}") from None
    cut_off = bool(text) and not text.endswith("\n")  # the last append did not finish
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            check(record)
        except ValueError as exc:
            if number == len(lines) and cut_off:
                warnings.append(f"{path}:{number}: ignored a truncated last line (the run was cut off "
                                "while writing it); it will be measured again on --resume")
                continue
            raise ResultsError(f"{path}:{number}: corrupted line ({exc}); fix or delete that line") from None
        records.append(record)
    return records, warnings


def load_run(path: str | Path) -> Run:
    """Open a results directory written by ``attnbench run``."""
    p = Path(path)
    if not p.exists():
        raise ResultsError(f"{p}: no such results directory")
    if not p.is_dir():
        raise ResultsError(f"{p}: is a file, not a results directory")
    meta_path = p / "run.json"
    if not meta_path.exists():
        if run_dirs(p):
            raise ResultsError(f"{p}: a directory of runs, not a run; list them with: attnbench runs {p}")
        raise ResultsError(f"{p}: not an attnbench results directory (no run.json)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{meta_path}: unreadable ({exc})") from None
    if not isinstance(meta, dict):
        raise ResultsError(f"{meta_path}: not an attnbench run.json")
    records, warnings = read_records(p / "cases.jsonl")
    # A resumed run may hold an older record of the same visit: the last wins.
    visits = latest_visits(records)
    quality, quality_warnings = read_quality(p / QUALITY_FILE)
    return Run(path=p, meta=meta, records=merge_visits(visits), warnings=warnings + quality_warnings,
               visits=visits, quality=quality)


def _stats_row(samples: list[float]) -> dict[str, Any]:
    row = summarize(samples)
    med = row["median_ms"]
    row["rel_iqr"] = (row["iqr_ms"] / med) if med else None
    row["noisy"] = bool(row["rel_iqr"] is not None and row["rel_iqr"] > NOISY_REL_IQR)
    return row


def record_rows(record: dict[str, Any], run_id: str,
                bandwidths: dict[tuple[str, str], float] | None = None) -> list[dict[str, Any]]:
    """The CSV rows (one per pass) of a case record; ``bandwidths``
    (``best_calibrated``) give a decode step's bound."""
    case = record["case"]
    passes = {p["pass"]: p for p in record.get("passes", [])}
    rows = []
    for pass_name in case["passes"]:
        result = passes.get(pass_name)
        if result is None:  # the case ended before this pass: it shares the case's fate
            result = {"status": record.get("status", Status.ERROR), "error": record.get("error"), "samples_ms": [],
                      "flops": None}
        samples = result.get("samples_ms") or []
        row: dict[str, Any] = {
            "run_id": run_id, "variant": case["variant"], "label": case["label"],
            "family": record.get("family"), "params": json.dumps(case["params"], sort_keys=True),
            "batch": case["batch"], "seq_len": case["seq_len"], "heads": case["heads"], "dim": case["dim"],
            "head_dim": case["dim"] // case["heads"], "dtype": case["dtype"], "device": case["device"],
            "causal": case["causal"], "threads": record.get("threads"), "pass": pass_name,
            "status": result["status"], "peak_mem_mib": result.get("peak_mem_mib"),
            "peak_reserved_mib": result.get("peak_reserved_mib"), "flops": result.get("flops"),
            "flops_source": result.get("flops_source", "analytic" if result.get("flops") is not None else None),
            "param_count": record.get("param_count"), "error": result.get("error"),
            "compile": case.get("compile", False), "compile_s": record.get("compile_s"),
            "sdpa_backend": record.get("sdpa_backend"), "device_name": record.get("device_name"),
            "case_id": record["case_id"], "host": record.get("host"), "worker_device": record.get("worker_device"),
            "device_model": record.get("device_model"),
        }
        row.update(_stats_row(samples) if result["status"] == Status.OK else _stats_row([]))
        medians = visit_medians(result) if result["status"] == Status.OK else []
        row["rounds"] = len(medians) or None
        row["round_spread"] = round_spread(result) if result["status"] == Status.OK else None
        if len(medians) > 1:  # the middle visit: one disturbed visit moves it least
            row["median_ms"] = statistics.median(medians)
            row["rel_iqr"] = row["iqr_ms"] / row["median_ms"] if row["median_ms"] else None
            row["noisy"] = bool(row["rel_iqr"] is not None and row["rel_iqr"] > NOISY_REL_IQR)
        med = row["median_ms"]
        row["tflops"] = (row["flops"] / (med / 1e3) / 1e12) if med and row["flops"] else None
        tokens = case["batch"] if pass_name == "decode" else case["batch"] * case["seq_len"]  # decode: per step
        row["tokens_per_s"] = (tokens / (med / 1e3)) if med else None
        row.update(_serving(case, pass_name, result, med, bandwidths or {}))
        rows.append(row)
    return rows


def _serving(case: dict[str, Any], pass_name: str, result: dict[str, Any], median_ms: float | None,
             bandwidths: dict[tuple[str, str], float]) -> dict[str, Any]:
    """kv_heads, and for prefill and decode the cache, steps and bandwidth columns."""
    out: dict[str, Any] = {"kv_heads": case_field(case, "kv_heads"), "cache_mib": result.get("cache_mib"),
                           "decode_steps": None, "bandwidth_gbs": None, "bandwidth_pct": None}
    if pass_name == "decode":
        out["decode_steps"] = case.get("decode_steps")
        step_bytes = result.get("step_bytes")
        if step_bytes and median_ms:
            achieved = step_bytes / (median_ms / 1e3)
            out["bandwidth_gbs"] = achieved / 1e9
            bound = bandwidths.get((case["device"], case["dtype"]))
            out["bandwidth_pct"] = 100 * achieved / bound if bound else None
    return out


def records_frame(records: list[dict[str, Any]], run_id: str, meta: dict[str, Any] | None = None) -> pd.DataFrame:
    """The tidy frame (results.csv) of case records, or of visit records,
    which are merged per case first; ``meta`` (run.json) gives the calibrated
    copy bandwidth that a decode step's figure is held against."""
    bandwidths = best_calibrated(meta, "bandwidth_bytes_per_s")
    rows = [row for record in merge_visits(records) for row in record_rows(record, run_id, bandwidths)]
    frame = pd.DataFrame(rows, columns=CSV_COLUMNS)
    if not frame.empty:
        frame["flops"] = frame["flops"].astype("Int64")
    return frame


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    write_atomic(path, frame.to_csv(index=False))


def frame_records(frame: pd.DataFrame, columns: list[str] | None = None) -> list[dict[str, Any]]:
    """Rows of a results frame as JSON-ready dicts: missing values (NaN, NA) become None."""
    import math

    data = frame if columns is None else frame[[c for c in columns if c in frame.columns]]
    rows = []
    for row in data.astype(object).to_dict(orient="records"):
        clean = {}
        for key, value in row.items():
            if value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
                value = None
            elif hasattr(value, "item"):  # numpy scalar
                value = value.item()
            clean[key] = value
        rows.append(clean)
    return rows


def run_dirs(root: str | Path) -> list[Path]:
    """The run directories (those with a run.json) directly under ``root``, oldest first."""
    p = Path(root)
    if not p.is_dir():
        return []
    return sorted((d for d in p.iterdir() if d.is_dir() and (d / "run.json").is_file()), key=lambda d: d.name)


def run_summaries(root: str | Path) -> list[dict[str, Any]]:
    """Per run under ``root``: id, suite, start, status, cases done and total,
    machine; from run.json only (a run.json that does not read is listed as such)."""
    out = []
    for d in run_dirs(root):
        try:
            meta = json.loads((d / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {"status": "unreadable run.json"}
        if not isinstance(meta, dict):
            meta = {"status": "unreadable run.json"}
        env = meta.get("environment") if isinstance(meta.get("environment"), dict) else {}
        gpus = env.get("gpus") or []
        gpu = ", ".join(g.get("name", "?") if isinstance(g, dict) else str(g) for g in gpus) if gpus else ""
        out.append({"run_dir": str(d), "run_id": meta.get("run_id", d.name), "suite": meta.get("suite_name"),
                    "started_at": meta.get("started_at"), "status": meta.get("status"),
                    "cases_done": meta.get("cases_done"), "cases_total": meta.get("cases_total"),
                    "machine": gpu or env.get("cpu_model") or "", "shard": _shard_text(meta.get("shard"))})
    return out


def _shard_text(shard: Any) -> str | None:
    """``2/8`` for a run of part 2 of 8 (``--shard``); None for a whole run."""
    if not isinstance(shard, dict) or shard.get("index") is None or shard.get("count") is None:
        return None
    return f"{shard['index']}/{shard['count']}"


def estimate_from_runs(root: str | Path, suite_name: str, case_ids: list[str],
                       rounds: int = 1) -> tuple[float, int, str] | None:
    """How long ``case_ids`` visited ``rounds`` times would take, from the latest
    run under ``root`` of the suite named ``suite_name``: (seconds, how many of
    the cases it measured, its id); None when no run of that suite measured any.

    Each case's mean time per visit there, times ``rounds``, is that run's share
    of its work; a run that finished in one go scales its whole wall time by that
    share, so worker start-up, calibration and memory runs are counted as they
    were there (a resumed or interrupted run has no whole wall time: its cases'
    own times are the estimate)."""
    wanted = set(case_ids)
    for d in reversed(run_dirs(root)):
        try:
            meta = json.loads((d / "run.json").read_text(encoding="utf-8"))
            if not isinstance(meta, dict) or meta.get("suite_name") != suite_name:
                continue
            visits, _ = read_records(d / "cases.jsonl")
        except (OSError, ValueError, ResultsError):
            continue
        per_case: dict[str, list[float]] = {}
        for visit in visits:
            per_case.setdefault(visit["case_id"], []).append(float(visit.get("wall_s") or 0.0))
        known = [c for c in dict.fromkeys(case_ids) if c in per_case and c in wanted]
        if not known:
            continue
        share = sum(statistics.fmean(per_case[c]) for c in known) * rounds
        measured = sum(sum(walls) for walls in per_case.values())
        wall = (meta.get("noise") or {}).get("wall_s")
        whole = meta.get("status") == "finished" and len(meta.get("history") or []) <= 1 and wall
        seconds = float(wall) * share / measured if whole and measured > 0 else share
        return seconds, len(known), str(meta.get("run_id", d.name))
    return None

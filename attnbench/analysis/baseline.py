"""Each variant against a baseline, in the layout of the papers' efficiency
tables: relative speed and memory, paired within rounds with their intervals;
the settings a run's rows group into; the rows a report keeps."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from attnbench.errors import DataError
from attnbench.model import CASE_KEYS, PASSES, SETTING, Status, case_field
from attnbench.stats import paired
from attnbench.stats.samples import quartiles
from attnbench.store.visits import aligned_values, paired_rounds

# The interval bounds with_baseline adds from the rounds.
PAIRED_COLUMNS = ["speedup_low", "speedup_high", "mem_ratio_low", "mem_ratio_high"]


def settings_groups(frame: pd.DataFrame) -> list[tuple[dict, pd.DataFrame]]:
    """Split a results frame by setting (batch, dim, dtype, device, causal)."""
    if frame.empty:
        return []
    out = []
    for key, group in frame.groupby(SETTING, sort=True, dropna=False):
        out.append((dict(zip(SETTING, key, strict=True)), group))
    return out


def measured_passes(frame: pd.DataFrame) -> list[str]:
    """Every pass the rows hold, in PASSES order."""
    present = set(frame["pass"]) if not frame.empty else set()
    return [p for p in PASSES if p in present]


def table_groups(frame: pd.DataFrame) -> list[tuple[dict, int, pd.DataFrame]]:
    """One group per table: (setting, heads, rows), settings as ``settings_groups``."""
    return [(setting, heads, group[group["heads"] == heads])
            for setting, group in settings_groups(frame)
            for heads in sorted(set(group["heads"]))]


def describe_setting(setting: dict) -> str:
    causal = ", causal" if setting.get("causal") else ""
    return f"batch {setting['batch']}, dim {setting['dim']}, {setting['dtype']}, {setting['device']}{causal}"


def label_order(frame: pd.DataFrame) -> list[str]:
    """Variants in the order they first appear (the suite's order)."""
    return list(dict.fromkeys(frame["label"]))


def with_baseline(frame: pd.DataFrame, baseline: str, records: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    """Add, to every row, the baseline's median and peak memory of the same
    case and pass, the speed-up (baseline time / time) and the memory ratio.
    With the run's case ``records``, the speed-up and memory ratio are the
    paired ones (``paired_table``: from visits of the same round) with
    their 95% intervals (``speedup_low``/``_high``, ``mem_ratio_low``/``_high``)."""
    if baseline not in set(frame["label"]):
        known = ", ".join(label_order(frame))
        raise DataError(f"baseline {baseline!r} is not in this run; its variants: {known}")
    check_pairable(frame)
    base = frame[(frame["label"] == baseline) & (frame["status"] == Status.OK)][
        CASE_KEYS + ["median_ms", "peak_mem_mib"]].rename(
        columns={"median_ms": "baseline_ms", "peak_mem_mib": "baseline_mem_mib"})
    merged = frame.merge(base, on=CASE_KEYS, how="left")
    ok = merged["status"] == Status.OK
    merged["speedup"] = (merged["baseline_ms"] / merged["median_ms"]).where(ok)
    merged["speedup_medians"] = merged["speedup"]  # the ratio of the medians shown, beside the paired one
    merged["mem_ratio"] = (merged["peak_mem_mib"] / merged["baseline_mem_mib"]).where(ok)
    for column in PAIRED_COLUMNS:
        merged[column] = math.nan
    merged["speedup_method"] = None
    if records is None or merged.empty:
        return merged
    table = paired_table(records, baseline)
    if table.empty:
        return merged
    keys = ["label", *CASE_KEYS]
    table = table.set_index(keys)
    index = pd.MultiIndex.from_frame(merged[keys])
    found = index.isin(table.index)
    rows = table.reindex(index[found])
    for column in ("speedup", "mem_ratio", *PAIRED_COLUMNS, "speedup_method"):
        values = rows[column].to_numpy()
        if column in ("speedup", "mem_ratio"):  # keep the unpaired figure where the pairing has none
            keep = pd.isna(values)
            values = [old if k else v for old, v, k in zip(merged.loc[found, column], values, keep, strict=True)]
        merged.loc[found, column] = values
    return merged


PAIRED_TABLE_COLUMNS = ["label", *CASE_KEYS, "rounds", "speedup", "speedup_low", "speedup_high", "speedup_method",
                  "mem_ratio", "mem_ratio_low", "mem_ratio_high"]


def paired_table(records: list[dict[str, Any]], baseline: str, level: float = paired.LEVEL) -> pd.DataFrame:
    """Per variant, case and pass (merged records, see ``merge_visits``): the
    paired speed-up over ``baseline`` (baseline time / variant time, from the
    visits of the same round, turn by turn where they took turns) and memory ratio (peak / the baseline's), each
    with its ``level`` interval. The variance of the log ratios is pooled
    over the run's pairs (``paired.ratio_prior``)."""
    base: dict[tuple, dict[str, Any]] = {}
    rows = []
    for record in records:
        case = record["case"]
        for p in record.get("passes", []):
            key = tuple(case_field(case, k) for k in CASE_KEYS[:-1]) + (p["pass"],)
            if case["label"] == baseline and p["status"] == "ok":
                base[key] = p
            rows.append((case, key, p))
    pairs = [(key, case, base[key], p) for case, key, p in rows if key in base and p["status"] == "ok"]
    aligned = [paired_rounds(b, p)[1:] for _, _, b, p in pairs]  # (baseline, variant, in turns) per round
    prior = paired.ratio_prior(aligned)
    out = []
    for (key, case, b, p), (num, den, together) in zip(pairs, aligned, strict=True):
        speed = paired.paired_ratio(num, den, level=level, prior=prior, in_turns=together)
        mem_a, mem_b = aligned_values(p, b, "peak_mem_mib")
        mem = paired.paired_ratio(mem_a, mem_b, level=level) if mem_a else None
        out.append({"label": case["label"], **dict(zip(CASE_KEYS, key, strict=True)), "rounds": speed.rounds,
                    "speedup": speed.estimate, "speedup_low": speed.low, "speedup_high": speed.high,
                    "speedup_method": speed.method,
                    "mem_ratio": mem.estimate if mem else math.nan, "mem_ratio_low": mem.low if mem else math.nan,
                    "mem_ratio_high": mem.high if mem else math.nan})
    return pd.DataFrame(out, columns=PAIRED_TABLE_COLUMNS)


class MixedDevicesError(DataError):
    """Figures to be paired (variants at one setting) come from different device models."""


def device_models(frame: pd.DataFrame) -> pd.Series:
    """The device model of each row: ``device_model`` (GPU name, CPU model),
    else ``device_name`` for results written before that column existed."""
    model = frame["device_model"] if "device_model" in frame.columns else pd.Series(None, index=frame.index)
    if "device_name" in frame.columns:
        model = model.where(model.notna(), frame["device_name"])
    return model


def check_pairable(frame: pd.DataFrame) -> None:
    """Refuse to pair variants measured on different device models at one
    setting (a run merged from machines with different GPUs, or resumed on
    another machine): their ratios would compare the devices, not the variants."""
    if frame.empty:
        return
    data = frame.assign(_model=device_models(frame))
    data = data[data["_model"].notna()]
    keys = [k for k in CASE_KEYS if k != "pass"]
    problems = []
    for key, group in data.groupby(keys, sort=True, dropna=False):
        models = list(dict.fromkeys(group["_model"]))
        if len(models) > 1:
            setting = dict(zip(keys, key, strict=True))
            where = "; ".join(
                f"{model}: {', '.join(dict.fromkeys(group.loc[group['_model'] == model, 'label']))}"
                for model in models)
            problems.append(f"N={setting['seq_len']}, {setting['heads']} heads, {describe_setting(setting)} — {where}")
    if problems:
        shown = problems[:5] + ([f"... and {len(problems) - 5} more"] if len(problems) > 5 else [])
        raise MixedDevicesError(
            "cannot compare variants measured on different device models (the ratios would compare the "
            "devices):\n  " + "\n  ".join(shown) + "\nThe run mixes machines (merged shards or a resume "
            "elsewhere): report each device's part on its own, or run those settings again on one device model.")


def default_baseline(frame: pd.DataFrame, preferred: str | None = None) -> str | None:
    labels = label_order(frame)
    for candidate in (preferred, "softmax", "sdpa"):
        if candidate and candidate in labels:
            return candidate
    return labels[0] if labels else None


# --- scaling exponents and crossovers -------------------------------------------

def add_quartiles(frame: pd.DataFrame, records: list[dict[str, Any]]) -> pd.DataFrame:
    """Add q1_ms and q3_ms from each pass's raw samples (NaN where there are none)."""
    q: dict[tuple[str, str], tuple[float, float]] = {}
    for record in records:
        for p in record.get("passes", []):
            samples = p.get("samples_ms") or []
            if p.get("status") == Status.OK and samples:
                q1, _, q3 = quartiles(list(samples))
                q[(record["case_id"], p["pass"])] = (q1, q3)
    out = frame.copy()
    keys = list(zip(out["case_id"], out["pass"], strict=True))
    out["q1_ms"] = [q.get(k, (math.nan, math.nan))[0] for k in keys]
    out["q3_ms"] = [q.get(k, (math.nan, math.nan))[1] for k in keys]
    return out


def select_rows(frame: pd.DataFrame, labels: Sequence[str] | None = None, seq_lens: Sequence[int] | None = None,
                pass_name: str | None = None) -> pd.DataFrame:
    """The rows of ``frame`` of the given variants (labels), sequence lengths and
    pass; None keeps all. A label or N the run does not have is an error naming
    what it has."""
    if labels:
        known = label_order(frame)
        unknown = [x for x in labels if x not in known]
        if unknown:
            raise DataError(f"--variant {', '.join(unknown)}: not in this run; its variants: {', '.join(known)}")
        frame = frame[frame["label"].isin(list(labels))]
    if seq_lens:
        known_n = sorted(set(frame["seq_len"]))
        unknown_n = [n for n in seq_lens if n not in known_n]
        if unknown_n:
            raise DataError(f"--n {', '.join(map(str, unknown_n))}: not in this run; its N: "
                            f"{', '.join(map(str, known_n))}")
        frame = frame[frame["seq_len"].isin(list(seq_lens))]
    if pass_name:
        frame = frame[frame["pass"] == pass_name]
    return frame

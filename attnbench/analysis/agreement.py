"""How a run's relative speeds agree with a published table's (LRA Table 2):
the measured and published figures side by side, Spearman's rank correlation,
and its bootstrap interval over rounds."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from attnbench.analysis.baseline import label_order, table_groups
from attnbench.model import Status
from attnbench.stats import paired
from attnbench.stats.paired import spearman
from attnbench.store import visits
from attnbench.store.published import PublishedTable


@dataclass
class Agreement:
    """How a run's relative speeds rank against a published table's at one N."""

    table: str
    pass_name: str
    seq_len: int
    rho: float
    pairs: pd.DataFrame  # model, label, measured (speed-up), published (relative speed)

    @property
    def models(self) -> int:
        return len(self.pairs)


def _published_group(frame: pd.DataFrame, table: PublishedTable, pass_name: str,
                     chosen: dict[str, str] | None = None) -> tuple[pd.DataFrame, dict[str, str], str] | None:
    """The run's rows (one setting and head count, the one that pairs the most
    models) to set beside ``table``: (rows of that pass, table variant -> label,
    the label of the table's baseline)."""
    base_variant = table.baseline_variant
    data = frame[(frame["pass"] == pass_name) & (frame["status"] == Status.OK)]
    if data.empty or base_variant is None:
        return None
    best = None
    for _setting, _heads, sub in table_groups(data):
        mapping = _map_models(table, sub, label_order(sub), chosen)
        if base_variant not in mapping:
            continue
        if best is None or len(mapping) > len(best[1]):
            best = (sub, mapping, mapping[base_variant])
    return best


def published_side_by_side(frame: pd.DataFrame, table: PublishedTable, pass_name: str | None = None,
                           chosen: dict[str, str] | None = None) -> pd.DataFrame:
    """Measured and published relative figures of the models both have, at the N
    both have: speed-up against the baseline model's variant and memory ratio
    (peak / the baseline's peak), one row per model and N. ``chosen``: table
    variant -> the label to pair it with, where the run measured it under several."""
    columns = ["model", "label", "seq_len", "measured_speedup", "published_speedup", "measured_mem_ratio",
               "published_mem_ratio", "case_id", "baseline_case_id"]
    found = _published_group(frame, table, pass_name or table.pass_name, chosen)
    if found is None:
        return pd.DataFrame(columns=columns)
    sub, mapping, base_label = found
    pub = table.frame
    base_model = table.meta.get("baseline_model")
    rows = []
    for n in sorted(set(sub["seq_len"]) & set(int(x) for x in pub["seq_len"])):
        at_n = sub[sub["seq_len"] == n].set_index("label")
        pub_n = pub[pub["seq_len"] == n].set_index("variant")
        pub_base = pub[(pub["seq_len"] == n) & (pub["model"] == base_model)]
        base_gb = float(pub_base["memory_gb"].iloc[0]) if not pub_base.empty else math.nan
        for variant, label in mapping.items():
            if label not in at_n.index or variant not in pub_n.index:
                continue
            has_base = base_label in at_n.index
            mine, base = at_n.loc[label], at_n.loc[base_label] if has_base else None
            rows.append({
                "model": pub_n.loc[variant, "model"], "label": label, "seq_len": int(n),
                "measured_speedup": float(base["median_ms"] / mine["median_ms"]) if has_base else math.nan,
                "published_speedup": float(pub_n.loc[variant, "relative_speed"]),
                "measured_mem_ratio": (float(mine["peak_mem_mib"] / base["peak_mem_mib"])
                                       if has_base and not pd.isna(mine["peak_mem_mib"])
                                       and not pd.isna(base["peak_mem_mib"]) and base["peak_mem_mib"] > 0
                                       else math.nan),
                "published_mem_ratio": float(pub_n.loc[variant, "memory_gb"]) / base_gb,
                "case_id": mine["case_id"], "baseline_case_id": base["case_id"] if has_base else None,
            })
    return pd.DataFrame(rows, columns=columns)


def published_correlation(frame: pd.DataFrame, table: PublishedTable, seq_len: int | None = 4096,
                          pass_name: str | None = None, both: pd.DataFrame | None = None,
                          chosen: dict[str, str] | None = None) -> Agreement | None:
    """Spearman rank correlation between the measured speed-ups (against the run's
    variant that maps to the table's baseline model) and the table's relative
    speeds, over the models both have, at ``seq_len`` (4096 by default; the
    largest N both have when that one is missing). None when fewer than two
    models can be paired. ``both``: ``published_side_by_side(frame, table, pass_name)``
    when the caller already has it."""
    pass_name = pass_name or table.pass_name
    if both is None:
        both = published_side_by_side(frame, table, pass_name, chosen)
    both = both.dropna(subset=["measured_speedup", "published_speedup"])
    if both.empty:
        return None
    ns = sorted(set(both["seq_len"]))
    n = seq_len if seq_len in ns else ns[-1]
    at_n = both[both["seq_len"] == n]
    if len(at_n) < 2:
        return None
    pairs = at_n[["model", "label", "measured_speedup", "published_speedup", "case_id", "baseline_case_id"]].rename(
        columns={"measured_speedup": "measured", "published_speedup": "published"}).reset_index(drop=True)
    return Agreement(table=table.name, pass_name=pass_name, seq_len=int(n),
                     rho=spearman(list(pairs["measured"]), list(pairs["published"])), pairs=pairs)


def alternative_choices(frame: pd.DataFrame, table: PublishedTable) -> list[dict[str, str]]:
    """For each table variant the run measured under several labels (LRA's Reformer
    and the paper-default one), one ``chosen`` mapping per label other than the one
    picked by default: the correlation can then be computed each way."""
    out = []
    default = _map_models(table, frame, label_order(frame))
    for variant in dict.fromkeys(table.frame["variant"]):
        measured = list(dict.fromkeys(frame[frame["variant"] == variant]["label"]))
        out += [{variant: label} for label in measured if label != default.get(variant)]
    return out


def _map_models(table: PublishedTable, frame: pd.DataFrame, labels: list[str],
                chosen: dict[str, str] | None = None) -> dict[str, str]:
    """Table variant -> the run's label: the label ``chosen`` for it (when the run
    has it), else a label equal to the variant name, else the only label measuring
    that variant."""
    out = {}
    for variant in dict.fromkeys(table.frame["variant"]):
        if chosen and chosen.get(variant) in labels:
            out[variant] = chosen[variant]
            continue
        if variant in labels:
            out[variant] = variant
            continue
        same = list(dict.fromkeys(frame[frame["variant"] == variant]["label"]))
        if len(same) == 1:
            out[variant] = same[0]
    return out


def agreement_interval(agreement: Agreement, records: list[dict[str, Any]], level: float = paired.LEVEL
                       ) -> paired.Interval:
    """A bootstrap interval over rounds for ``agreement``'s rank correlation: per
    model its speed-up in each round (``visits.round_ratios``: the baseline's
    time over the model's, same round), rounds resampled alike for every
    model."""
    by_id = {r["case_id"]: r for r in records}

    def pass_of(case_id: str) -> dict[str, Any]:
        record = by_id.get(case_id) or {}
        return next((p for p in record.get("passes", []) if p["pass"] == agreement.pass_name), {})

    per_model = {pair["model"]: visits.round_ratios(pass_of(pair["baseline_case_id"] or ""), pass_of(pair["case_id"]))
                 for pair in agreement.pairs.to_dict("records")}
    rounds = sorted(set().union(*per_model.values())) if per_model else []
    measured = {m: [v.get(r, math.nan) for r in rounds] for m, v in per_model.items()}
    published = dict(zip(agreement.pairs["model"], agreement.pairs["published"], strict=True))
    return paired.spearman_interval(measured, published, level)



"""Published tables shipped with attnbench (``attnbench/data/NAME.csv`` with its
citation in ``NAME.yaml``): the efficiency tables a suite can name with
``published:`` (LRA Table 2), the quality scores the trade-off chart reads (LRA
Table 1, ``kind: scores``), and the agreement of a run with a published table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from attnbench.analysis import _isnan, label_order, table_groups

DATA_PACKAGE = "attnbench"
DATA_DIR = "data"


@dataclass
class PublishedTable:
    """A paper's efficiency table shipped with attnbench (``attnbench/data/NAME.csv``
    with its citation in ``NAME.yaml``): one row per model and N."""

    name: str
    meta: dict[str, Any]
    frame: pd.DataFrame

    @property
    def title(self) -> str:
        return str(self.meta.get("title", self.name))

    @property
    def citation(self) -> str:
        return " ".join(str(self.meta.get("citation", "")).split())

    @property
    def pass_name(self) -> str:
        return str(self.meta.get("pass", "forward_backward"))

    @property
    def baseline_variant(self) -> str | None:
        model = self.meta.get("baseline_model")
        rows = self.frame[self.frame["model"] == model]
        return str(rows["variant"].iloc[0]) if not rows.empty else None

    def models(self) -> list[str]:
        return list(dict.fromkeys(self.frame["model"]))


def _data_files():
    from importlib.resources import files

    return files(DATA_PACKAGE).joinpath(DATA_DIR)


def _shipped(kind: str) -> list[str]:
    """Names of the shipped tables of ``kind`` (the yaml's ``kind:``, "efficiency" when absent)."""
    import yaml

    folder = _data_files()
    names = {p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")}
    return sorted(n for n in names if folder.joinpath(n + ".csv").is_file() and (yaml.safe_load(
        folder.joinpath(n + ".yaml").read_text(encoding="utf-8")) or {}).get("kind", "efficiency") == kind)


def published_names() -> list[str]:
    """Names of the published efficiency tables shipped in the package (``published:`` in a suite)."""
    return _shipped("efficiency")


def load_published(name: str, kind: str = "efficiency") -> PublishedTable:
    """Load a shipped published table by name, e.g. ``"lra_table2"`` (or, with
    ``kind="scores"``, a table of quality scores such as ``"lra_table1"``)."""
    import io

    import yaml

    known = _shipped(kind)
    if name not in known:
        raise ValueError(f"unknown published table {name!r}; known: {', '.join(known) or 'none'}")
    folder = _data_files()
    meta = yaml.safe_load(folder.joinpath(name + ".yaml").read_text(encoding="utf-8")) or {}
    text = folder.joinpath(name + ".csv").read_text(encoding="utf-8")
    numeric = ["steps_per_s", "relative_speed", "printed_speedup", "memory_gb", "avg"]
    frame = pd.read_csv(io.StringIO(text), comment="#", keep_default_na=False,
                        na_values={column: [""] for column in numeric})
    return PublishedTable(name=name, meta=meta, frame=frame)


# --- agreement with a published table --------------------------------------------

def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN with fewer than
    two pairs or when either side is constant."""
    if len(x) != len(y):
        raise ValueError("spearman: the two sequences differ in length")
    if len(x) < 2:
        return math.nan
    rx = pd.Series(list(x), dtype=float).rank(method="average").to_numpy()
    ry = pd.Series(list(y), dtype=float).rank(method="average").to_numpy()
    dx, dy = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    return float((dx * dy).sum() / denom) if denom > 0 else math.nan


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
    the label of the table's baseline). ``chosen``: see ``_map_models``."""
    base_variant = table.baseline_variant
    data = frame[(frame["pass"] == pass_name) & (frame["status"] == "ok")]
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
    (peak / the baseline's peak), one row per model and N. ``chosen`` (table
    variant -> run label) picks the label of a variant the run measured twice."""
    columns = ["model", "label", "seq_len", "measured_speedup", "published_speedup", "measured_mem_ratio",
               "published_mem_ratio"]
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
                                       if has_base and not _isnan(mine["peak_mem_mib"])
                                       and not _isnan(base["peak_mem_mib"]) and base["peak_mem_mib"] > 0
                                       else math.nan),
                "published_mem_ratio": float(pub_n.loc[variant, "memory_gb"]) / base_gb,
            })
    return pd.DataFrame(rows, columns=columns)


def published_correlation(frame: pd.DataFrame, table: PublishedTable, seq_len: int | None = 4096,
                          pass_name: str | None = None, both: pd.DataFrame | None = None,
                          chosen: dict[str, str] | None = None) -> Agreement | None:
    """Spearman rank correlation between the measured speed-ups (against the run's
    variant that maps to the table's baseline model) and the table's relative
    speeds, over the models both have, at ``seq_len`` (4096 by default; the
    largest N both have when that one is missing). None when fewer than two
    models can be paired. ``both``: ``published_side_by_side(frame, table, pass_name,
    chosen)`` when the caller already has it; ``chosen``: see ``published_side_by_side``."""
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
    pairs = at_n[["model", "label", "measured_speedup", "published_speedup"]].rename(
        columns={"measured_speedup": "measured", "published_speedup": "published"}).reset_index(drop=True)
    return Agreement(table=table.name, pass_name=pass_name, seq_len=int(n),
                     rho=spearman(list(pairs["measured"]), list(pairs["published"])), pairs=pairs)


def alternative_choices(frame: pd.DataFrame, table: PublishedTable) -> list[dict[str, str]]:
    """For each table variant the run measured under several labels (LRA's Reformer
    and the paper-default one), one ``chosen`` mapping per label other than the one
    picked by default: the correlation can then be computed each way."""
    out = []
    labels = label_order(frame)
    default = _map_models(table, frame, labels)
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




def agreement_text(agreement: Agreement | None) -> str:
    """One line on the rank agreement between measured and published relative speeds."""
    if agreement is None:
        return "rank agreement with the published table: not enough models in common to compute it"
    rho = "undefined" if pd.isna(agreement.rho) else f"{agreement.rho:+.2f}"
    models = ", ".join(agreement.pairs["label"])
    return (f"Spearman rank correlation of relative speed at N={agreement.seq_len} ({agreement.pass_name}) "
            f"with {agreement.table}: ρ = {rho} over {agreement.models} models ({models})")


def agreement_lines(frame: pd.DataFrame, table: PublishedTable, both: pd.DataFrame | None = None) -> list[str]:
    """The rank agreement, then the same with each other label of a model the run
    measured twice (LRA's Reformer as LRA ran it and at the paper's defaults)."""
    lines = [agreement_text(published_correlation(frame, table, both=both))]
    for chosen in alternative_choices(frame, table):
        which = ", ".join(f"{label} as {variant}" for variant, label in chosen.items())
        lines.append(f"with {which}: " + agreement_text(published_correlation(frame, table, chosen=chosen)))
    return lines

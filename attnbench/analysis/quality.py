"""Quality records -> the tables ``report`` prints: approximation error per variant,
N and regime; MQAR accuracy per variant with the seeds' spread and the rank
correlation between seeds."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

from attnbench.stats.paired import spearman


@dataclass(frozen=True)
class ApproxCell:
    """Mean over seeds of one (variant, N, regime); ``status`` when not measured."""

    output_error: float | None
    row_error: float | None
    row_tv: float | None
    ref_entropy: float | None
    seeds: int
    status: str  # ok | not an approximation | error

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ApproxTable:
    labels: tuple[str, ...]
    columns: tuple[tuple[str, int], ...]  # (regime, N)
    cells: dict[tuple[str, str, int], ApproxCell]  # (label, regime, N)
    params: dict[str, dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"columns": [{"regime": r, "seq_len": n} for r, n in self.columns],
                "rows": [{"label": label, "params": self.params.get(label, {}),
                          "cells": [self.cells[(label, r, n)].to_dict() if (label, r, n) in self.cells
                                    else None for r, n in self.columns]} for label in self.labels]}


@dataclass(frozen=True)
class MQARRow:
    label: str
    variant: str
    params: dict[str, Any]
    causal: bool
    accuracies: dict[int, float | None]  # seed -> accuracy (None: diverged / error)
    statuses: dict[int, str]
    mean: float | None
    low: float | None
    high: float | None
    train_s: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["accuracies"] = {str(k): v for k, v in self.accuracies.items()}
        d["statuses"] = {str(k): v for k, v in self.statuses.items()}
        return d


@dataclass(frozen=True)
class MQARSummary:
    rows: tuple[MQARRow, ...]
    config: dict[str, Any]
    seeds: tuple[int, ...]
    seed_rank_correlation: float | None  # Spearman between the first two seeds' accuracies

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "seeds": list(self.seeds),
                "seed_rank_correlation": self.seed_rank_correlation,
                "rows": [r.to_dict() for r in self.rows]}


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def approx_table(records: list[dict[str, Any]]) -> ApproxTable | None:
    rows = [r for r in records if r.get("kind") == "approx"]
    if not rows:
        return None
    labels = tuple(dict.fromkeys(r["label"] for r in rows))
    columns = tuple(sorted({(r["regime"], r["seq_len"]) for r in rows},
                           key=lambda c: (c[0] != "gaussian", c[0], c[1])))
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["label"], r["regime"], r["seq_len"]), []).append(r)
    cells = {}
    for key, group in groups.items():
        ok = [r for r in group if r["status"] == "ok"]
        status = "ok" if ok else group[0]["status"]

        def mean_of(field: str, ok: list[dict[str, Any]] = ok) -> float | None:
            return _mean([r[field] for r in ok if r.get(field) is not None])

        cells[key] = ApproxCell(mean_of("output_error"), mean_of("row_error"), mean_of("row_tv"),
                                mean_of("ref_entropy"), len(ok), status)
    params = {r["label"]: r.get("params", {}) for r in rows}
    return ApproxTable(labels, columns, cells, params)


def mqar_summary(records: list[dict[str, Any]]) -> MQARSummary | None:
    rows = [r for r in records if r.get("kind") == "mqar"]
    if not rows:
        return None
    seeds = tuple(sorted({r["seed"] for r in rows}))
    by_label: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r)
    out = []
    for label, group in by_label.items():
        acc = {r["seed"]: r["accuracy"] if r["status"] == "ok" else None for r in group}
        ok = [a for a in acc.values() if a is not None]
        out.append(MQARRow(label=label, variant=group[0]["variant"], params=group[0].get("params", {}),
                           causal=bool(group[0].get("causal")), accuracies=acc,
                           statuses={r["seed"]: r["status"] for r in group}, mean=_mean(ok),
                           low=min(ok) if ok else None, high=max(ok) if ok else None,
                           train_s=sum(r.get("train_s", 0.0) for r in group)))
    rho = None
    if len(seeds) >= 2:
        pairs = [(r.accuracies.get(seeds[0]), r.accuracies.get(seeds[1])) for r in out]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        if len(pairs) >= 3:
            rho = spearman([a for a, _ in pairs], [b for _, b in pairs])
    return MQARSummary(rows=tuple(out), config=rows[0].get("config", {}), seeds=seeds,
                       seed_rank_correlation=rho)


def measured_scores(records: list[dict[str, Any]]) -> dict[str, float]:
    """label -> mean held-out MQAR accuracy over the seeds that finished: the quality
    axis of a trade-off chart when a run measured it (variants without one are absent)."""
    summary = mqar_summary(records)
    if summary is None:
        return {}
    return {r.label: r.mean for r in summary.rows if r.mean is not None}

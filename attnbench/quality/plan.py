"""What a quality section measures: its settings, the list of measurements, one run.

A run of the suite's ``quality:`` section is a list of ``QualityTask``, one per
(measure, variant, N, regime, seed) for the approximation error and per
(variant, seed) for MQAR, each with a stable ``task_id`` so that a resumed run
skips what is already recorded. ``run_task`` measures one and returns its
record (a plain dict, one line of quality.jsonl).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from attnbench.quality import MEASURES, REGIMES
from attnbench.quality.approx import measure_approx
from attnbench.quality.mqar import MQARConfig, Progress, train_mqar

#: version of the quality records' layout
RECORD_SCHEMA = 1


@dataclass(frozen=True)
class ApproxSettings:
    """Sizes of the approximation-error measure."""

    seq_lens: tuple[int, ...] = (256, 1024)
    regimes: tuple[str, ...] = REGIMES
    seeds: tuple[int, ...] = (0,)
    dim: int = 256
    heads: int = 4


@dataclass(frozen=True)
class QualitySettings:
    """A suite's ``quality:`` section: which measures, their sizes, seeds and budget."""

    measures: tuple[str, ...] = MEASURES
    approx: ApproxSettings = field(default_factory=ApproxSettings)
    mqar: MQARConfig = field(default_factory=MQARConfig)
    mqar_seeds: tuple[int, ...] = (0, 1)
    #: label -> the variant's parameters at MQAR's N, replacing the suite's (a window
    #: of 256 is no pattern at N = 32)
    mqar_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    threads: int = 1  # torch threads while measuring quality

    def to_dict(self) -> dict[str, Any]:
        return {"measures": list(self.measures), "threads": self.threads,
                "approx": {"seq_lens": list(self.approx.seq_lens), "regimes": list(self.approx.regimes),
                           "seeds": list(self.approx.seeds), "dim": self.approx.dim,
                           "heads": self.approx.heads},
                "mqar": {**self.mqar.to_dict(), "seeds": list(self.mqar_seeds),
                         "params": {k: dict(v) for k, v in self.mqar_params.items()}}}


@dataclass(frozen=True)
class QualityVariant:
    """A variant as the suite names it: label, registry name, parameters."""

    label: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QualityTask:
    kind: str  # approx | mqar
    variant: QualityVariant
    seed: int
    seq_len: int | None = None  # approx only
    regime: str | None = None  # approx only

    @property
    def task_id(self) -> str:
        if self.kind == "approx":
            return f"approx/{self.variant.label}/N{self.seq_len}/{self.regime}/seed{self.seed}"
        return f"mqar/{self.variant.label}/seed{self.seed}"

    def describe(self) -> str:
        if self.kind == "approx":
            return f"approx {self.variant.label} N={self.seq_len} {self.regime} seed {self.seed}"
        return f"mqar {self.variant.label} seed {self.seed}"


def quality_tasks(settings: QualitySettings, variants: list[QualityVariant]) -> list[QualityTask]:
    """Every measurement of the section, the quick approximation errors first."""
    tasks: list[QualityTask] = []
    if "approx" in settings.measures:
        a = settings.approx
        tasks += [QualityTask("approx", v, seed, n, regime)
                  for v in variants for n in a.seq_lens for regime in a.regimes for seed in a.seeds]
    if "mqar" in settings.measures:
        tasks += [QualityTask("mqar", v, seed) for v in variants for seed in settings.mqar_seeds]
    return tasks


def run_task(task: QualityTask, settings: QualitySettings, progress: Progress | None = None,
             log_every: int = 50) -> dict[str, Any]:
    """Measure one task; its record: task_id, kind and the result's fields."""
    v = task.variant
    if task.kind == "approx":
        a = settings.approx
        result: Any = measure_approx(v.name, task.seq_len or 0, task.regime or "", seed=task.seed,
                                     dim=a.dim, heads=a.heads, params=v.params, label=v.label)
    elif task.kind == "mqar":
        params = settings.mqar_params.get(v.label, v.params)
        result = train_mqar(v.name, settings.mqar, seed=task.seed, params=params, progress=progress,
                            log_every=log_every, label=v.label)
    else:
        raise ValueError(f"unknown quality measure {task.kind!r}; choose one of {', '.join(MEASURES)}")
    return {"schema": RECORD_SCHEMA, "task_id": task.task_id, "kind": task.kind, **result.to_dict()}

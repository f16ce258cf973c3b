"""The quality section's tasks and their records (attnbench.quality.plan)."""

from __future__ import annotations

import json

import pytest

from attnbench.quality import NOT_AN_APPROXIMATION
from attnbench.quality.mqar import MQARConfig
from attnbench.quality.plan import (
    ApproxSettings,
    QualitySettings,
    QualityVariant,
    quality_tasks,
    run_task,
)

pytestmark = pytest.mark.usefixtures("one_thread")


SMALL = QualitySettings(approx=ApproxSettings(seq_lens=(64,), regimes=("gaussian", "peaked"), seeds=(0,),
                                              dim=64, heads=2),
                        mqar=MQARConfig(vocab=32, seq_len=16, pairs=2, dim=32, heads=2, steps=10,
                                        batch=8, warmup=2, eval_sequences=32),
                        mqar_seeds=(0, 1))
VARIANTS = [QualityVariant("softmax", "softmax"), QualityVariant("local-w8", "local", {"window": 8}),
            QualityVariant("aft", "aft")]


def test_tasks_cover_every_combination_with_stable_ids() -> None:
    tasks = quality_tasks(SMALL, VARIANTS)
    assert len(tasks) == 3 * 2 + 3 * 2
    ids = [t.task_id for t in tasks]
    assert len(set(ids)) == len(ids)
    assert "approx/local-w8/N64/peaked/seed0" in ids and "mqar/aft/seed1" in ids
    only_mqar = QualitySettings(measures=("mqar",), mqar=SMALL.mqar, mqar_seeds=(3,))
    assert [t.task_id for t in quality_tasks(only_mqar, VARIANTS)] == [
        "mqar/softmax/seed3", "mqar/local-w8/seed3", "mqar/aft/seed3"]


def test_each_task_gives_one_json_record() -> None:
    tasks = quality_tasks(SMALL, VARIANTS)
    seen: list[tuple[str, int]] = []
    records = [run_task(t, SMALL, lambda step, loss, acc, t=t: seen.append((t.task_id, step)), log_every=5)
               for t in tasks]
    assert [r["task_id"] for r in records] == [t.task_id for t in tasks]
    for r in records:
        json.dumps(r, allow_nan=False)  # one line of quality.jsonl
    assert ("mqar/softmax/seed0", 10) in seen
    statuses = {r["task_id"]: r["status"] for r in records}
    assert statuses["approx/aft/N64/gaussian/seed0"] == NOT_AN_APPROXIMATION
    assert statuses["mqar/aft/seed0"] == "ok"

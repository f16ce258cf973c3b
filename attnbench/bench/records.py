"""A finished case as the results record ``cases.jsonl`` stores: assembled from
the worker's typed messages and how the worker ended (the record schema is
``attnbench.store.results``'s)."""

from __future__ import annotations

import time
from typing import Any

from attnbench.bench.worker.messages import Failure, Meta, Outcome, PassResult
from attnbench.errors import VariantError
from attnbench.model import Case, Status, worst_status
from attnbench.store.results import RECORD_SCHEMA
from attnbench.variants import variant_info


def make_record(case: Case, outcome: Outcome, started: float, wall_s: float) -> dict[str, Any]:
    """The record of ``case``: the layer's facts, one entry per pass, and the
    case's status (the worst of its passes' and the worker's) and first error."""
    record: dict[str, Any] = {"schema": RECORD_SCHEMA, "case_id": case.case_id, "case": case.to_dict(),
                              "round": case.round, "started_at": started, "wall_s": wall_s,
                              "worker_pid": outcome.worker_pid, "passes": []}
    record.update(outcome.placement)
    error = None
    for message in outcome.messages:
        if isinstance(message, Meta):
            record.update(message.payload())
            if message.device_name != "cpu":  # the GPU's name, as the worker that used it saw it
                record["device_model"] = message.device_name
        elif isinstance(message, PassResult):
            record["passes"].append(message.payload())
        elif isinstance(message, Failure):
            record["status"] = message.status
            error = message.error
            if message.traceback:
                record["traceback"] = message.traceback
    if "family" not in record:
        try:
            record["family"] = variant_info(case.variant).family
        except (VariantError, ImportError):
            record["family"] = None
    statuses = [p["status"] for p in record["passes"]]
    if outcome.status:  # the worker died or hung: the passes it did not finish share that fate
        statuses.append(outcome.status)
        error = outcome.error
    elif "status" in record:
        statuses.append(record["status"])
    record["status"] = worst_status(statuses)
    if error is None:
        error = next((p["error"] for p in record["passes"] if p.get("error")), None)
    record["error"] = error
    return record


def finished_record(outcome: Outcome) -> dict[str, Any]:
    """The record of a case an executor ran."""
    return make_record(outcome.case, outcome, outcome.started, outcome.wall_s)


def skipped_record(case: Case, reason: str) -> dict[str, Any]:
    """The record of a case the skip policy kept from running."""
    outcome = Outcome(case=case, messages=[Failure(status=Status.SKIPPED, error=reason)])
    return make_record(case, outcome, time.time(), 0.0)

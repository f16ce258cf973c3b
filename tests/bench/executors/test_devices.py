"""Spreading a sweep on one machine (``--devices``,
attnbench.bench.executors.devices) and what every record says about where it
ran."""

from __future__ import annotations

import json
import socket

import pandas as pd
import pytest

from attnbench.bench.executors.base import WorkUnit
from attnbench.bench.executors.devices import DevicePoolExecutor, cpu_shares, parse_devices
from attnbench.bench.rundir import RunOptions
from attnbench.bench.sweep import run_suite
from attnbench.errors import AttnbenchError
from attnbench.store.results import CSV_COLUMNS
from attnbench.suite import load as suite_mod
from tests.helpers import SPREAD_SUITE, small_suite, write_suite

pytestmark = pytest.mark.usefixtures("faulty_variants")


@pytest.mark.parametrize("text,message", [
    ("cpu,cuda:0", "one kind of device"), ("gpu0", "not a device"), ("cuda:0,cuda:0", "named twice"),
    (",", "give cuda:0"), ("cuda:7", "not found"),
])
def test_bad_device_lists_are_refused(text, message):
    with pytest.raises(AttnbenchError, match=message):
        parse_devices(text)


def test_devices_all_and_cpu_lists():
    import torch

    if torch.cuda.is_available():
        assert parse_devices("all") == [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    else:
        with pytest.raises(AttnbenchError, match="no CUDA GPU"):
            parse_devices("all")
    assert parse_devices("cpu, cpu") == ["cpu", "cpu"]


def test_cpu_shares_are_disjoint_and_cover_the_cores():
    shares = cpu_shares(2)
    cores = [c for share in shares for c in share]
    assert len(cores) == len(set(cores)) and all(shares)
    with pytest.raises(AttnbenchError, match="at most one worker per core"):
        cpu_shares(10_000)


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    """A tiny suite plus a crash and a hang, on two CPU workers sharing the cores, and locally."""
    tmp = tmp_path_factory.mktemp("shared")
    suite = suite_mod.load(write_suite(tmp / "mixed.yaml", **{
        **SPREAD_SUITE, "limits": {"case_timeout_s": 2},
        "variants": ["faulty-abort", {"name": "faulty-hang", "seq_lens": [64]}, *SPREAD_SUITE["variants"]]}))
    local = run_suite(suite, RunOptions(out_dir=tmp / "local", quiet=True))
    shared = run_suite(suite, RunOptions(out_dir=tmp / "shared", quiet=True, devices=["cpu", "cpu"],
                                         allow_shared_cpu=True))
    return local, shared


@pytest.mark.slow
def test_shared_cpu_run_equals_a_local_one(shared_run):
    local, shared = shared_run
    assert {r["case_id"]: r["status"] for r in shared.records} == {r["case_id"]: r["status"] for r in local.records}
    got = {(r["case"]["label"], r["case"]["seq_len"]): r for r in shared.records}
    assert got[("faulty-abort", 32)]["status"] == "crashed" and got[("faulty-hang", 64)]["status"] == "timeout"
    assert got[("softmax", 64)]["status"] == "ok"  # after a timeout in its unit, in a new worker
    meta = json.loads((shared.run_dir / "run.json").read_text())
    share = meta["executor"]["shared_cpu"]
    assert meta["executor"]["devices"] == ["cpu", "cpu"] and share["workers"] == 2
    threads = {len(cores) for cores in share["cores"]}
    assert {r["threads"] for r in shared.records if r["status"] == "ok"} <= threads
    assert shared.exit_code == local.exit_code == 3


@pytest.mark.slow
def test_every_record_names_its_host_and_device(shared_run):
    local, shared = shared_run
    for summary in (local, shared):
        for record in summary.records:
            if record["status"] == "skipped":
                continue
            assert record["host"] == socket.gethostname()
            assert record["worker_device"] == "cpu" and record["device_model"]
        csv = pd.read_csv(summary.run_dir / "results.csv")
        assert list(csv.columns) == CSV_COLUMNS
        assert {"host", "worker_device", "device_model"} <= set(CSV_COLUMNS)
        assert set(csv.loc[csv["status"] == "ok", "host"]) == {socket.gethostname()}


@pytest.mark.slow
def test_each_setting_group_runs_on_one_worker(tmp_path):
    """Without faults (a crash replaces its worker), a setting group's variants share one worker."""
    suite = suite_mod.parse(small_suite(**SPREAD_SUITE))
    summary = run_suite(suite, RunOptions(out_dir=tmp_path, quiet=True, devices=["cpu", "cpu"],
                                          allow_shared_cpu=True))
    pids = {}
    for visit in summary.visits:  # a round of a setting group: one worker; the next round: a fresh one
        pids.setdefault((visit["case"]["seq_len"], visit["round"]), set()).add(visit["worker_pid"])
    assert len(pids) == 6 and all(len(p) == 1 for p in pids.values())
    by_round = [set().union(*(p for (_, r), p in pids.items() if r == k)) for k in (0, 1)]
    assert not by_round[0] & by_round[1]  # each visit of a case in another process
    assert summary.exit_code == 0


@pytest.mark.slow
def test_device_pool_runs_a_unit_directly():
    """The executor on its own: run() hands back every case of the unit, in order."""
    cases = suite_mod.parse(small_suite(**SPREAD_SUITE)).cases()[:2]
    executor = DevicePoolExecutor(["cpu"], [])
    try:
        events = list(executor.run(cases))
    finally:
        executor.close()
    outcomes = [e for e in events if hasattr(e, "messages")]
    assert [o.case.case_id for o in outcomes] == [c.case_id for c in cases]
    assert all(o.status is None and o.placement["worker_device"] == "cpu" for o in outcomes)
    assert executor.in_flight == 0 and WorkUnit(tuple(cases)).cases == tuple(cases)

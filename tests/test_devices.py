"""Spreading a sweep on one machine (``--devices``) and what every record
says about where it ran; the options that choose an executor; and the
report's refusal to pair figures from different device models."""

from __future__ import annotations

import json
import shutil
import socket
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from attnbench.analysis.baseline import MixedDevicesError, check_pairable
from attnbench.bench.executors.base import WorkUnit
from attnbench.bench.executors.devices import DevicePoolExecutor, cpu_shares, parse_devices
from attnbench.bench.executors.spread import spread_options
from attnbench.bench.rundir import RunOptions
from attnbench.bench.sweep import plan_units, run_suite
from attnbench.cli.app import app
from attnbench.errors import AttnbenchError
from attnbench.store.results import CSV_COLUMNS, load_run, rewrite_records
from attnbench.suite import load as suite_mod

TIMING = "timing: {warmup: 0, max_reps: 2, min_reps: 1, min_time_s: 0.01, rounds: 2}"
TINY = f"""\
name: tiny
defaults: {{dim: 32, passes: [forward, backward]}}
grid: {{seq_lens: [32, 64, 96], heads: [2], devices: [cpu]}}
variants: [softmax, fastformer, {{name: linformer, params: {{k: 16}}}}]
{TIMING}
"""


def flat(output: str) -> str:
    return output.replace("\n", "")


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture(scope="module", autouse=True)
def faulty_variants():
    import faulty_variants

    faulty_variants.register_all()
    yield faulty_variants
    faulty_variants.unregister_all()


# --- options ------------------------------------------------------------------------------

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


@pytest.mark.parametrize("kwargs,message", [
    ({"address": "auto"}, "--address is the Ray cluster"),
    ({"executor": "slurm"}, "choose local or ray"),
    ({"allow_shared_cpu": True}, "--allow-shared-cpu goes with --devices"),
    ({"devices": "cpu", "in_process": True}, "--in-process"),
    ({"devices": "cpu", "device": "cuda"}, "disagree"),
])
def test_conflicting_options_are_refused(kwargs, message):
    with pytest.raises(AttnbenchError, match=message):
        spread_options(**kwargs)


def test_ray_missing_is_one_message_and_exit_2(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails as if not installed
    suite = write(tmp_path / "tiny.yaml", TINY)
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path / "r"), "--executor", "ray"])
    assert result.exit_code == 2, result.output
    assert 'pip install "attnbench[ray]"' in flat(result.output) and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_cpu_shares_are_disjoint_and_cover_the_cores():
    shares = cpu_shares(2)
    cores = [c for share in shares for c in share]
    assert len(cores) == len(set(cores)) and all(shares)
    with pytest.raises(AttnbenchError, match="at most one worker per core"):
        cpu_shares(10_000)


def test_units_are_setting_groups_only_when_distributed():
    cases = suite_mod.parse(TINY).cases()
    assert [len(u.cases) for u in plan_units(cases)] == [1] * len(cases)
    groups = plan_units(cases, by_setting=True)
    assert [len(u.cases) for u in groups] == [3, 3, 3]
    assert all(len({c.seq_len for c in u.cases}) == 1 for u in groups)
    assert sorted(c.label for c in groups[0].cases) == ["fastformer", "linformer", "softmax"]
    assert [u.cases[0].seq_len for u in groups] == [32, 64, 96]  # the first round: smaller N first


# --- runs -----------------------------------------------------------------------------------

def test_several_cpu_workers_need_consent(tmp_path):
    suite = write(tmp_path / "tiny.yaml", TINY)
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path / "r"), "--devices", "cpu,cpu"])
    assert result.exit_code == 2 and "--allow-shared-cpu" in flat(result.output), result.output
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    """A tiny suite plus a crash and a hang, on two CPU workers sharing the cores, and locally."""
    tmp = tmp_path_factory.mktemp("shared")
    text = TINY.replace("variants: [", "variants: [faulty-abort, {name: faulty-hang, seq_lens: [64]}, ") + \
        "limits: {case_timeout_s: 2}\n"
    suite = suite_mod.load(write(tmp / "mixed.yaml", text))
    local = run_suite(suite, RunOptions(out_dir=tmp / "local", quiet=True))
    shared = run_suite(suite, RunOptions(out_dir=tmp / "shared", quiet=True, devices=["cpu", "cpu"],
                                         allow_shared_cpu=True))
    return local, shared


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


def test_every_record_names_its_host_and_device(shared_run):
    local, shared = shared_run
    for summary in (local, shared):
        for record in summary.records:
            if record["status"] == "skipped":
                continue
            assert record["host"] == socket.gethostname()
            assert record["worker_device"] == "cpu" and record["device_model"]
        csv = pd.read_csv(summary.run_dir / "results.csv")
        assert list(csv.columns) == CSV_COLUMNS and CSV_COLUMNS[-3:] == ["host", "worker_device", "device_model"]
        assert set(csv.loc[csv["status"] == "ok", "host"]) == {socket.gethostname()}


def test_each_setting_group_runs_on_one_worker(tmp_path):
    """Without faults (a crash replaces its worker), a setting group's variants share one worker."""
    suite = suite_mod.parse(TINY)
    summary = run_suite(suite, RunOptions(out_dir=tmp_path, quiet=True, devices=["cpu", "cpu"],
                                          allow_shared_cpu=True))
    pids = {}
    for visit in summary.visits:  # a round of a setting group: one worker; the next round: a fresh one
        pids.setdefault((visit["case"]["seq_len"], visit["round"]), set()).add(visit["worker_pid"])
    assert len(pids) == 6 and all(len(p) == 1 for p in pids.values())
    by_round = [set().union(*(p for (_, r), p in pids.items() if r == k)) for k in (0, 1)]
    assert not by_round[0] & by_round[1]  # each visit of a case in another process
    assert summary.exit_code == 0


def test_device_pool_runs_a_unit_directly():
    """The executor on its own: run() hands back every case of the unit, in order."""
    cases = suite_mod.parse(TINY).cases()[:2]
    executor = DevicePoolExecutor(["cpu"], [])
    try:
        events = list(executor.run(cases))
    finally:
        executor.close()
    outcomes = [e for e in events if hasattr(e, "messages")]
    assert [o.case.case_id for o in outcomes] == [c.case_id for c in cases]
    assert all(o.status is None and o.placement["worker_device"] == "cpu" for o in outcomes)
    assert executor.in_flight == 0 and WorkUnit(tuple(cases)).cases == tuple(cases)


# --- the report refuses mixed device models ---------------------------------------------------

def test_report_refuses_to_pair_different_device_models(shared_run, tmp_path):
    local, _ = shared_run
    run_dir = tmp_path / "mixed"
    shutil.copytree(local.run_dir, run_dir)
    records = load_run(run_dir).records
    check_pairable(load_run(run_dir).frame())  # one model: fine
    for record in records:  # as if fastformer's cases were resumed on another machine
        if record["case"]["label"] == "fastformer":
            record["device_model"] = "Other CPU 9000"
    rewrite_records(run_dir / "cases.jsonl", records)
    with pytest.raises(MixedDevicesError, match="Other CPU 9000: fastformer"):
        check_pairable(load_run(run_dir).frame())
    for args in (["report", str(run_dir)], ["compare", str(run_dir)], ["compare", str(run_dir), "--json"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "different device models" in flat(result.output) and "Traceback" not in result.output
    # Comparing two runs case by case is what before/after means: still allowed.
    result = CliRunner().invoke(app, ["compare", str(local.run_dir), str(run_dir)])
    assert result.exit_code == 0, result.output


def test_an_interrupt_inside_ray_code_stays_an_interrupt():
    """Ray's compiled code turns an exception raised by a signal handler into a
    SystemError; the Ray executor hands the sweep the interrupt itself."""
    from attnbench.bench.executors.ray_executor import signals_pass_through
    from attnbench.bench.signals import Interrupted

    def compiled_call_interrupted():
        try:
            raise Interrupted("SIGINT")
        except Interrupted as exc:
            raise SystemError("<cyfunction CoreWorker.wait> returned a result with an exception set") from exc

    with pytest.raises(Interrupted):
        with signals_pass_through():
            compiled_call_interrupted()
    with pytest.raises(SystemError):  # a SystemError of its own stays one
        with signals_pass_through():
            raise SystemError("something else")

"""``--executor ray`` (attnbench.bench.executors.ray_executor): a local Ray
cluster, started here on loopback (see conftest) and shut down at the end, runs the units; the run must be what a
local run gives (cases, statuses, columns), faults must be recorded as
locally, a killed driver must resume without duplicates, and a lost Ray
worker is retried once and recorded.

Needs Ray (``pip install -e ".[ray]"``); skipped without it. Marked ``ray``:
CI runs these in a step of their own (``pytest -m ray``).
"""

from __future__ import annotations

import json
import shlex
import signal
import time

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from attnbench.bench.executors.ray_executor import RayExecutor  # noqa: E402
from attnbench.bench.rundir import RunOptions  # noqa: E402
from attnbench.bench.sweep import run_suite  # noqa: E402
from attnbench.store.results import load_run  # noqa: E402
from attnbench.suite import load as suite_mod  # noqa: E402 - after the skip
from tests.helpers import SPREAD_SUITE, small_suite, start_cli, wait_for_cases, write_suite  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("faulty_variants")]

TIMING = {"warmup": 0, "max_reps": 2, "min_reps": 1, "min_time_s": 0.01, "rounds": 1}

# One setting group per N: the faults share units with working variants.
FAULTS = {"name": "faults", "grid": {"seq_lens": [64, 128], "heads": [2], "devices": ["cpu"]},
          "variants": ["faulty-abort", "softmax", {"name": "faulty-hang", "seq_lens": [64]}, "faulty-oom",
                       {"name": "faulty-oomkill", "seq_lens": [64]}, "faulty-raise"],
          "timing": TIMING, "limits": {"case_timeout_s": 3}}

SLOW = {"name": "slow", "grid": {"seq_lens": [16, 32, 48, 64, 80, 96], "heads": [2], "devices": ["cpu"]},
        "variants": [{"name": "faulty-slow", "params": {"delay_s": 0.15}}],
        "timing": {"warmup": 0, "max_reps": 2, "min_reps": 2, "min_time_s": 0.01, "rounds": 1}}


@pytest.fixture(scope="module")
def cluster():
    """A Ray cluster of this test module only, on loopback; its address for other drivers."""
    assert not ray.is_initialized()
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    address = ray.get_runtime_context().gcs_address
    print(f"\nray.init: {time.perf_counter() - t0:.1f} s at {address}")
    assert address.startswith("127.0.0.1:")
    yield address
    ray.shutdown()


def run(suite_text: dict, out, executor: str = "local", resume=None):
    """``suite_text`` (tests.helpers.small_suite's keywords) run into ``out``, locally or on Ray."""
    path = write_suite(out.parent / f"{out.name}.yaml", **suite_text)
    suite = suite_mod.load(path)
    options = RunOptions(out_dir=out, quiet=True, executor=executor, resume=resume)
    executor_object = RayExecutor(["faulty_variants"], device_kind="cpu") if executor == "ray" else None
    t0 = time.perf_counter()
    summary = run_suite(suite, options, executor_object)
    return summary, time.perf_counter() - t0


def statuses(records: list[dict]) -> dict[str, str]:
    return {r["case_id"]: r["status"] for r in records}


def test_a_suite_through_ray_equals_a_local_run(cluster, tmp_path):
    local, local_s = run(SPREAD_SUITE, tmp_path / "local")
    remote, remote_s = run(SPREAD_SUITE, tmp_path / "ray", "ray")
    print(f"\ntiny suite, {len(local.records)} cases: local {local_s:.1f} s, ray {remote_s:.1f} s")
    assert local.exit_code == remote.exit_code == 0
    assert statuses(remote.records) == statuses(local.records)
    a, b = pd.read_csv(local.run_dir / "results.csv"), pd.read_csv(remote.run_dir / "results.csv")
    assert list(a.columns) == list(b.columns)
    assert sorted(zip(a["case_id"], a["pass"], strict=True)) == sorted(zip(b["case_id"], b["pass"], strict=True))
    meta = json.loads((remote.run_dir / "run.json").read_text())
    assert meta["executor"]["kind"] == "ray" and meta["executor"]["task"] == {"num_cpus": 2}
    for record in remote.records:  # where it ran, and each setting group on one worker
        assert record["host"] and record["worker_device"] == "cpu" and record["device_model"]
        assert record["ray_node"] and "retry" not in record
    pids, starts = {}, {}
    for visit in load_run(remote.run_dir).visits:  # one worker per setting group and round
        unit = (visit["case"]["seq_len"], visit["round"])
        pids.setdefault(unit, set()).add(visit["worker_pid"])
        starts.setdefault(unit, set()).add(visit["started_at"])
    assert len(pids) == 6 and all(len(p) == 1 for p in pids.values())
    assert all(len(s) == 1 for s in starts.values())  # measured together, in turns, as locally


def test_faults_in_ray_tasks_are_recorded_like_local_ones(cluster, tmp_path):
    local, _ = run(FAULTS, tmp_path / "local")
    remote, _ = run(FAULTS, tmp_path / "ray", "ray")
    assert statuses(remote.records) == statuses(local.records)
    got = {(r["case"]["label"], r["case"]["seq_len"]): r for r in remote.records}
    assert got[("faulty-abort", 64)]["status"] == "crashed" and "SIGABRT" in got[("faulty-abort", 64)]["error"]
    # In turns its own share of the unit's time counts; alone when a crash
    # before it (the order is the run's random one) sent the rest off alone.
    hang = got[("faulty-hang", 64)]
    assert hang["status"] == "timeout" and "limits.case_timeout_s (3 s" in hang["error"]
    assert got[("faulty-oom", 64)]["status"] == "oom"
    assert got[("faulty-oomkill", 64)]["status"] == "oom"
    assert got[("faulty-oom", 128)]["status"] == "skipped"  # the series' larger N, as locally
    assert got[("faulty-raise", 128)]["status"] == "error"
    assert got[("softmax", 64)]["status"] == got[("softmax", 128)]["status"] == "ok"
    assert remote.exit_code == local.exit_code == 3


def test_a_lost_ray_worker_is_retried_once_then_crashed(cluster, tmp_path):
    suite = {**FAULTS, "variants": [{"name": "faulty-killhost", "seq_lens": [64]}, "softmax", "faulty-oom",
                                    {"name": "faulty-oomkill", "seq_lens": [64]}, "faulty-raise"]}
    summary, _ = run(suite, tmp_path / "ray", "ray")
    got = {(r["case"]["label"], r["case"]["seq_len"]): r for r in summary.records}
    lost = got[("faulty-killhost", 64)]
    assert lost["status"] == "crashed"
    assert "the Ray worker died" in lost["error"] and "again after a retry" in lost["error"]
    assert lost["retry"]["attempt"] == 2  # it was sent again once, and said so
    # The unit was measured in turns: after the first death every other case
    # of it ran again, one after another, and says so.
    visits = load_run(summary.run_dir).visits
    for visit in visits:
        if visit["case"]["label"] == "faulty-killhost":
            continue
        assert visit["status"] in ("ok", "oom", "error", "skipped"), visit["error"]
        if visit["case"]["seq_len"] == 64 and visit["status"] != "skipped":
            assert visit["retry"]["attempt"] == 2 and "the Ray worker died" in visit["retry"]["after"]
        else:
            assert "retry" not in visit
    assert len(summary.records) == len(suite_mod.parse(small_suite(**suite)).cases())


def test_killed_driver_resumes_without_duplicates(cluster, tmp_path):
    suite = write_suite(tmp_path / "slow.yaml", **SLOW)
    out = tmp_path / "results"
    proc = start_cli(["run", str(suite), "--out", str(out), "-q", "--executor", "ray", "--address", cluster],
                     tmp_path, start_new_session=True)
    run_dir = wait_for_cases(out, 2, proc, timeout_s=180)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: Ray must drop its tasks
    proc.communicate(timeout=60)
    before = load_run(run_dir).records
    assert 2 <= len(before) < 6
    summary, _ = run(SLOW, out, "ray", resume=run_dir)
    assert summary.exit_code == 0
    lines = (run_dir / "cases.jsonl").read_text().splitlines()
    ids = [json.loads(line)["case_id"] for line in lines]
    assert len(ids) == len(set(ids)) == 6  # every case once
    assert all(r["status"] == "ok" for r in load_run(run_dir).records)


def test_ctrl_c_cancels_ray_tasks_and_says_how_to_resume(cluster, tmp_path):
    suite = write_suite(tmp_path / "slow.yaml", **SLOW)
    out = tmp_path / "results"
    proc = start_cli(["run", str(suite), "--out", str(out), "-q", "--executor", "ray", "--address", cluster],
                     tmp_path, start_new_session=True)
    run_dir = wait_for_cases(out, 2, proc, timeout_s=180)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    line = next(ln for ln in stderr.splitlines() if "--resume" in ln)
    command = shlex.split(line.strip())
    assert command[3:7] == ["--executor", "ray", "--address", cluster] and command[-1] == str(run_dir)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    done = len(load_run(run_dir).visits)
    time.sleep(1.0)  # a cancelled task writes nothing: only the driver writes
    assert len((run_dir / "cases.jsonl").read_text().splitlines()) == done


def test_an_address_where_nothing_answers_is_refused_at_once(tmp_path):
    suite = write_suite(tmp_path / "slow.yaml", **SLOW)
    proc = start_cli(["run", str(suite), "--out", str(tmp_path / "r"), "--executor", "ray", "--address",
                      "127.0.0.1:1"], tmp_path, start_new_session=True)
    _, stderr = proc.communicate(timeout=120)  # Ray alone would retry for minutes
    assert proc.returncode == 2, stderr
    assert "--address 127.0.0.1:1: nothing answers there" in stderr.replace("\n", "")
    assert not (tmp_path / "r").exists()

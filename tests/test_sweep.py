"""Sweeps that never lose work: real sweeps through worker processes with
variants that fail on purpose (tests/faulty_variants.py), interruption by
SIGINT/SIGTERM, and --resume.

Every suite here is tiny (dim 32, N 64/128, no warm-up, two samples) so that
the time goes to the faults themselves: one timeout, a few worker starts.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from typer.testing import CliRunner

from attnbench.bench.executors.base import Executor
from attnbench.bench.rundir import RunOptions
from attnbench.bench.skip import skip_reason
from attnbench.bench.sweep import plan_units, run_suite
from attnbench.bench.worker.messages import CaseStarted, Failure, Outcome, PassResult
from attnbench.cli.app import app
from attnbench.model import Status
from attnbench.store.results import load_run
from attnbench.suite import load as suite_mod

TESTS = Path(__file__).resolve().parent  # on the path (pyproject: pytest pythonpath): faulty_variants

TIMING = "timing: {rounds: 1, warmup: 0, max_reps: 2, min_reps: 1, min_time_s: 0.01}"

FAULTS_SUITE = f"""\
name: faults
defaults: {{dim: 32, passes: [forward, backward]}}
grid: {{seq_lens: [64, 128], heads: [2]}}
variants:
  - faulty-raise
  - faulty-abort
  - softmax              # right after two crashes: runs, in a new worker
  - name: faulty-hang
    seq_lens: [64]
  - name: faulty-slow    # right after a timeout: runs, in a new worker
    params: {{delay_s: 0.0}}
  - faulty-oom
  - name: faulty-hog
    params: {{size_mib: 1024}}
  - name: faulty-oomkill
    seq_lens: [64]
{TIMING}
limits: {{case_timeout_s: 4, memory_limit_mib: 256}}
"""

# Slow enough to interrupt (about 0.5 s a case, asleep rather than computing).
SLOW_SUITE = """\
name: slow
defaults: {dim: 32, passes: [forward]}
grid: {seq_lens: [16, 32, 48, 64, 80, 96], heads: [2]}
variants:
  - name: faulty-slow
    params: {delay_s: 0.12}
timing: {warmup: 0, max_reps: 2, min_reps: 2, min_time_s: 0.01}
"""

OK_SUITE = f"""\
name: ok
defaults: {{dim: 32, passes: [forward, backward]}}
grid: {{seq_lens: [64, 128], heads: [2]}}
variants: [softmax, fastformer]
{TIMING}
"""

# The CLI in a subprocess, knowing the test variants (a worker imports their module).
CLI = "import faulty_variants; from attnbench.cli.app import app; app(prog_name='attnbench')"


@pytest.fixture(scope="module", autouse=True)
def faulty_variants():
    import faulty_variants

    faulty_variants.register_all()
    yield faulty_variants
    faulty_variants.unregister_all()


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def flat(output: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return output.replace("\n", "")


def by_label(records: list[dict]) -> dict[tuple[str, int], dict]:
    return {(r["case"]["label"], r["case"]["seq_len"]): r for r in records}


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    suite = suite_mod.load(write(tmp / "faults.yaml", FAULTS_SUITE))
    t0 = time.perf_counter()
    summary = run_suite(suite, RunOptions(out_dir=tmp / "results", quiet=True))
    return summary, time.perf_counter() - t0


def test_each_fault_has_its_status(fault_run):
    summary, _ = fault_run
    got = {key: (r["status"], r["error"] or "") for key, r in by_label(summary.records).items()}
    for n in (64, 128):
        status, error = got[("faulty-raise", n)]
        assert status == "error" and "ValueError: faulty variant raised on purpose" in error
        status, error = got[("faulty-abort", n)]
        assert status == "crashed" and "SIGABRT" in error
        assert got[("softmax", n)] == ("ok", "")
        assert got[("faulty-slow", n)] == ("ok", "")
    status, error = got[("faulty-hang", 64)]
    assert status == "timeout" and "case_timeout_s (4 s)" in error
    status, error = got[("faulty-oom", 64)]
    assert status == "oom" and "out of memory" in error
    status, error = got[("faulty-hog", 64)]
    assert status == "oom" and "can't allocate memory" in error  # limits.memory_limit_mib, not the machine
    status, error = got[("faulty-oomkill", 64)]
    assert status == "oom" and "out-of-memory killer" in error
    for label in ("faulty-oom", "faulty-hog"):  # larger N of an OOM series are not even tried
        status, error = got[(label, 128)]
        assert status == "skipped" and "N=64 of this series ran out of memory" in error
    assert len(summary.records) == len(suite_mod.parse(FAULTS_SUITE).cases())
    assert summary.exit_code == 3 and not summary.interrupted


def test_good_cases_are_measured_in_full(fault_run):
    summary, _ = fault_run
    for key, record in by_label(summary.records).items():
        if key[0] in ("softmax", "faulty-slow"):
            assert [p["pass"] for p in record["passes"]] == ["forward", "backward"]
            assert all(p["status"] == "ok" and p["samples_ms"] for p in record["passes"])


def test_dead_workers_are_replaced_and_live_ones_reused(fault_run):
    summary, _ = fault_run
    records = by_label(summary.records)
    pid = {key: r["worker_pid"] for key, r in records.items()}
    # An exception does not cost the worker; a crash, a timeout or a kill does.
    assert pid[("faulty-raise", 64)] == pid[("faulty-raise", 128)] == pid[("faulty-abort", 64)]
    assert len({pid[("faulty-abort", 64)], pid[("faulty-abort", 128)], pid[("softmax", 64)]}) == 3
    assert pid[("softmax", 64)] == pid[("softmax", 128)] == pid[("faulty-hang", 64)]
    assert pid[("faulty-slow", 64)] != pid[("faulty-hang", 64)]
    assert pid[("faulty-oom", 64)] == pid[("faulty-hog", 64)] == pid[("faulty-oomkill", 64)]
    assert pid[("faulty-slow", 64)] == pid[("faulty-oom", 64)]
    assert summary.workers_started == 4
    for p in set(pid.values()) - {None}:  # none left behind
        assert not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE


def test_disk_holds_every_case_and_the_table_shows_failures(fault_run):
    summary, _ = fault_run
    lines = (summary.run_dir / "cases.jsonl").read_text().splitlines()
    assert len(lines) == len(summary.records)
    csv = pd.read_csv(summary.run_dir / "results.csv")
    statuses = csv.drop_duplicates("case_id").set_index("label")["status"].to_dict()
    assert {"error", "crashed", "timeout", "oom", "skipped", "ok"} <= set(csv["status"])
    assert statuses["faulty-hang"] == "timeout"
    meta = json.loads((summary.run_dir / "run.json").read_text())
    assert meta["status"] == "finished" and meta["cases_done"] == meta["cases_total"] == len(lines)
    result = CliRunner().invoke(app, ["report", str(summary.run_dir)])
    assert result.exit_code == 0, result.output
    assert "cases that did not succeed" in result.output
    for shown in ("OOM", "timeout", "crashed", "error", "skipped"):
        assert shown in result.output


def test_cli_run_exits_3_when_a_case_failed(tmp_path):
    suite = write(tmp_path / "mixed.yaml", f"""\
        name: mixed
        defaults: {{dim: 32, passes: [forward]}}
        grid: {{seq_lens: [64], heads: [2]}}
        variants: [faulty-raise, softmax]
        {TIMING}
        """)
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path / "r"), "-q"])
    assert result.exit_code == 3, result.output
    assert "cases that did not succeed" in result.output
    assert "faulty variant raised on purpose" in result.output
    assert "Traceback" not in result.output


def test_skip_when_the_estimate_exceeds_free_memory(monkeypatch):
    suite = suite_mod.parse(OK_SUITE)
    small, large = [c for c in suite.cases() if c.label == "softmax" and c.heads == 2]
    done = [{"case": small.to_dict(), "status": "ok",
             "passes": [{"pass": "forward", "status": "ok", "peak_mem_mib": 600.0}]}]

    class Memory:
        available = 2048 * (1 << 20)

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Memory)
    reason = skip_reason(large, done)  # 600 MiB x (128/64)^2 x 1.2 > 2048 - 1024 margin
    assert reason and "estimated peak memory" in reason and "exceeds the available" in reason
    Memory.available = 64 * (1 << 30)
    assert skip_reason(large, done) is None


# --- interruption and resume -----------------------------------------------------------

def start_cli(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "COLUMNS": "300",
           "PYTHONPATH": os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.Popen([sys.executable, "-c", CLI, *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_cases(out: Path, count: int, proc: subprocess.Popen, timeout_s: float = 120) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = list(out.glob("*/cases.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= count:
            return found[0].parent
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be interrupted: {proc.communicate()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("no cases finished in time")


def interrupt(tmp_path: Path, signum: int) -> tuple[Path, Path, str, subprocess.CompletedProcess]:
    suite = write(tmp_path / "slow.yaml", SLOW_SUITE)
    out = tmp_path / "results"
    proc = start_cli(["run", str(suite), "--out", str(out), "-q"], tmp_path)
    run_dir = wait_for_cases(out, 2, proc)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    return suite, run_dir, stderr, subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def check_interrupted(run_dir: Path, stderr: str, returncode: int) -> list[dict]:
    assert returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted" in stderr and "Resume with" in stderr
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "interrupted"
    run = load_run(run_dir)
    assert 2 <= len(run.records) < 6 and all(r["status"] == "ok" for r in run.records)
    csv = pd.read_csv(run_dir / "results.csv")
    assert set(csv["case_id"]) == {r["case_id"] for r in run.records}
    # The case in flight was stopped: its worker is gone.
    for pid in {r["worker_pid"] for r in run.records}:
        for _ in range(50):
            if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"worker {pid} outlived the interrupted run")
    return run.records


def test_sigint_then_resume_equals_an_uninterrupted_run(tmp_path):
    suite, run_dir, stderr, proc = interrupt(tmp_path, signal.SIGINT)
    check_interrupted(run_dir, stderr, proc.returncode)
    line = next(ln for ln in stderr.splitlines() if "--resume" in ln)
    command = shlex.split(line.strip())
    assert command[:3] == ["attnbench", "run", str(suite)] and command[-2:] == ["--resume", str(run_dir)]

    result = CliRunner().invoke(app, command[1:] + ["-q"])
    assert result.exit_code == 0, result.output
    resumed = load_run(run_dir)

    full = run_suite(suite_mod.load(suite), RunOptions(out_dir=tmp_path / "full", quiet=True))
    assert full.exit_code == 0
    assert {r["case_id"] for r in resumed.records} == {r["case_id"] for r in full.records}
    assert all(r["status"] == "ok" for r in resumed.records)
    assert len((run_dir / "cases.jsonl").read_text().splitlines()) == len(full.visits)  # nothing ran twice
    csv = pd.read_csv(run_dir / "results.csv")
    assert len(csv) == len(full.records) and csv["case_id"].is_unique
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"


def signal_after(out: Path, count: int, signum: int) -> threading.Thread:
    """A thread that sends ``signum`` to this process once ``count`` cases are
    on disk under ``out`` and the next one has started."""

    def send() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = list(out.glob("*/cases.jsonl"))
            if found and len(found[0].read_text().splitlines()) >= count:
                break
            time.sleep(0.02)
        time.sleep(0.1)  # into the next case
        os.kill(os.getpid(), signum)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def test_sigterm_behaves_like_sigint(tmp_path):
    suite = write(tmp_path / "slow.yaml", SLOW_SUITE)
    out = tmp_path / "results"
    thread = signal_after(out, 2, signal.SIGTERM)
    try:
        result = CliRunner().invoke(app, ["run", str(suite), "--out", str(out), "-q"])
    finally:
        thread.join()
    run_dir = next(out.iterdir())
    check_interrupted(run_dir, result.output, result.exit_code)
    assert f"--resume {run_dir}" in flat(result.output)


@pytest.mark.parametrize("in_process", [False, True])
def test_interrupt_stops_the_sweep_in_either_mode(tmp_path, in_process):
    """Ctrl-C while a case runs stops the sweep (in-process too: no variant's
    ``except Exception`` may turn it into an error record)."""
    suite = suite_mod.load(write(tmp_path / "slow.yaml", SLOW_SUITE))
    out = tmp_path / "results"
    handler = signal.getsignal(signal.SIGINT)
    thread = signal_after(out, 2, signal.SIGINT)
    try:
        summary = run_suite(suite, RunOptions(out_dir=out, quiet=True, in_process=in_process))
    finally:
        thread.join()
    assert summary.interrupted and summary.exit_code == 130
    assert 2 <= len(summary.records) < 6
    assert all(r["status"] == "ok" for r in summary.records)
    assert signal.getsignal(signal.SIGINT) is handler  # handlers restored


@pytest.fixture(scope="module")
def finished_template(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finished")
    summary = run_suite(suite_mod.parse(OK_SUITE), RunOptions(out_dir=tmp, quiet=True))
    assert summary.exit_code == 0
    return summary.run_dir


@pytest.fixture
def finished_run(tmp_path, finished_template):
    """A finished run of OK_SUITE (a copy per test) and the suite's file."""
    suite_path = write(tmp_path / "ok.yaml", OK_SUITE)
    run_dir = tmp_path / "results" / finished_template.name
    shutil.copytree(finished_template, run_dir)
    return suite_path, run_dir


def test_truncated_last_line_is_tolerated_and_reported(finished_run):
    suite_path, run_dir = finished_run
    jsonl = run_dir / "cases.jsonl"
    lines = jsonl.read_text().splitlines()
    lost = json.loads(lines[-1])["case_id"]
    jsonl.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])  # cut mid-write

    result = CliRunner().invoke(app, ["run", str(suite_path), "--resume", str(run_dir), "-q"])
    assert result.exit_code == 0, result.output
    assert "truncated last line" in flat(result.output) and "cases.jsonl:4" in flat(result.output)
    run = load_run(run_dir)
    assert not run.warnings  # the cut line was dropped, the case ran again
    assert len(run.records) == 4 and all(r["status"] == "ok" for r in run.records)
    assert lost in {r["case_id"] for r in run.records}
    assert all(json.loads(ln) for ln in jsonl.read_text().splitlines())


def test_a_changed_suite_is_refused_on_resume(finished_run):
    suite_path, run_dir = finished_run
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    changed = OK_SUITE.replace("max_reps: 2", "max_reps: 3").replace(
        "variants: [softmax, fastformer]",
        "variants: [softmax, {name: fastformer, params: {share_qv: false}}]")
    write(suite_path, changed)
    result = CliRunner().invoke(app, ["run", str(suite_path), "--resume", str(run_dir), "-q"])
    assert result.exit_code == 2, result.output
    assert "the suite changed since this run" in flat(result.output)
    assert "timing.max_reps: 2 -> 3" in flat(result.output)
    assert "share_qv" in flat(result.output)
    assert "Traceback" not in result.output
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # nothing written


def test_changed_passes_are_refused_but_new_sizes_are_not(finished_run):
    suite_path, run_dir = finished_run
    write(suite_path, OK_SUITE.replace("passes: [forward, backward]", "passes: [forward]"))
    result = CliRunner().invoke(app, ["run", str(suite_path), "--resume", str(run_dir), "-q"])
    assert result.exit_code == 2 and "passes" in result.output, result.output
    # More N is not a different experiment: only the new cases run.
    write(suite_path, OK_SUITE.replace("seq_lens: [64, 128]", "seq_lens: [64, 128, 96]"))
    result = CliRunner().invoke(app, ["run", str(suite_path), "--resume", str(run_dir), "-q"])
    assert result.exit_code == 0, result.output
    assert len(load_run(run_dir).records) == 6


# --- the executor seam -----------------------------------------------------------------

class ScriptedExecutor(Executor):
    """An executor that runs nothing: it reports each case as the script says
    (an out-of-memory at one N), so the sweep's own part can be watched."""

    def __init__(self, oom_at: int) -> None:
        self.oom_at = oom_at
        self.handed: list[list[int]] = []
        self.closed = None

    def run(self, cases):
        self.handed.append([c.seq_len for c in cases])
        for case in cases:
            yield CaseStarted(case)
            if case.seq_len == self.oom_at:
                messages = [Failure(status=Status.OOM, error="out of memory (scripted)")]
            else:
                messages = [PassResult(pass_name=p, samples_ms=[1.0, 1.1], peak_mem_mib=1.0, memory_measured=True)
                            for p in case.passes]
            yield Outcome(case=case, messages=messages, worker_pid=0, started=1.0, wall_s=0.5)

    def close(self, interrupted: bool = False) -> None:
        self.closed = interrupted


def test_the_sweep_plans_units_skips_after_an_oom_and_records_what_the_executor_yields(tmp_path):
    suite = suite_mod.parse(f"""\
name: seam
grid: {{seq_lens: [16, 32, 64, 128], heads: [2]}}
defaults: {{dim: 32, passes: [forward]}}
variants: [softmax]
{TIMING}
""", "seam.yaml")
    executor = ScriptedExecutor(oom_at=32)
    assert [[c.seq_len for c in unit.cases] for unit in plan_units(suite.cases())] == [[16], [32], [64], [128]]
    summary = run_suite(suite, RunOptions(out_dir=tmp_path, quiet=True), executor=executor)
    # Each case visited once, in suite order; the skip policy kept N past the OOM from the executor.
    assert executor.handed == [[16], [32]] and executor.closed is False  # nothing left to run: nothing handed
    records = load_run(summary.run_dir).records
    assert [(r["case"]["seq_len"], r["status"]) for r in records] == [
        (16, "ok"), (32, "oom"), (64, "skipped"), (128, "skipped")]
    assert records[0]["wall_s"] == 0.5 and records[0]["passes"][0]["samples_ms"] == [1.0, 1.1]
    assert "N=32 of this series ran out of memory" in records[2]["error"]
    assert summary.exit_code == 3

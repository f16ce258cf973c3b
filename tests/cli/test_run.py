"""``attnbench run``: the files a run writes and the table it prints, worker
processes, failures, Ctrl-C and SIGTERM, --resume (a grown suite, a truncated
last line, a changed suite refused), shards, CUDA asked for without a GPU, the
GPU path's pieces that run anywhere, the quality section, --executor and --devices
refused before anything runs."""

from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch
from typer.testing import CliRunner

from attnbench.bench.rundir import RunOptions
from attnbench.bench.sweep import run_suite
from attnbench.cli.app import app
from attnbench.store.results import CSV_COLUMNS, QUALITY_FILE, load_run
from attnbench.suite import load as suite_mod
from tests.helpers import (
    CUSTOM_LAYERS,
    CUSTOM_SUITE,
    HONEST_SUITE,
    OK_SUITE,
    ONE_SUITE,
    QUALITY_SUITE,
    SLOW_SUITE,
    SPREAD_SUITE,
    SWEEP_TIMING,
    TINY_SUITE,
    flat,
    invoke,
    signal_after,
    small_suite,
    start_cli,
    wait_for_cases,
    words,
    write,
    write_module,
    write_quality_suite,
    write_suite,
)

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("faulty_variants")


# --- what a run writes and prints ---------------------------------------------------------

@pytest.fixture(scope="module")
def fresh_tiny_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run")
    suite = root / "tiny.yaml"
    write_suite(suite, **TINY_SUITE)
    result = runner.invoke(app, ["run", str(suite), "--out", str(root / "results"), "--in-process", "-q"])
    assert result.exit_code == 0, result.output
    (run_dir,) = (root / "results").iterdir()
    return run_dir


@pytest.mark.slow
def test_run_writes_the_three_files_with_the_documented_columns(fresh_tiny_run: Path):
    assert {p.name for p in fresh_tiny_run.iterdir()} >= {"run.json", "cases.jsonl", "results.csv"}
    meta = json.loads((fresh_tiny_run / "run.json").read_text())
    assert meta["status"] == "finished" and meta["environment"]["torch"]
    assert meta["cases_done"] == meta["cases_total"] == 8
    with open(fresh_tiny_run / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == CSV_COLUMNS
    assert len(rows) == 8 * 3
    assert {r["status"] for r in rows} == {"ok"}
    for r in rows:
        assert float(r["median_ms"]) > 0 and int(r["samples"]) >= 2
        assert float(r["peak_mem_mib"]) > 0 and int(r["flops"]) > 0 and float(r["tflops"]) > 0
        assert int(r["threads"]) >= 1 and r["head_dim"] == "16"
    fwd = {(r["label"], r["seq_len"]): int(r["flops"]) for r in rows if r["pass"] == "forward"}
    fb = {(r["label"], r["seq_len"]): int(r["flops"]) for r in rows if r["pass"] == "forward_backward"}
    assert all(fb[k] == 3 * fwd[k] for k in fwd)


@pytest.mark.slow
def test_run_prints_the_table_on_stdout(tmp_path: Path):
    suite = tmp_path / "s.yaml"
    write_suite(suite, **TINY_SUITE, grid={"seq_lens": [64], "heads": [2]})
    result = runner.invoke(app, ["run", str(suite), "--out", str(tmp_path), "--in-process", "-q"])
    assert result.exit_code == 0
    assert "fastformer" in result.stdout and "N=64" in result.stdout and "MiB" in result.stdout


@pytest.mark.slow
def test_worker_processes_give_the_same_cases(tmp_path: Path):
    suite = tmp_path / "s.yaml"
    write_suite(suite, **TINY_SUITE, grid={"seq_lens": [64], "heads": [2]})
    result = runner.invoke(app, ["run", str(suite), "--out", str(tmp_path / "r"), "-q"])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "r").iterdir()
    run = load_run(run_dir)
    assert sorted(r["case_id"] for r in run.records) == sorted(
        f"{v}|N=64|H=2|dim=32|B=1|float32|cpu|causal=0" for v in ("softmax", "sdpa", "linformer", "fastformer"))
    assert all(r["status"] == "ok" for r in run.records)


@pytest.mark.slow
def test_cli_run_exits_3_when_a_case_failed(tmp_path):
    suite = write_suite(tmp_path / "mixed.yaml", name="mixed", grid={"seq_lens": [64], "heads": [2]},
                        variants=["faulty-raise", "softmax"], timing=SWEEP_TIMING)
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path / "r"), "-q"])
    assert result.exit_code == 3, result.output
    assert "cases that did not succeed" in result.output
    assert "faulty variant raised on purpose" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_failures_are_shown_once_without_internal_paths(tmp_path: Path, faulty_variants):
    # issue 18, item 10
    import re

    suite = tmp_path / "f.yaml"
    write_suite(suite, **ONE_SUITE, variants=["softmax", "faulty-raise"])
    result = runner.invoke(app, ["run", str(suite), "--out", str(tmp_path / "res"), "--in-process"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 3, result.output
    out = result.output
    assert out.count(faulty_variants.RAISE_MESSAGE) == 2  # one row per failed case (N=64, N=128), nothing else
    assert not re.search(r"\w+\.py:\d+", out), out
    assert "cases.jsonl (key 'traceback')" in out


@pytest.mark.slow
def test_other_variants_still_run_when_a_custom_one_is_broken(workdir: Path):
    write_module(workdir, "userpkg.attention", CUSTOM_LAYERS)
    suite = write(workdir / "mixed.yaml", CUSTOM_SUITE.format(
        causal="true", variants="  - softmax\n  - userpkg.attention:IgnoresCausal\n  - userpkg.attention:Attention\n"))
    result = runner.invoke(app, ["run", str(suite), "--out", str(workdir / "res"), "--in-process", "-q"])
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    (run_dir,) = (workdir / "res").iterdir()
    rows = list(csv.DictReader(open(run_dir / "results.csv")))
    status = {(r["label"], r["pass"]): (r["status"], r["error"]) for r in rows}
    assert status[("softmax", "forward")] == ("ok", "")
    assert status[("userpkg.attention:Attention", "forward_backward")] == ("ok", "")
    bad, error = status[("userpkg.attention:IgnoresCausal", "forward")]
    assert bad == "error" and error.startswith("IgnoresCausal ignores causal")
    records = [json.loads(line) for line in (run_dir / "cases.jsonl").read_text().splitlines()]
    assert all("traceback" not in r for r in records)
    assert {r["family"] for r in records} == {"exact", "custom"}


# --- interrupted: Ctrl-C while the worker starts, SIGINT, SIGTERM -------------------------

CLI = "import sys; from attnbench.cli.app import app; sys.argv[0] = 'attnbench'; app()"

# A variant module that is quick to import in the process that loads the suite
# and slow in every later process (the worker): the first import leaves a marker.
SLOW_START = '''
import os, time
from attnbench.variants.exact import SoftmaxAttention

_marker = os.environ["SLOW_START_MARKER"]
if os.path.exists(_marker):
    time.sleep(300)
else:
    open(_marker, "w").close()


class SlowStart(SoftmaxAttention):
    """softmax, from a module that takes minutes to import in a worker."""
'''


@pytest.mark.slow
def test_ctrl_c_while_the_worker_starts_exits_130_and_can_resume(tmp_path: Path):
    write(tmp_path / "slow_start.py", SLOW_START)
    suite = write_suite(tmp_path / "s.yaml", **{**HONEST_SUITE, "variants": ["softmax", "slow_start:SlowStart"]})
    out = tmp_path / "results"
    env = {**os.environ, "COLUMNS": "300", "SLOW_START_MARKER": str(tmp_path / "marker"),
           "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", CLI, "run", str(suite), "--out", str(out), "-q"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(out.glob("*/run.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.5)  # the worker is importing the slow module
    proc.send_signal(signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "Error" not in stderr, stderr
    # nothing was measured: no table, no resume command (there is nothing to resume)
    assert "interrupted before any case was measured" in stderr and "--resume" not in stderr
    (run_dir,) = out.iterdir()
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "interrupted"
    assert (run_dir / "cases.jsonl").exists()
    # Nothing was measured: report says so instead of printing nothing with success.
    result = runner.invoke(app, ["report", str(run_dir)])
    assert result.exit_code != 0
    assert "no case" in words(result.output).lower()


def interrupt(tmp_path: Path, signum: int) -> tuple[Path, Path, str, subprocess.CompletedProcess]:
    suite = write_suite(tmp_path / "slow.yaml", **SLOW_SUITE)
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_sigterm_behaves_like_sigint(tmp_path):
    suite = write_suite(tmp_path / "slow.yaml", **SLOW_SUITE)
    out = tmp_path / "results"
    thread = signal_after(out, 2, signal.SIGTERM)
    try:
        result = CliRunner().invoke(app, ["run", str(suite), "--out", str(out), "-q"])
    finally:
        thread.join()
    run_dir = next(out.iterdir())
    check_interrupted(run_dir, result.output, result.exit_code)
    assert f"--resume {run_dir}" in flat(result.output)


# --- resumed: a grown suite, a truncated last line, a changed suite, a shard --------------

@pytest.mark.slow
def test_resume_with_a_grown_suite_records_what_the_run_now_is(tmp_path: Path):
    suite = write_suite(tmp_path / "s.yaml", **HONEST_SUITE)
    out = tmp_path / "results"
    assert runner.invoke(app, ["run", str(suite), "--out", str(out), "-q", "--in-process"]).exit_code == 0
    (run_dir,) = out.iterdir()
    write_suite(suite, **{**HONEST_SUITE, "variants": ["softmax", "sdpa", "fastformer"]})
    result = runner.invoke(app, ["run", str(suite), "--resume", str(run_dir), "-q", "--in-process"])
    assert result.exit_code == 0, result.output
    meta = json.loads((run_dir / "run.json").read_text())
    # run.json keeps the suite as written: a variant is a name or a mapping with 'name'
    labels = [v if isinstance(v, str) else v.get("label", v["name"]) for v in meta["suite"]["variants"]]
    assert "fastformer" in labels
    assert meta["cases_done"] == meta["cases_total"] == 6 == len(load_run(run_dir).records)
    assert len(meta["history"]) == 2 and "--resume" in " ".join(meta["history"][-1]["command"])

    write_suite(suite, **HONEST_SUITE, grid={"seq_lens": [64], "heads": [2]})
    result = runner.invoke(app, ["run", str(suite), "--resume", str(run_dir), "-q", "--in-process"])
    assert result.exit_code == 0, result.output
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["cases_done"] <= meta["cases_total"]


@pytest.fixture(scope="module")
def finished_template(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finished")
    summary = run_suite(suite_mod.parse(small_suite(**OK_SUITE)), RunOptions(out_dir=tmp, quiet=True))
    assert summary.exit_code == 0
    return summary.run_dir


@pytest.fixture
def finished_run(tmp_path, finished_template):
    """A finished run of OK_SUITE (a copy per test) and the suite's file."""
    suite_path = write_suite(tmp_path / "ok.yaml", **OK_SUITE)
    run_dir = tmp_path / "results" / finished_template.name
    shutil.copytree(finished_template, run_dir)
    return suite_path, run_dir


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_changed_suite_is_refused_on_resume(finished_run):
    suite_path, run_dir = finished_run
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    write_suite(suite_path, **{**OK_SUITE, "timing": {**SWEEP_TIMING, "max_reps": 3},
                               "variants": ["softmax", {"name": "fastformer", "params": {"share_qv": False}}]})
    result = CliRunner().invoke(app, ["run", str(suite_path), "--resume", str(run_dir), "-q"])
    assert result.exit_code == 2, result.output
    assert "the suite changed since this run" in flat(result.output)
    assert "timing.max_reps: 2 -> 3" in flat(result.output)
    assert "share_qv" in flat(result.output)
    assert "Traceback" not in result.output
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # nothing written


@pytest.mark.slow
def test_changed_passes_are_refused_but_new_sizes_are_not(finished_run):
    suite_path, run_dir = finished_run
    write_suite(suite_path, **{**OK_SUITE, "defaults": {"dim": 32, "passes": ["forward"]}})
    result = CliRunner().invoke(app, ["run", str(suite_path), "--resume", str(run_dir), "-q"])
    assert result.exit_code == 2 and "passes" in result.output, result.output
    # More N is not a different experiment: only the new cases run.
    write_suite(suite_path, **OK_SUITE, grid={"seq_lens": [64, 128, 96], "heads": [2]})
    result = CliRunner().invoke(app, ["run", str(suite_path), "--resume", str(run_dir), "-q"])
    assert result.exit_code == 0, result.output
    assert len(load_run(run_dir).records) == 6


@pytest.mark.slow
def test_a_shard_resumes_as_the_same_shard(parts_copy):
    suite_path, _, parts = parts_copy
    result = CliRunner().invoke(app, ["run", str(suite_path), "--resume", str(parts[0]), "--shard", "2/3", "-q"])
    assert result.exit_code == 2 and "shard: 1/3 -> 2/3" in flat(result.output), result.output
    before = len(load_run(parts[0]).records)
    result = CliRunner().invoke(app, ["run", str(suite_path), "--resume", str(parts[0]), "-q", "--in-process"])
    assert result.exit_code == 0, result.output
    assert len(load_run(parts[0]).records) == before  # the shard was complete: nothing else ran


# --- a run that can measure nothing is not a success; the GPU path ------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_cuda_without_a_gpu_is_one_clear_line_and_not_a_success(tmp_path: Path):
    suite = write_suite(tmp_path / "s.yaml", **HONEST_SUITE)
    out = tmp_path / "results"
    result = runner.invoke(app, ["run", str(suite), "--device", "cuda", "--out", str(out), "-q", "--in-process"])
    assert result.exit_code != 0, result.output
    assert "CUDA" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 2
    gpu_suite = write_suite(tmp_path / "g.yaml", **HONEST_SUITE,
                        grid={"seq_lens": [64, 128], "heads": [2], "devices": ["cuda"]})
    result = runner.invoke(app, ["validate", str(gpu_suite)])
    assert "CUDA" in result.output and "not available" in words(result.output)
    result = runner.invoke(app, ["run", str(gpu_suite), "--out", str(out), "-q", "--in-process"])
    assert result.exit_code != 0 and "CUDA" in result.output


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_a_suite_mixing_cpu_and_cuda_runs_the_cpu_cases_and_says_so(tmp_path: Path):
    suite = write_suite(tmp_path / "m.yaml", **HONEST_SUITE,
                    grid={"seq_lens": [64, 128], "heads": [2], "devices": ["cpu", "cuda"]})
    out = tmp_path / "results"
    result = runner.invoke(app, ["run", str(suite), "--out", str(out), "-q", "--in-process"])
    assert result.exit_code == 0, result.output
    assert "4 case(s) on cuda are skipped: CUDA is not available" in words(result.output)
    records = load_run(next(out.iterdir())).records
    assert {r["case"]["device"] for r in records if r["status"] == "ok"} == {"cpu"}


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _run(tmp_path: Path, text: str, *extra: str) -> tuple[int, Path]:
    suite = tmp_path / "s.yaml"
    suite.write_text(text)
    result = runner.invoke(app, ["run", str(suite), "--out", str(tmp_path / "r"), "-q", "--in-process", *extra])
    (run_dir,) = (tmp_path / "r").iterdir()
    return result.exit_code, run_dir


@pytest.mark.slow
def test_pinned_backend_that_cannot_run_is_skipped_with_the_reason(tmp_path):
    backend = "efficient" if not torch.cuda.is_available() else "cudnn"
    code, run_dir = _run(tmp_path, small_suite(
        grid={"seq_lens": [64], "heads": [2]}, timing={"warmup": 0, "max_reps": 2, "min_reps": 1},
        variants=[{"name": "sdpa", "label": "sdpa-math", "params": {"backend": "math"}},
                  {"name": "sdpa", "label": "sdpa-pinned", "params": {"backend": backend}}]))
    frame = load_run(run_dir).frame().set_index("label")
    assert frame.loc["sdpa-math", "status"] == "ok" and frame.loc["sdpa-math", "sdpa_backend"] == "math"
    if frame.loc["sdpa-pinned", "status"] != "ok":  # a GPU may well run it
        assert frame.loc["sdpa-pinned", "status"] == "skipped"
        assert "backend" in frame.loc["sdpa-pinned", "error"]
        assert code == 0  # skipped is not a failure


@pytest.mark.slow
def test_compile_time_is_recorded_apart_from_the_samples(tmp_path):
    code, run_dir = _run(tmp_path, small_suite(
        grid={"seq_lens": [32], "heads": [2]}, defaults={"dim": 16, "passes": ["forward"], "compile": True},
        timing={"warmup": 1, "max_reps": 3, "min_reps": 2}))
    assert code == 0
    (record,) = load_run(run_dir).records
    assert record["compile_s"] > 0
    samples = record["passes"][0]["samples_ms"]
    assert max(samples) < record["compile_s"] * 1e3  # compilation is in no sample


@pytest.mark.slow
def test_flex_backward_on_cpu_is_skipped_not_failed(tmp_path):
    code, run_dir = _run(tmp_path, small_suite(
        grid={"seq_lens": [128], "heads": [2]}, defaults={"dim": 32, "passes": ["forward", "forward_backward"]},
        timing={"warmup": 0, "max_reps": 2, "min_reps": 1},
        variants=[{"name": "flex_local", "params": {"window": 16}}]))
    rows = load_run(run_dir).frame().set_index("pass")
    assert rows.loc["forward", "status"] == "ok"
    assert rows.loc["forward_backward", "status"] == "skipped"
    assert "backward on CPU" in rows.loc["forward_backward", "error"]
    assert code == 0


@pytest.mark.slow
def test_cuda_cases_are_skipped_cleanly_without_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, run_dir = _run(tmp_path, small_suite(
        grid={"seq_lens": [64], "heads": [2], "devices": ["cpu", "cuda"]},
        timing={"warmup": 0, "max_reps": 2, "min_reps": 1}, variants=["sdpa"]))
    frame = load_run(run_dir).frame().set_index("device")
    assert frame.loc["cpu", "status"] == "ok"
    assert frame.loc["cuda", "status"] == "skipped" and "CUDA is not available" in frame.loc["cuda", "error"]
    assert code == 0


# --- on a real GPU ---------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_cuda_run_records_allocator_memory_and_events(tmp_path, dtype):
    code, run_dir = _run(tmp_path, small_suite(
        grid={"seq_lens": [1024, 2048], "heads": [8], "devices": ["cuda"]}, defaults={"dim": 512, "dtype": dtype},
        timing={"warmup": 2, "max_reps": 10},
        variants=["softmax", "sdpa", "local", "linear", "fastformer", "flex_local"]))
    assert code == 0
    frame = load_run(run_dir).frame()
    assert (frame["status"] == "ok").all()
    soft = frame[(frame["label"] == "softmax") & (frame["seq_len"] == 2048) & (frame["pass"] == "forward")]
    assert soft["peak_mem_mib"].iloc[0] >= 8 * 2048 * 2048 * 2 / 2**20  # the half-precision score matrix
    assert frame["peak_reserved_mib"].notna().all()
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["environment"]["gpus"]


@pytest.mark.slow
# --- the quality section ------------------------------------------------------------------

def test_run_measures_quality_resumes_and_reports(tmp_path: Path) -> None:
    suite_path = write_quality_suite(tmp_path)
    result = invoke("run", str(suite_path), "--out", str(tmp_path / "runs"), "--in-process", "-q")
    assert result.exit_code == 0, result.output
    run_dir = next((tmp_path / "runs").iterdir())
    lines = (run_dir / QUALITY_FILE).read_text().splitlines()
    assert len(lines) == 3 * 2 + 3 * 2  # approx: 3 variants x 2 regimes; mqar: 3 variants x 2 seeds
    records = [json.loads(line) for line in lines]
    by_id = {r["task_id"]: r for r in records}
    assert by_id["approx/aft/N64/peaked/seed0"]["status"] == "not an approximation"
    assert by_id["approx/softmax/N64/gaussian/seed0"]["output_error"] < 1e-12
    assert by_id["mqar/local-w8/seed1"]["params"] == {"window": 2}  # MQAR's own parameters
    assert "multi-query associative recall" in words(result.output)

    # Resume: nothing is measured again; a truncated last line is measured again.
    (run_dir / QUALITY_FILE).write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    result = invoke("run", str(suite_path), "--resume", str(run_dir), "--in-process", "-q")
    assert result.exit_code == 0, result.output
    again = (run_dir / QUALITY_FILE).read_text().splitlines()
    assert len(again) == len(lines) and json.loads(again[-1])["task_id"] == records[-1]["task_id"]
    assert [json.loads(x)["task_id"] for x in again[:-1]] == [r["task_id"] for r in records[:-1]]

    # A changed MQAR budget makes the recorded accuracies incomparable: refused.
    changed = write_quality_suite(tmp_path, QUALITY_SUITE.replace("steps: 4", "steps: 5"))
    result = invoke("run", str(changed), "--resume", str(run_dir), "--in-process", "-q")
    assert result.exit_code == 2 and "quality.mqar.steps: 4 -> 5" in words(result.output)

    report = invoke("report", str(run_dir))
    assert report.exit_code == 0
    text = words(report.output)
    assert "approximation error" in text and "not an approximation" in text and "seed 1" in text
    data = json.loads(invoke("report", str(run_dir), "--json").stdout)
    assert len(data["quality"]["records"]) == 12
    assert data["quality"]["mqar"]["seeds"] == [0, 1]
    assert {r["label"] for r in data["quality"]["approx"]["rows"]} == {"softmax", "local-w8", "aft"}
    md = tmp_path / "r.md"
    assert invoke("report", str(run_dir), "--markdown", str(md)).exit_code == 0
    assert "## multi-query associative recall (MQAR)" in md.read_text()
    assert len(load_run(run_dir).quality) == 12


@pytest.mark.slow
def test_a_failing_measurement_is_exit_3(tmp_path: Path) -> None:
    text = QUALITY_SUITE.replace("window: 2}", "window: 0}")  # local refuses a window of 0 at MQAR's N
    result = invoke("run", write_quality_suite(tmp_path, text), "--out", tmp_path / "runs", "--in-process", "-q")
    assert result.exit_code == 3, result.output
    run_dir = next((tmp_path / "runs").iterdir())
    statuses = {r["task_id"]: r["status"] for r in load_run(run_dir).quality}
    assert statuses["mqar/local-w8/seed0"] == "error" and statuses["mqar/softmax/seed0"] == "ok"


# --- executors refused before anything runs -----------------------------------------------

def test_ray_missing_is_one_message_and_exit_2(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails as if not installed
    suite = write_suite(tmp_path / "tiny.yaml", **SPREAD_SUITE)
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path / "r"), "--executor", "ray"])
    assert result.exit_code == 2, result.output
    assert 'pip install "attnbench[ray]"' in flat(result.output) and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_several_cpu_workers_need_consent(tmp_path):
    suite = write_suite(tmp_path / "tiny.yaml", **SPREAD_SUITE)
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path / "r"), "--devices", "cpu,cpu"])
    assert result.exit_code == 2 and "--allow-shared-cpu" in flat(result.output), result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_run_states_its_verdict_first_and_records_its_allocator(tmp_path: Path, monkeypatch):
    import os

    suite = tmp_path / "s.yaml"
    write_suite(suite, **{**TINY_SUITE, "grid": {"seq_lens": [64], "heads": [2]},
                          "timing": {**TINY_SUITE["timing"], "allocator": "default"}})
    monkeypatch.setenv("ATTNBENCH_MALLOC", "steady")  # the run sets its own, whatever it finds
    result = runner.invoke(app, ["run", str(suite), "--out", str(tmp_path / "r"), "--in-process", "-q"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("timings ")  # trustworthy, noisy or unreliable, as the machine was
    (run_dir,) = (tmp_path / "r").iterdir()
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["allocator"] == "default" and os.environ["ATTNBENCH_MALLOC"] == "default"


@pytest.mark.slow
def test_run_strict_exits_4_on_an_unreliable_run(tmp_path: Path, monkeypatch):
    from attnbench.analysis import verdict

    monkeypatch.setattr(verdict, "OTHER_SHARE_UNRELIABLE", -1.0)  # every run counts as shared
    suite = tmp_path / "s.yaml"
    write_suite(suite, **TINY_SUITE, grid={"seq_lens": [64], "heads": [2]})
    result = runner.invoke(app, ["run", str(suite), "--out", str(tmp_path / "r"), "--in-process", "-q", "--strict"])
    assert result.exit_code == 4, result.output
    assert result.stdout.startswith("timings unreliable") and "--strict" in result.stderr

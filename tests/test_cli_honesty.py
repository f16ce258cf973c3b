"""The CLI never tells the user something false: each test here is one of the
wrong answers a new user met in their first hour (issue 18, items 1-6)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from attnbench.cli.app import app
from attnbench.store.results import load_run
from tests.test_compare_runs import record, write_run

runner = CliRunner()

CLI = "import sys; from attnbench.cli.app import app; sys.argv[0] = 'attnbench'; app()"

TINY = """\
name: tiny
baseline: softmax
defaults: {batch: 1, dim: 32, passes: [forward, forward_backward]}
grid: {seq_lens: [64, 128], heads: [2]}
variants:
  - softmax
  - sdpa
timing: {warmup: 1, min_time_s: 0.01, max_reps: 3, min_reps: 2}
"""


def flat(text: str) -> str:
    return " ".join(text.split())


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("honest")
    suite = write(root / "tiny.yaml", TINY)
    result = runner.invoke(app, ["run", str(suite), "--out", str(root / "results"), "--in-process", "-q"])
    assert result.exit_code == 0, result.output
    (run_dir,) = (root / "results").iterdir()
    return run_dir


# --- 1. Ctrl-C while the worker starts ---------------------------------------------------

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


def test_ctrl_c_while_the_worker_starts_exits_130_and_can_resume(tmp_path: Path):
    write(tmp_path / "slow_start.py", SLOW_START)
    suite = write(tmp_path / "s.yaml", TINY.replace("  - sdpa\n", "  - slow_start:SlowStart\n"))
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
    assert "Resume with" in stderr and "--resume" in stderr
    (run_dir,) = out.iterdir()
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "interrupted"
    assert (run_dir / "cases.jsonl").exists()
    # Nothing was measured: report says so instead of printing nothing with success.
    result = runner.invoke(app, ["report", str(run_dir)])
    assert result.exit_code != 0
    assert "no case" in flat(result.output).lower()


# --- 2. compare: a gate that compared nothing does not pass -------------------------------

def _record(label: str, n: int, samples: list[float] | str) -> dict:
    return record(label, n, {"forward": samples})


SAMPLES = [1.0, 1.01, 0.99, 1.0, 1.02, 0.98]


def test_a_gate_fails_when_cases_of_a_are_missing_from_b(tmp_path: Path):
    a = write_run(tmp_path / "a", [_record(v, n, SAMPLES) for v in ("softmax", "linear") for n in (64, 128, 256)])
    b = write_run(tmp_path / "b", [_record("softmax", 64, SAMPLES), _record("other", 64, SAMPLES)])
    result = runner.invoke(app, ["compare", str(a), str(b), "--fail-above", "1.1"])
    assert result.exit_code == 1, result.output
    assert "missing" in flat(result.output)


def test_a_gate_fails_when_a_case_of_a_failed_in_b(tmp_path: Path):
    a = write_run(tmp_path / "a", [_record("softmax", 64, SAMPLES), _record("softmax", 128, SAMPLES)])
    b = write_run(tmp_path / "b", [_record("softmax", 64, SAMPLES), _record("softmax", 128, "oom")])
    result = runner.invoke(app, ["compare", str(a), str(b), "--fail-above", "1.1"])
    assert result.exit_code == 1, result.output
    assert "oom" in result.output


def test_comparing_a_run_with_itself_says_so(tiny_run: Path):
    result = runner.invoke(app, ["compare", str(tiny_run), str(tiny_run)])
    assert "same run" in flat(result.output)


# --- 3. a run that can measure nothing is not a success -----------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_cuda_without_a_gpu_is_one_clear_line_and_not_a_success(tmp_path: Path):
    suite = write(tmp_path / "s.yaml", TINY)
    out = tmp_path / "results"
    result = runner.invoke(app, ["run", str(suite), "--device", "cuda", "--out", str(out), "-q", "--in-process"])
    assert result.exit_code != 0, result.output
    assert "CUDA" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 2
    gpu_suite = write(tmp_path / "g.yaml", TINY.replace("heads: [2]}", "heads: [2], devices: [cuda]}"))
    result = runner.invoke(app, ["validate", str(gpu_suite)])
    assert "CUDA" in result.output and "not available" in flat(result.output)
    result = runner.invoke(app, ["run", str(gpu_suite), "--out", str(out), "-q", "--in-process"])
    assert result.exit_code != 0 and "CUDA" in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_a_suite_mixing_cpu_and_cuda_runs_the_cpu_cases_and_says_so(tmp_path: Path):
    suite = write(tmp_path / "m.yaml", TINY.replace("heads: [2]}", "heads: [2], devices: [cpu, cuda]}"))
    out = tmp_path / "results"
    result = runner.invoke(app, ["run", str(suite), "--out", str(out), "-q", "--in-process"])
    assert result.exit_code == 0, result.output
    assert "4 case(s) on cuda are skipped: CUDA is not available" in flat(result.output)
    records = load_run(next(out.iterdir())).records
    assert {r["case"]["device"] for r in records if r["status"] == "ok"} == {"cpu"}


# --- 4. parameter values are checked by validate ------------------------------------------

@pytest.mark.parametrize(("variant", "params", "key", "hint"), [
    ("linformer", "{k: '32'}", "k", "int"),
    ("sdpa", "{backend: flsh}", "backend", "flash"),
    ("synthesizer", "{mode: dens}", "mode", "dense"),
])
def test_validate_checks_parameter_values(tmp_path: Path, variant: str, params: str, key: str, hint: str):
    text = TINY.replace("  - sdpa\n", f"  - name: {variant}\n    params: {params}\n")
    suite = write(tmp_path / "s.yaml", text)
    result = runner.invoke(app, ["validate", str(suite)])
    assert result.exit_code == 2, result.output
    out = flat(result.output)
    assert "s.yaml:8" in out and key in out and hint in out, out
    assert "Traceback" not in result.output


# --- 5. resume never lets the record lie -------------------------------------------------

def test_resume_with_a_grown_suite_records_what_the_run_now_is(tmp_path: Path):
    suite = write(tmp_path / "s.yaml", TINY)
    out = tmp_path / "results"
    assert runner.invoke(app, ["run", str(suite), "--out", str(out), "-q", "--in-process"]).exit_code == 0
    (run_dir,) = out.iterdir()
    write(suite, TINY.replace("  - sdpa\n", "  - sdpa\n  - fastformer\n"))
    result = runner.invoke(app, ["run", str(suite), "--resume", str(run_dir), "-q", "--in-process"])
    assert result.exit_code == 0, result.output
    meta = json.loads((run_dir / "run.json").read_text())
    # run.json keeps the suite as written: a variant is a name or a mapping with 'name'
    labels = [v if isinstance(v, str) else v.get("label", v["name"]) for v in meta["suite"]["variants"]]
    assert "fastformer" in labels
    assert meta["cases_done"] == meta["cases_total"] == 6 == len(load_run(run_dir).records)
    assert len(meta["history"]) == 2 and "--resume" in " ".join(meta["history"][-1]["command"])

    write(suite, TINY.replace("seq_lens: [64, 128]", "seq_lens: [64]"))
    result = runner.invoke(app, ["run", str(suite), "--resume", str(run_dir), "-q", "--in-process"])
    assert result.exit_code == 0, result.output
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["cases_done"] <= meta["cases_total"]


# --- 6. report and compare options that would be ignored ---------------------------------

def test_report_json_still_writes_the_files_it_was_asked_for(tiny_run: Path, tmp_path: Path):
    md, csv = tmp_path / "r.md", tmp_path / "r.csv"
    result = runner.invoke(app, ["report", str(tiny_run), "--json", "--markdown", str(md), "--csv", str(csv)])
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)
    assert md.exists() and csv.exists()


def test_report_with_an_unknown_baseline_is_refused(tiny_run: Path):
    result = runner.invoke(app, ["report", str(tiny_run), "--baseline", "nope"])
    assert result.exit_code == 2 and "nope" in result.output and "softmax" in result.output


def test_compare_pass_takes_the_short_names_and_refuses_unknown_ones(tiny_run: Path):
    result = runner.invoke(app, ["compare", str(tiny_run), "--pass", "fwd"])
    assert result.exit_code == 0 and "sdpa" in result.stdout, result.output
    result = runner.invoke(app, ["compare", str(tiny_run), "--pass", "nope"])
    assert result.exit_code == 2 and "forward" in result.output


def test_compare_two_runs_refuses_a_baseline_it_would_ignore(tiny_run: Path):
    result = runner.invoke(app, ["compare", str(tiny_run), str(tiny_run), "--baseline", "sdpa"])
    assert result.exit_code == 2 and "--baseline" in result.output


def test_compare_help_does_not_promise_softmax_as_the_default():
    result = runner.invoke(app, ["compare", "--help"])
    assert "default softmax" not in flat(result.output).lower()


def test_a_bad_plot_extension_is_refused_before_anything_is_printed(tiny_run: Path, tmp_path: Path):
    result = runner.invoke(app, ["report", str(tiny_run), "--plot", str(tmp_path / "x.jpg")])
    assert result.exit_code == 2 and ".png" in result.output
    assert "softmax" not in result.stdout


# --- 14. report filters, CSV to stdout, JSON with the analysis ---------------------------

def test_report_filters_csv_to_stdout_and_json_analysis(tiny_run: Path):
    import csv
    import io

    result = runner.invoke(app, ["report", str(tiny_run), "--variant", "sdpa", "--n", "128", "--pass", "f+b",
                                 "--csv", "-"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["label"], r["seq_len"], r["pass"]) for r in rows] == [("sdpa", "128", "forward_backward")]
    result = runner.invoke(app, ["report", str(tiny_run), "--n", "100"])
    assert result.exit_code == 2 and "64, 128" in result.output
    payload = json.loads(runner.invoke(app, ["report", str(tiny_run), "--json"]).stdout)
    assert payload["baseline"] == "softmax"
    assert {r["label"] for r in payload["against_baseline"]} == {"softmax", "sdpa"}
    assert all(r["speedup"] is not None for r in payload["against_baseline"] if r["status"] == "ok")
    assert set(payload["scaling"]) == {"forward", "forward_backward"}
    assert {"time_exponent", "crossover"} <= set(payload["scaling"]["forward"][0])

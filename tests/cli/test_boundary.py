"""The CLI's error boundary (attnbench.cli.boundary): bad input never produces a
traceback; each mistake is one message naming the file, line and key (or the
path), exit code 2, and nothing written; with --json the error goes to stderr;
an unexpected exception is a bug: exit 1 and its traceback saved."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnbench.bench.records import make_record
from attnbench.bench.rundir import RunOptions, prepare_run_dir, write_meta
from attnbench.bench.worker.messages import Meta, Outcome, PassResult
from attnbench.cli.app import app
from attnbench.store.results import append_record
from attnbench.suite import load as suite_mod
from tests.helpers import flat, invoke

runner = CliRunner()

GOOD = """\
name: good
defaults: {dim: 32, passes: [forward, backward]}
grid:
  seq_lens: [64, 128]
  heads: [2]
variants: [softmax, fastformer]
timing: {warmup: 0, max_reps: 2, min_reps: 1, min_time_s: 0.01}
"""

# (file name, text, what the message must name: file:line, key, and what is wrong)
BAD_SUITES = [
    ("malformed.yaml", "name: x\ngrid: [1, 2\nvariants: [softmax]\n",
     ["malformed.yaml:3", "YAML syntax error"]),
    ("tabs.yaml", "name: x\ngrid:\n\tseq_lens: [64]\n", ["tabs.yaml:3", "YAML syntax error"]),
    ("wrong_type.yaml", GOOD.replace("dim: 32", "dim: big"),
     ["wrong_type.yaml:2", "defaults.dim", "must be an integer, got 'big'"]),
    ("wrong_type_list.yaml", GOOD.replace("heads: [2]", "heads: {two: 2}"),
     ["wrong_type_list.yaml:5", "grid.heads", "must be a list"]),
    ("bool_dim.yaml", GOOD.replace("dim: 32", "dim: true"), ["bool_dim.yaml:2", "defaults.dim", "integer"]),
    ("unknown_key.yaml", GOOD + "timming: {warmup: 1}\n",
     ["unknown_key.yaml:8", "timming", "unknown key", "Did you mean 'timing'?"]),
    ("unknown_nested.yaml", GOOD.replace("warmup: 0", "warmpu: 0"),
     ["unknown_nested.yaml:7", "timing.warmpu", "Did you mean 'warmup'?"]),
    ("empty_list.yaml", GOOD.replace("seq_lens: [64, 128]", "seq_lens: []"),
     ["empty_list.yaml:4", "grid.seq_lens", "must not be empty"]),
    ("no_variants.yaml", GOOD.replace("variants: [softmax, fastformer]", "variants: []"),
     ["no_variants.yaml:6", "variants", "must not be empty"]),
    ("absurd.yaml", GOOD.replace("seq_lens: [64, 128]", "seq_lens: [64, 1000000000]"),
     ["absurd.yaml:4", "grid.seq_lens[1]", "1000000000 is larger than"]),
    ("absurd_batch.yaml", GOOD.replace("dim: 32", "dim: 32, batch: 100000000"),
     ["absurd_batch.yaml:2", "defaults.batch", "larger than"]),
    ("negative.yaml", GOOD.replace("seq_lens: [64, 128]", "seq_lens: [64, -1]"),
     ["negative.yaml:4", "grid.seq_lens[1]", "at least 1"]),
    ("heads.yaml", GOOD.replace("heads: [2]", "heads: [2, 5]"),
     ["heads.yaml:5", "grid.heads", "heads 5 does not divide dim 32"]),
    ("variant.yaml", GOOD.replace("[softmax, fastformer]", "[softmax, sofmax]"),
     ["variant.yaml:6", "variants[1].name", "unknown variant 'sofmax'", "Did you mean 'softmax'?"]),
    ("param.yaml", GOOD.replace("[softmax, fastformer]", "[softmax, {name: fastformer, params: {share_q: 1}}]"),
     ["param.yaml:6", "variants[1].params.share_q", "Did you mean 'share_qv'?"]),
    ("dtype.yaml", GOOD.replace("dim: 32", "dim: 32, dtype: float33"),
     ["dtype.yaml:2", "defaults.dtype", "unknown dtype 'float33'"]),
    ("device.yaml", GOOD.replace("heads: [2]", "heads: [2]\n  devices: [gpu]"),
     ["device.yaml:6", "grid.devices[0]", "unknown device 'gpu'"]),
    ("timeout.yaml", GOOD + "limits: {case_timeout_s: 0}\n",
     ["timeout.yaml:8", "limits.case_timeout_s", "positive"]),
    ("memory_limit.yaml", GOOD + "limits: {memory_limit_mib: lots}\n",
     ["memory_limit.yaml:8", "limits.memory_limit_mib", "must be a number"]),
    ("duplicate.yaml", GOOD + "name: again\n", ["duplicate.yaml:8", "name", "duplicate key"]),
    ("not_a_mapping.yaml", "- softmax\n- sdpa\n", ["not_a_mapping.yaml:1", "a suite is a mapping"]),
    ("empty.yaml", "", ["empty.yaml", "the suite is empty"]),
    ("binary.yaml", b"\xff\xfe\x00garbage", ["binary.yaml", "cannot read"]),
]


def assert_one_clean_error(result, *expected: str) -> str:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    text = flat(result.output)
    assert "Traceback" not in text
    assert len(re.findall(r"^error: ", result.output, flags=re.MULTILINE)) == 1, result.output
    for part in expected:
        assert part in text, f"{part!r} not in {result.output!r}"
    return text


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize(("name", "text", "expected"), BAD_SUITES, ids=[b[0] for b in BAD_SUITES])
def test_bad_suite_is_one_message_and_exit_2(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = snapshot(tmp_path)
    result = invoke("run", path, "--out", tmp_path / "results")
    assert_one_clean_error(result, str(path), *expected)
    assert snapshot(tmp_path) == before  # not even the results directory
    assert_one_clean_error(invoke("validate", path), *expected)


def test_missing_suite_and_directory_as_suite(tmp_path):
    assert_one_clean_error(invoke("run", tmp_path / "nope.yaml"), "nope.yaml", "no such file")
    assert_one_clean_error(invoke("run", tmp_path), str(tmp_path), "is a directory")


@pytest.mark.slow
def test_bad_suite_in_a_real_process_prints_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("dim: 32", "dim: [32]"))
    proc = subprocess.run([sys.executable, "-c", "from attnbench.cli.app import app; app(prog_name='attnbench')",
                           "run", str(path), "--out", str(tmp_path / "results")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr
    assert flat(proc.stderr).startswith(f"error: {path}:2: defaults.dim: must be an integer"), proc.stderr
    assert len(lines) <= 2  # one message (rich may wrap it once at 80 columns)
    assert not (tmp_path / "results").exists()


# --- results directories ----------------------------------------------------------------

@pytest.fixture
def run_dir(tmp_path) -> tuple[Path, Path]:
    """A finished run of GOOD (records written as the runner writes them,
    without measuring anything) and its suite file."""
    suite_path = tmp_path / "good.yaml"
    suite_path.write_text(GOOD)
    suite = suite_mod.load(suite_path)
    directory, meta, _, _ = prepare_run_dir(suite, RunOptions(out_dir=tmp_path / "results"))
    meta["status"] = "finished"
    write_meta(directory, meta)
    for case in suite.cases():
        passes = [PassResult(pass_name=p, samples_ms=[1.0, 1.2], flops=1000, peak_mem_mib=1.0, memory_measured=True)
                  for p in case.passes]
        meta_message = Meta(family="exact", param_count=0, threads=1, device_name="cpu", build_s=0.0)
        outcome = Outcome(case=case, messages=[meta_message, *passes])
        append_record(directory / "cases.jsonl", make_record(case, outcome, time.time(), 0.01))
    return suite_path, directory


@pytest.mark.slow
def test_the_fixture_run_is_valid(run_dir):
    suite_path, directory = run_dir
    assert invoke("report", directory).exit_code == 0
    result = invoke("run", suite_path, "--resume", directory, "-q")  # nothing left to run
    assert result.exit_code == 0, result.output


def test_not_a_results_directory(tmp_path, run_dir):
    suite_path, _ = run_dir
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    for command in (["report"], ["compare"], ["run", suite_path, "--resume"]):
        assert_one_clean_error(invoke(*command, tmp_path / "empty"), str(tmp_path / "empty"),
                               "not an attnbench results directory")
        assert_one_clean_error(invoke(*command, tmp_path / "file.txt"), "file.txt", "is a file")
        assert_one_clean_error(invoke(*command, tmp_path / "missing"), "missing", "no such results directory")


def test_unreadable_run_json(run_dir):
    _, directory = run_dir
    (directory / "run.json").write_text('{"schema": 1, "run_id": ')
    assert_one_clean_error(invoke("report", directory), "run.json", "unreadable")
    (directory / "run.json").write_text("[1, 2]")
    assert_one_clean_error(invoke("report", directory), "run.json", "not an attnbench run.json")


@pytest.mark.parametrize("bad_line", [
    "{not json at all",
    '{"case_id": "x"}',
    '{"case_id": "x", "case": {"label": "softmax"}, "status": "ok"}',
    '[1, 2, 3]',
])
def test_corrupted_line_in_the_middle(run_dir, bad_line):
    suite_path, directory = run_dir
    jsonl = directory / "cases.jsonl"
    lines = jsonl.read_text().splitlines()
    jsonl.write_text("\n".join([lines[0], bad_line, *lines[1:]]) + "\n")
    before = snapshot(directory)
    assert_one_clean_error(invoke("report", directory), "cases.jsonl:2", "corrupted line")
    result = invoke("run", suite_path, "--resume", directory, "-q")
    assert_one_clean_error(result, "cases.jsonl:2", "corrupted line")
    assert snapshot(directory) == before  # resume refused before writing anything


def test_a_bad_complete_last_line_is_corruption_not_truncation(run_dir):
    """A cut-off last line has no newline; a bad line that ends in one was
    written whole, so it is reported rather than silently dropped."""
    _, directory = run_dir
    jsonl = directory / "cases.jsonl"
    jsonl.write_text(jsonl.read_text() + "garbage\n")
    assert_one_clean_error(invoke("report", directory), "cases.jsonl:5", "corrupted line")


def test_out_directory_that_cannot_be_written(tmp_path):
    suite_path = tmp_path / "good.yaml"
    suite_path.write_text(GOOD)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    before = snapshot(tmp_path)
    for out in (blocker, blocker / "results"):
        assert_one_clean_error(invoke("run", suite_path, "--out", out), str(blocker), "is a file, not a directory")
        assert snapshot(tmp_path) == before


def test_report_csv_that_cannot_be_written(tmp_path, run_dir):
    _, directory = run_dir
    target = tmp_path / "no" / "such" / "dir" / "out.csv"
    assert_one_clean_error(invoke("report", directory, "--csv", target), str(target), "cannot write")
    assert not (tmp_path / "no").exists()


def test_record_checks_reject_what_would_crash_the_tables(run_dir):
    """Lines that parse as JSON but are not records would otherwise surface as
    KeyError/TypeError deep in the tables."""
    _, directory = run_dir
    jsonl = directory / "cases.jsonl"
    lines = jsonl.read_text().splitlines()
    record = json.loads(lines[1])
    for mutate in (lambda r: r["case"].update(heads=0), lambda r: r["case"].update(passes="forward"),
                   lambda r: r["passes"][0].update(samples_ms=["1.0"]), lambda r: r.update(status="great")):
        bad = json.loads(json.dumps(record))
        mutate(bad)
        jsonl.write_text("\n".join([lines[0], json.dumps(bad), *lines[2:]]) + "\n")
        assert_one_clean_error(invoke("report", directory), "cases.jsonl:2", "corrupted line")


def test_json_errors_go_to_stderr_with_exit_2(tmp_path: Path):
    for command in ("report", "compare"):
        result = runner.invoke(app, [command, str(tmp_path / "missing"), "--json"])
        assert result.exit_code == 2 and result.stdout == "" and "error" in result.stderr


def test_an_unexpected_exception_is_a_bug_with_its_traceback_saved(tmp_path, monkeypatch):
    """Only attnbench's own errors are the user's (exit 2); a ValueError from
    inside the library is a bug: exit 1, one line, and the saved traceback."""
    import re

    import attnbench.report.build

    def broken(path):
        raise ValueError("something inside went wrong")

    monkeypatch.setattr(attnbench.report.build, "load_run", broken)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "internal error" in result.output and "ValueError: something inside went wrong" in result.output
    assert "Traceback" not in result.output
    saved = Path(re.search(r"traceback is in (\S+)", result.output).group(1))
    assert saved.parent == tmp_path
    text = saved.read_text()
    assert "Traceback (most recent call last)" in text and "in broken" in text

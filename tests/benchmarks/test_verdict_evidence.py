"""benchmarks/verdict_evidence.py: the figures behind the verdict's thresholds,
read from runs (the committed fixture runs and a copy of one)."""

import importlib.util
import shutil

from tests.helpers import ROOT

_spec = importlib.util.spec_from_file_location("verdict_evidence", ROOT / "benchmarks" / "verdict_evidence.py")
ve = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ve)

RUNS = ROOT / "tests" / "fixtures" / "runs"


def test_each_run_once_quiet_and_busy_apart(tmp_path, capsys):
    shutil.copytree(RUNS / "honest", tmp_path / "again")  # the same run id twice counts once
    assert ve.main([str(RUNS), str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("| 2")]
    ids = [line.split(" | ")[0] for line in lines]
    assert len(ids) == len(set(ids)) >= 3
    honest = next(line for line in lines if "honest" in line or "52.0%" in line)
    assert "52.0%" in honest and "unreliable" in honest  # other processes took half the cores
    assert "busy: " in out and "quiet: " in out


def test_one_run_figures():
    row = ve.evidence(RUNS / "honest")
    assert row["share"] > 0.5 and row["verdict"] == "unreliable"
    assert set(row["moves"]) == {"matmul rate", "copy bandwidth"} and row["moved"] == max(row["moves"].values())


def test_nothing_to_read_is_exit_2(tmp_path):
    assert ve.main([str(tmp_path)]) == 2

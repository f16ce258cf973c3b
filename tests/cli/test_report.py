"""``attnbench report``: LRA-style tables, scaling exponents, crossovers, the
published table with the rank correlation, markdown and plots on a synthetic
run; on recorded runs the CSV, the JSON, filters, the brackets' legend; what it
refuses (a directory of runs, an unknown baseline, a bad plot extension,
figures of different device models)."""

from __future__ import annotations

import csv
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnbench.analysis.baseline import MixedDevicesError, check_pairable
from attnbench.cli.app import app
from attnbench.cli.console import JSON_SCHEMA
from attnbench.report.build import ReportOptions, build_report
from attnbench.report.markdown import markdown_report
from attnbench.store.results import CSV_COLUMNS, load_run, rewrite_records
from tests.helpers import (
    LRA_NS,
    LRA_TIMES,
    ROOT,
    fake_run,
    flat,
    lra_record,
    lra_samples,
    strict_json,
    write_lra_run,
    write_run,
)

runner = CliRunner()


# --- a synthetic run shaped like LRA's Table 2 --------------------------------------------

def test_report_prints_lra_tables_scaling_and_the_published_table(lra_run_dir: Path):
    result = runner.invoke(app, ["report", str(lra_run_dir)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    # LRA-style cells: steps/s (speed-up) against the baseline; the baseline itself at 1.00x
    assert "steps/s (speed-up)" in out and "(1.00x)" in out
    # linear at 4K: softmax 160 ms, linear 60 ms -> 16.7 steps/s, 2.67x
    assert "16.7 (2.67x)" in out
    # scaling exponents and crossovers
    assert "scaling in N" in out and "2.00" in out and "1.00" in out
    assert "1,536" in out  # linear overtakes softmax at N = 1.5 · 1024
    assert "< 1,024" in out  # performer: faster from the first N (below the range)
    assert "> 4,096" in out  # synthesizer: always slower, same slope (never within the range)
    # the published table beside it, with its citation, and the rank agreement
    assert "Long Range Arena" in out and "Performer" in out and "8.0 (5.7x)" in out and "9.48" in out
    assert "2011.04006" in out
    assert "Spearman" in out and "N=4096" in out
    assert "OOM" in out  # the failed case is shown


def test_plot_refuses_other_formats(lra_run_dir: Path, tmp_path: Path):
    result = runner.invoke(app, ["report", str(lra_run_dir), "--plot", str(tmp_path / "fig.jpg")])
    assert result.exit_code == 2 and ".png or .svg" in result.output


@pytest.mark.slow
def test_markdown_and_png_plot_are_written(lra_run_dir: Path, tmp_path: Path):
    md, png = tmp_path / "out" / "report.md", tmp_path / "out" / "fig.png"
    result = runner.invoke(app, ["report", str(lra_run_dir), "--markdown", str(md), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    text = md.read_text()
    assert text.startswith("# attnbench report: lra")
    assert "![time and memory vs N](fig.png)" in text
    assert "## forward_backward" in text and "## forward" in text
    assert "| linear | 66.7 (0.67x) |" in text
    assert "| variant | N=1024 | N=2048 | N=3072 | N=4096 |" in text
    assert "## published: Long Range Arena" in text and "| Performer | performer |" in text
    assert "Spearman rank correlation" in text and "measured / published" in text
    assert "~" in text  # the noisy performer figure is marked
    assert "## cases that did not succeed" in text and "oom" in text.lower()
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


@pytest.mark.slow
def test_svg_plot_is_valid_xml(lra_run_dir: Path, tmp_path: Path):
    svg = tmp_path / "fig.svg"
    result = runner.invoke(app, ["report", str(lra_run_dir), "--plot", str(svg)])
    assert result.exit_code == 0, result.output
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    text = svg.read_text()
    for label in ("softmax", "linear", "performer"):
        assert label in text  # legend entries


def test_report_without_a_published_table_or_with_an_unknown_one(tmp_path: Path):
    recs = [lra_record(v, n, {"forward": {"status": "ok", "samples_ms": lra_samples(LRA_TIMES[v](n)),
                                          "peak_mem_mib": 1.0}})
            for v in ("softmax", "linear") for n in (1024, 2048)]
    plain = write_lra_run(tmp_path / "plain", recs, published=None)
    result = runner.invoke(app, ["report", str(plain)])
    assert result.exit_code == 0 and "Spearman" not in result.stdout and "scaling in N" in result.stdout
    odd = write_lra_run(tmp_path / "odd", recs, published="no_such_table")
    result = runner.invoke(app, ["report", str(odd)])
    assert result.exit_code == 0 and "unknown published table" in result.stdout
    # the Spearman line says so when too few models can be paired
    md = markdown_report(build_report(load_run(write_lra_run(tmp_path / "few", recs[:2])), ReportOptions("softmax")))
    assert "not enough models in common" in md


def test_report_reads_at_80_columns_and_shows_every_pass(tmp_path: Path):
    # issue 18, item 9: a header, every measured pass in the final table and a
    # scaling table per pass, each legend once, one empty-cell mark, titles unbroken
    records = [lra_record(v, n, {p: {"status": "ok", "samples_ms": lra_samples(m * n / 1024), "peak_mem_mib": 1.0}
                              for p in ("forward", "backward")})
               for v, m in (("softmax", 4.0), ("linear", 2.0)) for n in (1024, 2048, 4096)]
    run_dir = write_lra_run(tmp_path / "run-fb", records, published=None)
    result = runner.invoke(app, ["report", str(run_dir)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    verdict, header = out.splitlines()[:2]  # the verdict on the timings first, then the run
    assert verdict.startswith("timings unjudged") and header.startswith("run run-fb · suite lra")
    assert "setting: batch 1, dim 256, float32, cpu" in out
    assert "each cell: median ms of fwd, bwd" in out
    assert "backward: scaling in N" in out and "forward: scaling in N" in out
    assert out.count("speed-up = baseline time / time") == 1
    assert "—" not in out and "…" not in out and "model" not in out
    assert max(len(line) for line in out.splitlines()) <= 80
    for title in ("forward: steps/s (speed-up) vs softmax", "backward: peak MiB (ratio) vs softmax"):
        assert title in out  # on one line


REFERENCE_LRA = ROOT / "results" / "reference-cpu" / "lra"


@pytest.mark.slow
@pytest.mark.skipif(not (REFERENCE_LRA / "results.csv").is_file(), reason="no reference LRA run")
def test_cli_report_plot_tradeoff(tmp_path):
    out = tmp_path / "tradeoff.png"
    result = CliRunner().invoke(app, ["report", str(REFERENCE_LRA), "--plot-tradeoff", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and out.stat().st_size > 10000


# --- recorded runs ------------------------------------------------------------------------

def test_report_reprints_and_writes_csv(tiny_run: Path, tmp_path: Path):
    out_csv = tmp_path / "out.csv"
    result = runner.invoke(app, ["report", str(tiny_run), "--csv", str(out_csv)])
    assert result.exit_code == 0, result.output
    assert "linformer" in result.stdout and "N=128" in result.stdout
    header = out_csv.read_text().splitlines()[0].split(",")
    assert header[:len(CSV_COLUMNS)] == CSV_COLUMNS  # then the paired speed-ups, their bounds, the roofline
    assert {"speedup", "speedup_low", "speedup_high", "mem_ratio_low", "peak_fraction"} <= set(header)


def test_the_report_says_what_its_brackets_are(tiny_run: Path):
    result = runner.invoke(app, ["report", str(tiny_run)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "[" in result.stdout and "[95% interval] over this run's rounds" in result.stdout


def test_report_json_still_writes_the_files_it_was_asked_for(honest_run: Path, tmp_path: Path):
    md, csv = tmp_path / "r.md", tmp_path / "r.csv"
    result = runner.invoke(app, ["report", str(honest_run), "--json", "--markdown", str(md), "--csv", str(csv)])
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)
    assert md.exists() and csv.exists()


def test_report_with_an_unknown_baseline_is_refused(honest_run: Path):
    result = runner.invoke(app, ["report", str(honest_run), "--baseline", "nope"])
    assert result.exit_code == 2 and "nope" in result.output and "softmax" in result.output


def test_a_bad_plot_extension_is_refused_before_anything_is_printed(honest_run: Path, tmp_path: Path):
    result = runner.invoke(app, ["report", str(honest_run), "--plot", str(tmp_path / "x.jpg")])
    assert result.exit_code == 2 and ".png" in result.output
    assert "softmax" not in result.stdout


def test_report_filters_csv_to_stdout_and_json_analysis(honest_run: Path):
    import io

    result = runner.invoke(app, ["report", str(honest_run), "--variant", "sdpa", "--n", "128", "--pass", "f+b",
                                 "--csv", "-"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["label"], r["seq_len"], r["pass"]) for r in rows] == [("sdpa", "128", "forward_backward")]
    result = runner.invoke(app, ["report", str(honest_run), "--n", "100"])
    assert result.exit_code == 2 and "64, 128" in result.output
    payload = json.loads(runner.invoke(app, ["report", str(honest_run), "--json"]).stdout)
    assert payload["baseline"] == "softmax"
    assert {r["label"] for r in payload["against_baseline"]} == {"softmax", "sdpa"}
    assert all(r["speedup"] is not None for r in payload["against_baseline"] if r["status"] == "ok")
    assert set(payload["scaling"]) == {"forward", "forward_backward"}
    assert {"time_exponent", "crossover"} <= set(payload["scaling"]["forward"][0])


def test_report_json_has_the_tidy_rows(json_run: Path):
    result = runner.invoke(app, ["report", str(json_run), "--json"])
    assert result.exit_code == 0, result.output
    payload = strict_json(result.stdout)
    assert payload["schema"] == JSON_SCHEMA and payload["run_id"] == json_run.name
    assert payload["columns"] == CSV_COLUMNS
    rows = payload["rows"]
    assert len(rows) == 3 * 2 * 2 and all(list(r) == CSV_COLUMNS for r in rows)
    ok = [r for r in rows if r["label"] == "softmax"]
    assert all(r["status"] == "ok" and r["median_ms"] > 0 and isinstance(r["flops"], int) for r in ok)
    broken = [r for r in rows if r["label"] == "t-json-broken"]
    assert all(r["status"] == "error" and r["median_ms"] is None and r["flops"] is None for r in broken)
    assert broken[0]["error"].startswith("_Broken returned shape (1, 16, 16), expected (1, 16, 32)")


# --- what report refuses ------------------------------------------------------------------

def test_report_on_a_directory_of_runs_points_to_runs(tmp_path: Path):
    fake_run(tmp_path, "r1", "one", "finished")
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "attnbench runs" in result.output


def test_report_refuses_to_pair_different_device_models(tiny_run, tmp_path):
    run_dir = tmp_path / "mixed"
    shutil.copytree(tiny_run, run_dir)
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
    result = CliRunner().invoke(app, ["compare", str(tiny_run), str(run_dir)])
    assert result.exit_code == 0, result.output


# --- the verdict first, --strict, the allocator in the header -------------------------------

def _busy_run(tmp_path: Path, share: float) -> Path:
    records = [lra_record(v, n, {"forward": {"status": "ok", "samples_ms": lra_samples(LRA_TIMES[v](n)),
                                             "peak_mem_mib": 1.0}})
               for v in ("softmax", "linear") for n in LRA_NS]
    start = {"device": "cpu", "dtype": "float32", "matmul_flops": 1e11, "bandwidth_bytes_per_s": 2e10,
             "malloc": "default"}
    return write_run(tmp_path / f"run-{share}", records, published=None, allocator="default",
                     noise={"other_share": share, "cores": 2},
                     calibration={"start": [start], "end": [{**start, "matmul_flops": 1.02e11}]})


def test_the_verdict_comes_first_in_every_format_and_strict_exits_4(tmp_path):
    busy, quiet = _busy_run(tmp_path, 0.47), _busy_run(tmp_path, 0.01)
    result = runner.invoke(app, ["report", str(busy)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("timings unreliable") and "47% of the cores" in result.stdout.splitlines()[0]
    assert runner.invoke(app, ["report", str(busy), "--strict"]).exit_code == 4
    assert runner.invoke(app, ["report", str(quiet), "--strict"]).exit_code == 0
    quiet_out = runner.invoke(app, ["report", str(quiet)], env={"COLUMNS": "200"}).stdout
    assert quiet_out.startswith("timings trustworthy")
    md = tmp_path / "r.md"
    assert runner.invoke(app, ["report", str(busy), "--markdown", str(md)]).exit_code == 0
    assert md.read_text().splitlines()[2].startswith("> **timings unreliable")
    payload = json.loads(runner.invoke(app, ["report", str(busy), "--json"]).stdout)
    assert payload["verdict"]["level"] == "unreliable" and payload["verdict"]["reasons"]


def test_the_markdown_report_carries_the_warnings_the_terminal_printed(tmp_path):
    busy = _busy_run(tmp_path, 0.47)
    terminal = runner.invoke(app, ["report", str(busy)], env={"COLUMNS": "300"}).stdout
    warned = [line for line in terminal.splitlines() if line.startswith("warning: other processes")]
    assert warned
    md = tmp_path / "r.md"
    assert runner.invoke(app, ["report", str(busy), "--markdown", str(md)]).exit_code == 0
    quoted = [line.removeprefix("> ").rstrip() for line in md.read_text().splitlines()[:8]]
    assert warned[0] in quoted  # right under the verdict, before the facts


def test_every_report_states_the_allocator(tmp_path):
    run = _busy_run(tmp_path, 0.01)
    out = runner.invoke(app, ["report", str(run)], env={"COLUMNS": "200"}).stdout
    assert "allocator: default (glibc's own thresholds" in out
    md = tmp_path / "r.md"
    runner.invoke(app, ["report", str(run), "--markdown", str(md)])
    assert "- **allocator**: default" in md.read_text()
    assert json.loads(runner.invoke(app, ["report", str(run), "--json"]).stdout)["allocator"] == "default"


@pytest.mark.slow
def test_an_unreliable_run_carries_a_banner_on_its_charts(tmp_path, monkeypatch):
    from attnbench.report import plots

    banners = []
    monkeypatch.setattr(plots, "draw_banner", lambda fig, banner: banners.append(banner))
    busy = _busy_run(tmp_path, 0.47)
    assert runner.invoke(app, ["report", str(busy), "--plot", str(tmp_path / "p.png")]).exit_code == 0
    assert banners and banners[-1].startswith("timings unreliable")
    quiet = _busy_run(tmp_path, 0.01)
    assert runner.invoke(app, ["report", str(quiet), "--plot", str(tmp_path / "q.png")]).exit_code == 0
    assert banners[-1] is None


# --- report --html (the page itself: tests/report/test_html.py and test_html_browser.py) ----------

def test_report_html_writes_one_page_and_says_where(tiny_run: Path, tmp_path: Path):
    pytest.importorskip("vl_convert", reason="the html extra (vl-convert-python) is not installed")
    page = tmp_path / "out" / "tiny.html"
    result = runner.invoke(app, ["report", str(tiny_run), "--html", str(page)])
    assert result.exit_code == 0, result.output
    assert f"wrote {page}" in result.stderr and "softmax" in result.stdout  # the tables too
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and build_report(tiny_run).verdict.headline in text


def test_report_html_without_the_extra_is_one_line_naming_it_and_exit_2(tiny_run: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    import sys

    monkeypatch.setitem(sys.modules, "vl_convert", None)  # as if not installed: importing it fails
    page = tmp_path / "tiny.html"
    result = runner.invoke(app, ["report", str(tiny_run), "--html", str(page)])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "pip install 'attnbench[html]'" in result.stderr
    assert result.stdout == "" and not page.exists()  # refused before anything is printed

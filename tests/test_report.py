"""`attnbench report` on a synthetic run: LRA-style tables, scaling exponents,
crossovers, the published table with the rank correlation, markdown and plots;
and the shipped suites validate."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnbench.cli.app import app
from attnbench.report.build import ReportOptions, build_report
from attnbench.report.markdown import markdown_report
from attnbench.store.results import load_run
from attnbench.suite import load as suite_mod

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
NS = [1024, 2048, 3072, 4096]
# median ms per N: softmax quadratic, linear linear and overtaking softmax near N = 1.5K
TIMES = {"softmax": lambda n: (n / 1024) ** 2 * 10.0, "linear": lambda n: n / 1024 * 15.0,
         "performer": lambda n: n / 1024 * 5.0, "synthesizer": lambda n: (n / 1024) ** 2 * 12.0}


def _record(label: str, n: int, passes: dict[str, dict]) -> dict:
    case = {"suite": "lra", "variant": label, "label": label, "params": {}, "batch": 1, "seq_len": n, "heads": 4,
            "dim": 256, "dtype": "float32", "device": "cpu", "causal": False, "passes": list(passes),
            "compile": False}
    statuses = [p["status"] for p in passes.values()]
    return {"schema": 1, "case_id": f"{label}|N={n}|H=4|dim=256|B=1|float32|cpu|causal=0", "case": case,
            "passes": [{"pass": k, **v} for k, v in passes.items()], "family": "x", "threads": 2,
            "param_count": 1, "device_name": "cpu", "status": "ok" if set(statuses) == {"ok"} else statuses[0],
            "error": None}


def write_run(path: Path, records: list[dict], published: str | None = "lra_table2",
              baseline: str | None = "softmax") -> Path:
    path.mkdir(parents=True)
    meta = {"schema": 1, "run_id": path.name, "suite_name": "lra", "baseline": baseline, "published": published,
            "status": "finished", "environment": {"torch": "x", "cpu_model": "test cpu", "torch_threads": 2}}
    (path / "run.json").write_text(json.dumps(meta))
    (path / "cases.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def samples(median: float, spread: float = 0.01) -> list[float]:
    return [median * (1 + spread * k) for k in (-2, -1, 0, 1, 2)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    records = []
    for label, f in TIMES.items():
        for n in NS:
            mem = n * n / 1e4 if label in ("softmax", "synthesizer") else n / 100
            noisy = label == "performer" and n == 2048
            records.append(_record(label, n, {
                "forward": {"status": "ok", "samples_ms": samples(f(n) / 3, 0.1 if noisy else 0.01),
                            "peak_mem_mib": mem / 2, "flops": 1},
                "forward_backward": {"status": "ok", "samples_ms": samples(f(n)), "peak_mem_mib": mem, "flops": 3}}))
    records.append(_record("bigbird", 1024, {"forward": {"status": "ok", "samples_ms": [3.0, 3.1, 3.2],
                                                         "peak_mem_mib": 5.0},
                                             "forward_backward": {"status": "ok", "samples_ms": [9.0, 9.1, 9.2],
                                                                  "peak_mem_mib": 9.0}}))
    records.append(_record("bigbird", 2048, {"forward": {"status": "oom", "error": "out of memory", "samples_ms": []},
                                             "forward_backward": {"status": "oom", "samples_ms": []}}))
    return write_run(tmp_path_factory.mktemp("report") / "run-lra", records)


def test_report_prints_lra_tables_scaling_and_the_published_table(run_dir: Path):
    result = runner.invoke(app, ["report", str(run_dir)])
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


def test_crossover_value_is_right(run_dir: Path):
    # linear 15·x ms vs softmax 10·x² ms (x = N/1024) meet at x = 1.5, i.e. N = 1536; interpolated in
    # log-log between 1024 and 2048 the lines are straight, so the crossover is exact
    from attnbench.analysis.scaling import scaling_summary

    s = scaling_summary(load_run(run_dir).frame(), "softmax", "forward_backward").set_index("label")
    assert s.loc["linear", "crossover_n"] == pytest.approx(1536, rel=1e-6)


def test_markdown_and_png_plot_are_written(run_dir: Path, tmp_path: Path):
    md, png = tmp_path / "out" / "report.md", tmp_path / "out" / "fig.png"
    result = runner.invoke(app, ["report", str(run_dir), "--markdown", str(md), "--plot", str(png)])
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


def test_svg_plot_is_valid_xml(run_dir: Path, tmp_path: Path):
    svg = tmp_path / "fig.svg"
    result = runner.invoke(app, ["report", str(run_dir), "--plot", str(svg)])
    assert result.exit_code == 0, result.output
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    text = svg.read_text()
    for label in ("softmax", "linear", "performer"):
        assert label in text  # legend entries


def test_plot_refuses_other_formats(run_dir: Path, tmp_path: Path):
    result = runner.invoke(app, ["report", str(run_dir), "--plot", str(tmp_path / "fig.jpg")])
    assert result.exit_code == 2 and ".png or .svg" in result.output


def test_report_without_a_published_table_or_with_an_unknown_one(tmp_path: Path):
    recs = [_record(v, n, {"forward": {"status": "ok", "samples_ms": samples(TIMES[v](n)), "peak_mem_mib": 1.0}})
            for v in ("softmax", "linear") for n in (1024, 2048)]
    plain = write_run(tmp_path / "plain", recs, published=None)
    result = runner.invoke(app, ["report", str(plain)])
    assert result.exit_code == 0 and "Spearman" not in result.stdout and "scaling in N" in result.stdout
    odd = write_run(tmp_path / "odd", recs, published="no_such_table")
    result = runner.invoke(app, ["report", str(odd)])
    assert result.exit_code == 0 and "unknown published table" in result.stdout
    # the Spearman line says so when too few models can be paired
    md = markdown_report(build_report(load_run(write_run(tmp_path / "few", recs[:2])), ReportOptions("softmax")))
    assert "not enough models in common" in md


@pytest.mark.parametrize("name", ["lra", "fastformer"])
def test_shipped_suites_validate(name: str):
    path = ROOT / "suites" / f"{name}.yaml"
    full, quick = suite_mod.load(path), suite_mod.load(path, quick=True)
    assert full.baseline == "softmax"
    for s in (full, quick):
        assert all(set(c.passes) == {"forward", "forward_backward"} for c in s.cases())
    if name == "lra":
        assert full.published == "lra_table2"
        assert full.defaults["batch"] == 32 and full.defaults["dim"] == 256 and full.grid["heads"] == [4]
        assert full.grid["seq_lens"] == [1024, 2048, 3072, 4096]
        from attnbench.store.published import load_published

        assert {v.name for v in full.variants} == set(load_published("lra_table2").frame["variant"])
        assert quick.defaults["batch"] < 32 and quick.grid["seq_lens"] == full.grid["seq_lens"]
    else:
        assert full.defaults["dim"] == 256 and full.grid["heads"] == [16]
        assert {v.name for v in full.variants} == {"softmax", "longformer", "bigbird", "linformer", "linear",
                                                   "poolingformer", "fastformer"}
        ns = full.grid["seq_lens"]
        assert all(b == 2 * a for a, b in zip(ns, ns[1:], strict=False))


def test_report_reads_at_80_columns_and_shows_every_pass(tmp_path: Path):
    # issue 18, item 9: a header, every measured pass in the final table and a
    # scaling table per pass, each legend once, one empty-cell mark, titles unbroken
    records = [_record(v, n, {p: {"status": "ok", "samples_ms": samples(m * n / 1024), "peak_mem_mib": 1.0}
                              for p in ("forward", "backward")})
               for v, m in (("softmax", 4.0), ("linear", 2.0)) for n in (1024, 2048, 4096)]
    run_dir = write_run(tmp_path / "run-fb", records, published=None)
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


def test_a_log_axis_within_a_decade_still_has_tick_labels():
    # issue 18, item 11: between 1.1 and 1.9 matplotlib labels no tick at all
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from attnbench.report.plots import readable_log_ticks

    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [1.1, 1.4, 1.9])
    ax.set_yscale("log")
    readable_log_ticks(ax)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    plt.close(fig)
    assert len(labels) >= 2 and all(1.0 <= float(x) <= 2.0 for x in labels), labels

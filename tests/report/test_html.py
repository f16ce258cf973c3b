"""attnbench/report/html.py, html_page.py and html_compare.py without a browser:
the page is one file that fetches nothing, every text from a run is escaped,
the charts' data are the run's cases, every chart's spec compiles with the
Vega-Lite the page inlines, the size stays under the limit for the committed
reference runs, and without the html extra the error is one line naming it.
What a browser does with the page is tests/report/test_html_browser.py."""

from __future__ import annotations

import html as html_lib
import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from attnbench.errors import AttnbenchError
from attnbench.report import html_page
from attnbench.report.build import build_report
from attnbench.store.results import load_run
from tests.helpers import (
    HOSTILE_ERROR,
    HOSTILE_LABEL,
    HOSTILE_TRACEBACK,
    ROOT,
    hostile_run,
    recorded_run,
    write_run,
)

pytest.importorskip("vl_convert", reason="the html extra (vl-convert-python) is not installed")

from attnbench.report.html import html_report, label_offsets  # noqa: E402 - after the skip
from attnbench.report.html_compare import changed_first, html_two_runs  # noqa: E402

REFERENCE = ROOT / "results" / "reference-cpu"
# A tag or CSS rule that would fetch something: src=/href= to a URL, <link>, @import, url(http...).
FETCHES = re.compile(r"""(?:\b(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//)|<link\b|@import|"""
                     r"""url\(\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def data_of(page: str) -> dict:
    """The page's chart specs, read back as the page's script reads them."""
    block = re.search(r'<script type="application/json" id="attnbench-data">(.*?)</script>', page, re.S)
    assert block is not None
    return json.loads(block.group(1))


def markup_of(page: str) -> str:
    """The page without its scripts: what the browser parses as markup."""
    return re.sub(r"<script\b[^>]*>.*?</script>", "", page, flags=re.S)


def chart_points(page: str, kind: str) -> list[dict]:
    """The points of every chart of ``kind``: the values its named point layer draws."""
    specs = data_of(page)["specs"]
    ids = re.findall(rf'data-spec="(chart-\d+)" data-chart="{kind}"', page)
    out = []
    for chart_id in ids:
        spec = specs[chart_id]
        layer = next(layer for layer in spec["layer"] if layer.get("name") == "points")
        rows = layer.get("data", spec["data"])["values"]
        for step in layer.get("transform", []):
            if step.get("filter") == "datum.kind == 'visit'":
                rows = [r for r in rows if r.get("kind") == "visit"]
        out.extend(rows)
    return out


@pytest.fixture(scope="module")
def tiny_page(tiny_run: Path) -> str:
    return html_report(build_report(tiny_run))


@pytest.fixture(scope="module")
def hostile_page(tmp_path_factory) -> str:
    return html_report(build_report(hostile_run(tmp_path_factory.mktemp("hostile") / "hostile-<i>run")))


def test_the_page_is_one_file_that_fetches_nothing(tiny_page: str):
    assert tiny_page.startswith("<!DOCTYPE html>")
    assert not FETCHES.search(markup_of(tiny_page)), FETCHES.search(markup_of(tiny_page))
    assert not re.search(r"<script\b[^>]*\bsrc=", tiny_page, re.I)  # every script inline
    assert "window.vegaEmbed" in tiny_page  # Vega's bundle is in it
    assert len(re.findall(r"<script\b", tiny_page)) == 3  # the data, Vega's bundle, the page's own


def test_the_verdict_comes_first_as_a_banner_coloured_by_its_level(tiny_run: Path, tiny_page: str):
    verdict = build_report(tiny_run).verdict
    body = tiny_page[tiny_page.index("<body>"):]
    assert body.index('id="verdict"') < body.index("<h1>")
    assert f'class="banner-line {verdict.level}"' in body
    assert html_lib.escape(verdict.headline) in body


def test_every_text_from_the_run_is_escaped(hostile_page: str):
    markup = markup_of(hostile_page)
    for raw in (HOSTILE_LABEL, "<script>alert(5)</script>", "<b>hostile</b>", "<img src=y", "<svg onload",
                "<i>x</i>.yaml", "<i>run"):
        assert raw not in markup, raw
    assert html_lib.escape(HOSTILE_LABEL) in markup  # shown, as text
    assert html_lib.escape(HOSTILE_ERROR.strip()) in markup
    assert html_lib.escape("<svg onload=alert(3)>") in markup  # the traceback, shown
    # The only elements are the page's own: no tag a run's text could have opened.
    assert set(re.findall(r"<([a-zA-Z][a-zA-Z0-9]*)", markup)) <= {
        "html", "head", "meta", "title", "style", "body", "header", "p", "main", "h1", "h2", "h3", "h4", "dl", "div",
        "dt", "dd", "ul", "li", "details", "summary", "label", "input", "span", "button", "nav", "a", "section",
        "figure", "figcaption", "table", "thead", "tbody", "tr", "th", "td", "pre"}
    # Nothing closes a script early: each script ends where the page ends it.
    assert hostile_page.count("</script>") == 3
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", hostile_page, re.S)
    assert all("<!--" not in s and "</script" not in s.lower() for s in scripts)
    # The data block reads back to the run's own text.
    labels = {v.get("label") for spec in data_of(hostile_page)["specs"].values() for v in spec["data"]["values"]}
    assert HOSTILE_LABEL in labels


def test_script_json_cannot_end_its_script_or_open_a_comment():
    text = html_page.script_json({"x": HOSTILE_ERROR, "t": HOSTILE_TRACEBACK, "n": float("nan")})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"x": HOSTILE_ERROR, "t": HOSTILE_TRACEBACK, "n": None}


def test_each_chart_draws_the_cases_of_the_run(tiny_run: Path, tiny_page: str):
    """The time and memory charts of each pass hold one point per measured case
    of the CSV; the speed-up chart one per case of every variant but the baseline."""
    csv = pd.read_csv(tiny_run / "results.csv")
    ok = csv[csv["status"] == "ok"]
    times = chart_points(tiny_page, "time")
    assert len(times) == len(ok)
    got = sorted((p["label"], p["n"], round(p["median"], 9)) for p in times)
    assert got == sorted((r.label, r.seq_len, round(r.median_ms, 9)) for r in ok.itertuples())
    assert len(chart_points(tiny_page, "memory")) == int((ok["peak_mem_mib"] > 0).sum())
    speedups = chart_points(tiny_page, "speedup")
    assert len(speedups) == int((ok["label"] != "softmax").sum())
    assert all(p["low"] <= p["speedup"] <= p["high"] for p in speedups if p["low"] is not None)
    assert any(p["noisy"] for p in times)  # tiny's noisy cases: drawn hollow


def test_the_median_table_holds_the_csv_figures(tiny_run: Path, tiny_page: str):
    csv = pd.read_csv(tiny_run / "results.csv")
    table = re.search(r'data-table="median-forward">(.*?)</table>', tiny_page, re.S).group(1)
    values = [float(v) for v in re.findall(r'data-value="([^"]+)"', table)]
    ok = csv[(csv["status"] == "ok") & (csv["pass"] == "forward")]
    assert sorted(values) == pytest.approx(sorted(ok["median_ms"]), rel=1e-12)


def test_every_chart_compiles_with_the_inlined_vega_lite(tiny_page: str, hostile_page: str, lra_run_dir: Path):
    import vl_convert

    pages = [tiny_page, hostile_page, html_report(build_report(lra_run_dir))]
    for page in pages:
        for chart_id, spec in data_of(page)["specs"].items():
            compiled = vl_convert.vegalite_to_vega(spec, vl_version=html_page.VEGA_LITE_VERSION)
            assert any(s.get("name") == html_page.HIDDEN_SIGNAL for s in compiled.get("signals", [])), chart_id


def test_the_trade_off_chart_beside_lras_when_the_run_has_lra_variants(lra_run_dir: Path):
    page = html_report(build_report(lra_run_dir))
    assert 'id="tradeoff"' in page and 'data-chart="tradeoff-published"' in page
    points = chart_points(page, "tradeoff")
    assert {p["label"] for p in points} >= {"softmax", "linear", "performer"}
    assert all(p["low"] is None or p["low"] <= p["x"] <= p["high"] for p in points)
    assert 'id="published"' in page and "Spearman" in page  # the published table, the rank agreement


def test_labels_close_together_are_moved_apart():
    offsets = label_offsets([10.0, 10.0, 10.0, 1000.0], [50.0, 50.0, 50.0, 50.0], ["aaa", "bbb", "ccc", "d"],
                            [1.0, 10000.0])
    assert len(set(offsets[:3])) == 3 and offsets[3] == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.name for p in REFERENCE.iterdir() if (p / "run.json").exists()))
def test_the_reference_runs_pages_stay_under_the_size_limit(name: str, tmp_path: Path):
    page = html_report(build_report(REFERENCE / name))
    size = len(page.encode("utf-8"))
    assert size < html_page.SIZE_LIMIT_BYTES, f"{name}: {size:,} bytes"
    assert 'class="banner-line trustworthy"' in page  # every committed reference reads trustworthy


def test_without_the_extra_the_error_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "vl_convert", None)  # import vl_convert now raises ImportError
    with pytest.raises(AttnbenchError) as caught:
        html_page.require_html()
    message = str(caught.value)
    assert "\n" not in message and "pip install 'attnbench[html]'" in message


# --- compare A B ------------------------------------------------------------------------------

def test_compare_lists_the_changed_cases_first_with_their_visits(tmp_path: Path):
    from attnbench.analysis.two_runs import compare_two_runs, suite_differences

    run_a = recorded_run("aa", tmp_path)
    visits = load_run(run_a).visits
    slow = json.loads(json.dumps(visits))
    for r in slow:
        if r["case"]["label"] == "linear":
            for p in r["passes"]:
                p["samples_ms"] = [2 * x for x in p["samples_ms"]]
    run_b = write_run(tmp_path / "slow", slow, suite_name="aa")
    a, b = load_run(run_a), load_run(run_b)
    runs = compare_two_runs(a.records, b.records)
    ordered = changed_first(runs.compared)
    assert list(ordered["mark"])[:2] == ["+", "+"] and set(ordered["label"].iloc[:2]) == {"linear"}
    page = html_two_runs(a, b, runs, suite_differences(a.meta, b.meta))
    body = page[page.index("<main>"):]
    assert body.index('id="changed"') < body.index('id="cases"') < body.index('id="per-variant"')
    visits_drawn = chart_points(page, "visits")
    assert len(visits_drawn) == sum(int(r.n_a + r.n_b) for r in ordered.iloc[:2].itertuples())
    assert {v["run"] for v in visits_drawn} == {"A", "B"}
    assert not FETCHES.search(markup_of(page))


@pytest.mark.slow
def test_a_decode_run_has_the_decode_table(tmp_path: Path):
    """A small decode suite, run in process: the page holds the decode table, each
    cell sorting by the report's µs per token, and the decode scaling."""
    from attnbench.bench.rundir import RunOptions
    from attnbench.bench.sweep import run_suite
    from attnbench.suite import load as suite_mod
    from tests.helpers import write

    suite = write(tmp_path / "serve.yaml", """\
        name: serve
        defaults: {head_dim: 8, causal: true, passes: [prefill, decode], decode_steps: 4}
        grid: {seq_lens: [32, 64], heads: [4], kv_heads: [4, 2]}
        variants: [sdpa, linear]
        timing: {rounds: 2, warmup: 0, max_reps: 3, min_reps: 2, min_time_s: 0.001}
        """)
    summary = run_suite(suite_mod.load(suite), RunOptions(out_dir=tmp_path / "runs", quiet=True, in_process=True))
    report = build_report(summary.run_dir)
    page = html_report(report)
    table = re.search(r'data-table="decode">(.*?)</table>', page, re.S).group(1)
    values = sorted(float(v) for v in re.findall(r'data-value="([^"]+)"', table))
    assert values == pytest.approx(sorted(report.decode["us_per_token"]), rel=1e-12)
    assert 'data-table="decode-scaling"' in page and 'data-chart="time" data-pass-name="decode"' in page

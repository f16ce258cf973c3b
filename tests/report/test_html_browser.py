"""The HTML pages of report --html and compare --html in a real browser:
headless Chromium (Debian's ``chromium``, at /usr/bin/chromium or
$ATTNBENCH_CHROMIUM) driven by playwright (the ``browser`` extra; no
``playwright install``: the system's Chromium is used). Each page is opened
from disk with the network off, at a laptop's width (1366) and a phone's
(390): no console error, no request but the file itself, every chart has drawn
a point per case of the run, nothing wider than the screen, a screenshot saved
(under $ATTNBENCH_SCREENSHOTS when set). A table's numbers equal the CSV's;
switching a variant off hides it in every chart and table; a column sorts; a
variant labelled ``<img src=x onerror=alert(1)>`` shows as that text and runs
nothing.

Without Chromium or playwright the tests skip, saying why; with
ATTNBENCH_REQUIRE_BROWSER=1 (CI sets it) they fail instead."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from attnbench.report.cells import fmt_ms
from attnbench.store.results import load_run
from tests.helpers import HOSTILE_ERROR, HOSTILE_LABEL, ROOT, hostile_run, recorded_run, write_run

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("ATTNBENCH_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("ATTNBENCH_REQUIRE_BROWSER") == "1"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
WIDTHS = {"laptop": 1366, "phone": 390}
REFERENCE = ROOT / "results" / "reference-cpu"
LOCAL = ("file:", "data:", "blob:", "about:")


def unavailable() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[browser]')"
    try:
        import vl_convert  # noqa: F401
    except ImportError:
        return "the html extra is not installed (pip install -e '.[html]')"
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set ATTNBENCH_CHROMIUM)"
    return None


def skip_or_fail(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"ATTNBENCH_REQUIRE_BROWSER=1 but the browser tests cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = unavailable()
    if reason:
        skip_or_fail(reason)
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as p:
        try:
            chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        except Error as exc:
            skip_or_fail(f"Chromium at {CHROMIUM} did not start: {str(exc).splitlines()[0]}")
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = os.environ.get("ATTNBENCH_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


class Opened:
    """A page opened in the browser, with what it logged: console errors and
    uncaught exceptions, every request, every dialog (alert, confirm)."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.dialogs: list[str] = []

    def points(self) -> list[tuple[str, str, int]]:
        """(kind, pass, points drawn) per chart: the symbols of its named point layer."""
        return [tuple(x) for x in self.page.evaluate(
            """Array.from(document.querySelectorAll('.chart')).map(c => [c.dataset.chart, c.dataset.passName || '',
                 c.querySelectorAll('g.points_marks > path').length])""")]


@contextmanager
def opened(browser: Any, path: Path, width: int) -> Iterator[Opened]:
    """``path`` opened from disk with the network off (offline, and any request
    that is not the file itself aborted), once its charts are drawn."""
    context = browser.new_context(viewport={"width": width, "height": 900}, offline=True)
    context.route(re.compile(r"^(?!file:|data:|blob:|about:)"), lambda route: route.abort())
    page = context.new_page()
    log = Opened(page)
    page.on("console", lambda m: log.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: log.errors.append(str(e)))
    page.on("request", lambda r: log.requests.append(r.url))

    def dialog(d: Any) -> None:
        log.dialogs.append(d.message)
        d.dismiss()

    page.on("dialog", dialog)
    try:
        page.goto(path.as_uri())
        page.wait_for_selector("html[data-rendered]", state="attached", timeout=60_000)
        yield log
    finally:
        context.close()


# --- the pages --------------------------------------------------------------------------------

def write_report(run_dir: Path, out: Path) -> Path:
    from attnbench.report.build import build_report
    from attnbench.report.html import html_report, write_html

    return write_html(out, html_report(build_report(run_dir)))


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, tuple[Path, Path | tuple[Path, Path]]]:
    """name -> (the page, its run directory or runs A and B)."""
    if unavailable():
        skip_or_fail(unavailable())
    from attnbench.analysis.two_runs import compare_two_runs, suite_differences
    from attnbench.report.html import write_html
    from attnbench.report.html_compare import html_two_runs

    tmp = tmp_path_factory.mktemp("pages")
    out: dict[str, tuple[Path, Any]] = {}
    tiny = recorded_run("tiny", tmp / "runs")
    out["tiny"] = (write_report(tiny, tmp / "tiny.html"), tiny)
    for name in ("overview", "lra", "quality"):
        out[name] = (write_report(REFERENCE / name, tmp / f"{name}.html"), REFERENCE / name)
    hostile = hostile_run(tmp / "runs" / "hostile")
    out["hostile"] = (write_report(hostile, tmp / "hostile.html"), hostile)
    run_a = recorded_run("aa", tmp / "aa")
    slow = load_run(run_a).visits
    for r in slow:  # linear twice as slow in B
        if r["case"]["label"] == "linear":
            for p in r["passes"]:
                p["samples_ms"] = [2 * x for x in p["samples_ms"]]
    run_b = write_run(tmp / "slow", slow)
    a, b = load_run(run_a), load_run(run_b)
    runs = compare_two_runs(a.records, b.records)
    out["compare"] = (write_html(tmp / "compare.html", html_two_runs(a, b, runs, suite_differences(a.meta, b.meta))),
                      (run_a, run_b))
    return out


def expected_points(run_dir: Path) -> dict[tuple[str, str], int]:
    """Per (chart kind, pass): the points the run's CSV says a chart must draw."""
    csv = pd.read_csv(run_dir / "results.csv") if (run_dir / "results.csv").exists() \
        else load_run(run_dir).frame()
    ok = csv[csv["status"] == "ok"]
    meta = json.loads((run_dir / "run.json").read_text())
    baseline = meta.get("baseline") or "softmax"
    out = {}
    for pass_name, rows in ok.groupby("pass"):
        out[("time", pass_name)] = len(rows)
        out[("memory", pass_name)] = int((rows["peak_mem_mib"] > 0).sum())
        base = set(zip(rows[rows["label"] == baseline]["seq_len"], rows[rows["label"] == baseline]["heads"],
                       strict=True))
        out[("speedup", pass_name)] = sum(1 for r in rows.itertuples()
                                          if r.label != baseline and (r.seq_len, r.heads) in base)
    step = ok[ok["pass"] == "forward_backward"]
    if not step.empty:  # the trade-off chart: every variant at the N most of them measured
        counts = step.groupby("seq_len")["label"].nunique()
        n = max(counts.index, key=lambda m: (counts[m], m))
        out[("tradeoff", "")] = int(step[step["seq_len"] == n]["label"].nunique())
    return out


@pytest.mark.parametrize("width", list(WIDTHS))
@pytest.mark.parametrize("name", ["tiny", "overview", "lra", "quality", "hostile", "compare"])
def test_each_page_opens_offline_without_errors_and_draws_every_point(browser, pages, shots, name, width):
    path, runs = pages[name]
    with opened(browser, path, WIDTHS[width]) as log:
        page = log.page
        assert log.errors == []
        assert [u for u in log.requests if not u.startswith(LOCAL)] == []
        assert log.dialogs == []
        charts = log.points()
        assert int(page.get_attribute("html", "data-rendered")) == len(charts) > 0
        assert page.locator("[data-chart-error]").count() == 0
        drawn: dict[tuple[str, str], int] = {}
        for kind, pass_name, count in charts:
            key = ("tradeoff", "") if kind.startswith("tradeoff") and kind != "tradeoff-published" else (kind,
                                                                                                         pass_name)
            drawn[key] = drawn.get(key, 0) + count
        if name == "compare":
            run_a, run_b = runs  # the changed cases (linear's) with every visit of both runs
            visits = [r for run in (run_a, run_b) for r in load_run(run).visits if r["case"]["label"] == "linear"]
            assert drawn[("visits", "")] == sum(len(r["passes"]) for r in visits)
        else:
            expected = expected_points(runs)
            assert {k: v for k, v in drawn.items() if k in expected} == expected
        wide = page.evaluate("document.documentElement.scrollWidth")
        assert wide <= WIDTHS[width], f"the page is {wide}px wide on a {WIDTHS[width]}px screen"
        shot = shots / f"{name}-{WIDTHS[width]}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000


def test_a_tables_numbers_are_the_csvs(browser, pages):
    path, run_dir = pages["lra"]
    csv = pd.read_csv(run_dir / "results.csv")
    ok = csv[(csv["status"] == "ok") & (csv["pass"] == "forward")].set_index(["label", "seq_len"])
    with opened(browser, path, 1366) as log:
        table = log.page.locator('table[data-table="median-forward"]')
        ns = [int(t.removeprefix("N=")) for t in table.locator("thead th").all_inner_texts()[1:]]
        rows = table.locator("tbody tr")
        assert rows.count() == csv["label"].nunique()
        checked = 0
        for i in range(rows.count()):
            cells = rows.nth(i).locator("td")
            label = cells.nth(0).inner_text()
            for j, n in enumerate(ns, start=1):
                cell = cells.nth(j)
                if (label, n) not in ok.index:
                    continue
                median = float(ok.loc[(label, n), "median_ms"])
                assert float(cell.get_attribute("data-value")) == pytest.approx(median, rel=1e-12)
                assert cell.inner_text().rstrip("~") == fmt_ms(median)
                checked += 1
        assert checked == len(ok)


def test_switching_a_variant_off_hides_it_in_every_chart_and_table(browser, pages):
    path, run_dir = pages["overview"]
    csv = pd.read_csv(run_dir / "results.csv")
    gone = csv[(csv["label"] == "linformer") & (csv["status"] == "ok")]
    with opened(browser, path, 1366) as log:
        page = log.page
        before = log.points()
        rows = page.locator('tr[data-labels="[&quot;linformer&quot;]"], tr[data-labels=\'["linformer"]\']')
        assert rows.count() > 5 and all(rows.nth(i).is_visible() for i in range(rows.count()))
        page.locator('#variants input[data-label="linformer"]').uncheck()
        page.wait_for_function("""() => Array.from(document.querySelectorAll('.chart[data-chart="time"]'))
            .every(c => c.querySelectorAll('g.points_marks > path').length < 96)""")
        after = log.points()
        for (kind, pass_name, n_before), (_, _, n_after) in zip(before, after, strict=True):
            if kind in ("time", "memory"):
                assert n_before - n_after == int((gone["pass"] == pass_name).sum()), (kind, pass_name)
            elif kind in ("speedup", "tradeoff", "tradeoff-unscored"):
                assert n_after <= n_before
        assert not any(rows.nth(i).is_visible() for i in range(rows.count()))
        texts = page.evaluate("Array.from(document.querySelectorAll('.chart svg text')).map(t => t.textContent)")
        assert "linformer" not in texts  # the trade-off chart's label, the speed-up chart's row
        assert page.inner_text("#shown-count") == "23 of 24"
        page.locator('#variants input[data-label="linformer"]').check()
        page.wait_for_function("document.querySelector('#shown-count').textContent === '24 of 24'")
        page.wait_for_timeout(300)
        assert log.points() == before and all(rows.nth(i).is_visible() for i in range(rows.count()))
        assert log.errors == []


def test_a_column_sorts_by_its_numbers(browser, pages):
    path, _ = pages["overview"]
    with opened(browser, path, 1366) as log:
        table = log.page.locator('table[data-table="median-forward"]')
        header = table.locator("thead th").nth(4)  # N=8192

        def column() -> list[float]:
            return [float(v) for v in table.locator("tbody tr td:nth-child(5)").evaluate_all(
                "cells => cells.map(c => c.getAttribute('data-value'))") if v is not None]

        header.locator("button").click()
        assert header.get_attribute("aria-sort") == "ascending" and column() == sorted(column())
        header.locator("button").click()
        assert column() == sorted(column(), reverse=True)


def test_a_hostile_label_shows_as_text_and_runs_nothing(browser, pages):
    path, _ = pages["hostile"]
    with opened(browser, path, 1366) as log:
        page = log.page
        assert page.evaluate("document.querySelectorAll('img, image, iframe, object, embed').length") == 0
        assert page.locator("#variants .chip").nth(1).inner_text() == HOSTILE_LABEL
        assert HOSTILE_LABEL in page.locator('table[data-table="median-forward"]').inner_text()
        assert page.locator('table[data-table="failed"] td.wrap').first.inner_text() == HOSTILE_ERROR
        labels = page.evaluate("Array.from(document.querySelectorAll('.chart svg text')).map(t => t.textContent)")
        assert HOSTILE_LABEL in labels  # drawn as SVG text (the speed-up chart's row, the trade-off label)
        # Its tooltip: the label as text, no element made from it.
        page.evaluate("document.getElementById('variants').open = false")  # the switches float over the charts
        points = page.locator('.chart[data-chart="time"] g.points_marks > path')
        shown = ""
        for i in range(points.count()):
            points.nth(i).hover(timeout=5_000)
            page.wait_for_timeout(50)
            shown = page.evaluate("(document.getElementById('vg-tooltip-element') || {}).innerText || ''")
            if HOSTILE_LABEL in shown:
                break
        assert HOSTILE_LABEL in shown
        assert page.evaluate("document.querySelectorAll('#vg-tooltip-element *:not(table, tbody, tr, td, h2)')"
                             ".length") == 0
        page.wait_for_timeout(500)  # an image's onerror would have fired by now
        assert log.dialogs == [] and log.errors == []
        assert page.evaluate("document.querySelectorAll('img, image').length") == 0

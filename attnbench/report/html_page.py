"""The page the HTML reports (``report --html``, ``compare A B --html``) share:
one self-contained file that opens from disk with no network. Vega, Vega-Lite
and vega-embed are inlined from ``vl-convert-python`` (the ``html`` extra;
docs/html.md says why Vega-Lite), the style and the script are the page's
own, and nothing is fetched: no script, style, font or image.

Everything a run holds (labels, parameters, error messages, tracebacks,
paths) was written by other people: every text is escaped where it enters
the page (``esc``), the charts' data travel as JSON in a non-executable
script block with ``<``, ``>`` and ``&`` escaped (``script_json``), and the
page's script only ever writes text (``textContent``), never markup. Vega
draws labels as SVG text and its tooltips escape what they show.

A page is a banner (the verdict, coloured), a header, the variant switches
(a variant switched off is hidden in every chart, through the Vega signal
``hiddenLabels``, and every table row or element whose ``data-labels`` are
all switched off), sortable tables and charts. Its script marks
``<html data-rendered="N">`` once the N charts are drawn (the browser tests
wait for it) and ``data-chart-error`` on a chart that failed.
"""

from __future__ import annotations

import functools
import html
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from attnbench.errors import AttnbenchError

HTML_EXTRA = "pip install 'attnbench[html]'"
HTML_MISSING = f"--html needs the html extra (Vega-Lite, inlined in the page), which is not installed: {HTML_EXTRA}"
VEGA_LITE_VERSION = "6.4"  # the Vega-Lite the specs are written for (vl-convert-python bundles several)
#: The size the reports aim under: the inlined Vega bundle is about 0.9 MB of it (docs/html.md).
SIZE_LIMIT_BYTES = 1_500_000
HIDDEN_SIGNAL = "hiddenLabels"  # the Vega signal holding the labels switched off

# One colour per variant, the same in every chart and switch: Tableau 10, then
# the lighter tab20 half, then four more; beyond them the list repeats.
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d",
           "#31a354", "#756bb1", "#636363"]
BANNER_LEVELS = ("trustworthy", "noisy", "unreliable", "unjudged")


def require_html() -> None:
    """Raise the one-line error naming the extra when Vega's bundle is not installed."""
    try:
        import vl_convert  # noqa: F401
    except ImportError:
        raise AttnbenchError(HTML_MISSING) from None


@functools.lru_cache(maxsize=1)
def vega_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one script (about 0.9 MB) that sets
    ``window.vegaEmbed``; safe inside a ``<script>`` element."""
    require_html()
    import vl_convert

    versions = vl_convert.get_vegalite_versions()
    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE_VERSION if VEGA_LITE_VERSION in versions else None)
    return re.sub(r"</(script)", r"<\\/\1", bundle, flags=re.IGNORECASE)


def esc(value: object) -> str:
    """Text from a run as HTML text or an attribute's value: shows as typed, runs nothing."""
    return html.escape("" if value is None else str(value), quote=True)


def plain(value: Any) -> Any:
    """``value`` as plain JSON data: numpy and pandas scalars as Python ones,
    NaN, infinities and missing values as None, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (str, bool)):
        return value
    if hasattr(value, "item") and not isinstance(value, (int, float)):
        try:
            value = value.item()
        except (ValueError, AttributeError):
            return str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return value
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


_SCRIPT_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(value: Any) -> str:
    """``value`` as JSON that can sit inside ``<script type="application/json">``:
    no ``</script>``, comment or entity can be formed from the data."""
    text = json.dumps(plain(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return re.sub("[<>&\u2028\u2029]", lambda m: _SCRIPT_UNSAFE[m.group(0)], text)


def labels_attr(labels: Iterable[str]) -> str:
    """The ``data-labels`` attribute of an element that belongs to these variants."""
    return f' data-labels="{esc(json.dumps(list(labels), ensure_ascii=False))}"'


# --- tables ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    """One table cell: its ``text``; ``value``, what the column sorts by (a
    number, or text; None: the text) and what the tests read; ``title``, the
    cell's hover text; ``css``, its class."""

    text: str
    value: float | str | None = None
    title: str | None = None
    css: str = ""


@dataclass
class Table:
    """A sortable table: ``rows`` are (labels the row belongs to, cells);
    ``numeric`` columns are right-aligned and sort as numbers; ``name`` is the
    ``data-table`` attribute (what tests look for)."""

    name: str
    title: str
    columns: Sequence[str]
    rows: list[tuple[list[str], list[Cell | str]]] = field(default_factory=list)
    numeric: Sequence[int] = ()
    caption: str | None = None

    def add(self, labels: Sequence[str], cells: Sequence[Cell | str]) -> None:
        self.rows.append((list(labels), list(cells)))

    def html(self) -> str:
        numeric = set(self.numeric)
        head = "".join(f'<th scope="col"{" class=num" if i in numeric else ""} data-kind='
                       f'"{"num" if i in numeric else "text"}"><button type="button">{esc(c)}</button></th>'
                       for i, c in enumerate(self.columns))
        body = []
        for labels, cells in self.rows:
            tds = []
            for i, cell in enumerate(cells):
                cell = cell if isinstance(cell, Cell) else Cell(str(cell))
                css = " ".join(x for x in ("num" if i in numeric else "", cell.css) if x)
                attrs = f' class="{css}"' if css else ""
                if cell.value is not None and not (isinstance(cell.value, float) and not math.isfinite(cell.value)):
                    attrs += f' data-value="{esc(cell.value)}"'
                if cell.title:
                    attrs += f' title="{esc(cell.title)}"'
                tds.append(f"<td{attrs}>{esc(cell.text)}</td>")
            body.append(f"<tr{labels_attr(labels) if labels else ''}>{''.join(tds)}</tr>")
        caption = f'<p class="caption">{esc(self.caption)}</p>' if self.caption else ""
        return (f'<div class="table-box"><h4>{esc(self.title)}</h4><div class="table-wrap"><table class="sortable" '
                f'data-table="{esc(self.name)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
                f"</table></div>{caption}</div>")


# --- charts ---------------------------------------------------------------------------------

class Charts:
    """The page's charts: each a Vega-Lite spec kept under an id, drawn by the
    page's script into ``<div class="chart" data-spec=ID>``."""

    def __init__(self) -> None:
        self.specs: dict[str, dict[str, Any]] = {}

    def add(self, spec: dict[str, Any], kind: str, title: str, caption: str | None = None, **attrs: object) -> str:
        """The chart's element under its ``title`` (HTML text: it wraps on a
        phone); ``kind`` and ``attrs`` become data- attributes (what tests look for)."""
        chart_id = f"chart-{len(self.specs) + 1}"
        self.specs[chart_id] = spec
        extra = "".join(f' data-{k.replace("_", "-")}="{esc(v)}"' for k, v in attrs.items())
        note = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
        return (f'<figure class="chart-box"><h4>{esc(title)}</h4><div class="chart" id="{chart_id}" '
                f'data-spec="{chart_id}" data-chart="{esc(kind)}"{extra}></div>{note}</figure>')


def color_scale(labels: Sequence[str], colors: dict[str, str]) -> dict[str, Any]:
    return {"domain": list(labels), "range": [colors[label] for label in labels]}


def label_colors(labels: Sequence[str]) -> dict[str, str]:
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}


def hidden_filter() -> dict[str, str]:
    """The transform that drops the rows of the variants switched off."""
    return {"filter": f"indexof({HIDDEN_SIGNAL}, datum.label) < 0"}


def base_spec(values: list[dict[str, Any]], height: int | dict[str, int] = 260) -> dict[str, Any]:
    """A layered chart of ``values`` that fits its element's width and hides the
    variants switched off."""
    return {"autosize": {"type": "fit-x", "contains": "padding"}, "height": height,
            "params": [{"name": HIDDEN_SIGNAL, "value": []}], "data": {"values": plain(values)},
            "transform": [hidden_filter()], "config": CHART_CONFIG}


CHART_CONFIG = {"font": "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif",
                "view": {"stroke": "#d0d4dc"},
                "axis": {"gridColor": "#eceef2", "labelColor": "#3a4150", "labelOverlap": "greedy",
                         "labelSeparation": 6, "titleColor": "#3a4150", "titleFontWeight": 500},
                "legend": {"labelColor": "#3a4150", "titleColor": "#3a4150"}}

N_LABEL_EXPR = ("datum.value >= 1024 && datum.value % 1024 == 0 ? (datum.value / 1024) + 'K' "
                ": format(datum.value, 'd')")


def n_axis(ns: Sequence[int], title: str = "sequence length N") -> dict[str, Any]:
    """x = N on a log-2 scale, ticked at the Ns measured."""
    ns = sorted(set(int(n) for n in ns))
    low, high = (ns[0], ns[-1]) if ns else (1, 2)
    if low == high:
        low, high = low / 1.5, high * 1.5
    return {"field": "n", "type": "quantitative", "title": title,
            "scale": {"type": "log", "base": 2, "domain": [low / 1.15, high * 1.15], "nice": False},
            "axis": {"values": ns, "labelExpr": N_LABEL_EXPR, "grid": True, "labelFlush": False}}


def fill_unless_noisy(scale: dict[str, Any], field_name: str = "label") -> dict[str, Any]:
    """A point's fill: its variant's colour, white (hollow) where the figure is noisy."""
    return {"condition": {"test": "datum.noisy", "value": "#ffffff"}, "field": field_name, "type": "nominal",
            "scale": scale, "legend": None}


# --- the page -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Banner:
    """A line of the banner: ``level`` (a verdict level: its colour) and ``text``."""

    level: str
    text: str


def variant_switches(labels: Sequence[str], colors: dict[str, str], about: dict[str, str] | None = None) -> str:
    """The switches that show or hide each variant everywhere (with its colour:
    the charts' legend); ``about``: each label's hover text (variant, parameters)."""
    if not labels:
        return ""
    about = about or {}
    chips = "".join(f'<label class="chip" title="{esc(about.get(label, label))}"><input type="checkbox" checked '
                    f'data-label="{esc(label)}">'
                    f'<span class="swatch" style="background:{colors[label]}"></span><span>{esc(label)}</span>'
                    f"</label>" for label in labels)
    return (f'<details id="variants" open><summary>Variants <span id="shown-count">{len(labels)} of '
            f'{len(labels)}</span> shown: switch one off to hide it in every chart and table'
            f'</summary><div class="chips">{chips}</div><div class="switch-all"><button type="button" '
            f'data-all="on">show all</button><button type="button" data-all="off">hide all</button></div>'
            f"</details>")


def facts_html(facts: Sequence[tuple[str, Any]]) -> str:
    """A definition list of (name, value), leaving out the empty ones."""
    items = "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in facts if v not in (None, "", []))
    return f'<dl class="facts">{items}</dl>'


def notes_html(lines: Sequence[str], css: str = "warnings") -> str:
    if not lines:
        return ""
    return f'<ul class="{css}">' + "".join(f"<li>{esc(line)}</li>" for line in lines) + "</ul>"


def page(title: str, banners: Sequence[Banner], header: str, labels: Sequence[str], colors: dict[str, str],
         sections: Sequence[tuple[str, str, str]], charts: Charts, about: dict[str, str] | None = None) -> str:
    """The whole document: ``sections`` are (id, heading, inner HTML), linked
    from a table of contents; ``header`` and the sections' HTML are escaped
    already (built with ``esc`` and the helpers here); ``about``: the
    switches' hover texts."""
    worst = max((b.level for b in banners), key=lambda level: _LEVEL_RANK.get(level, 0), default="unjudged")
    banner = "".join(f'<p class="banner-line {esc(b.level)}">{esc(b.text)}</p>' for b in banners)
    toc = "".join(f'<a href="#{esc(sid)}">{esc(heading)}</a>' for sid, heading, _ in sections)
    body = "".join(f'<section id="{esc(sid)}"><h2>{esc(heading)}</h2>{inner}</section>'
                   for sid, heading, inner in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="generator" content="attnbench"><title>{esc(title)}</title><style>{STYLE}</style></head>'
            f'<body><header id="verdict" class="banner" data-level="{esc(worst)}" role="status">{banner}</header><main>'
            f"<h1>{esc(title)}</h1>{header}{variant_switches(labels, colors, about)}<nav class=toc>{toc}</nav>{body}"
            f'<p class="footer">written by attnbench; charts drawn with Vega-Lite (inlined: this file needs no '
            f"network)</p></main>"
            f'<script type="application/json" id="attnbench-data">{script_json({"specs": charts.specs})}</script>'
            f"<script>{vega_bundle()}</script><script>{SCRIPT}</script></body></html>\n")


_LEVEL_RANK = {"unjudged": 0, "trustworthy": 1, "noisy": 2, "unreliable": 3}


STYLE = """
:root{--fg:#1f2430;--muted:#5d6575;--line:#dfe2e8;--panel:#f5f6f8;--accent:#2f5d9e}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);
background:#fff}
[hidden]{display:none!important}
.banner{color:#fff;font-weight:600}
.banner-line{margin:0;padding:9px max(16px,calc((100% - 1200px)/2 + 16px));overflow-wrap:anywhere}
.banner-line.trustworthy{background:#2e7d32}.banner-line.noisy{background:#a85d00}
.banner-line.unreliable{background:#b3261e}.banner-line.unjudged{background:#5f6673}
main{max-width:1200px;margin:0 auto;padding:0 16px 40px}
h1{font-size:22px;margin:18px 0 8px;overflow-wrap:anywhere}
h2{font-size:18px;margin:28px 0 10px;padding-top:8px;border-top:1px solid var(--line)}
h3{font-size:15px;margin:18px 0 8px}
h4{font-size:13px;margin:14px 0 6px;color:var(--fg)}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:2px 18px;margin:8px 0 12px}
.facts div{display:flex;gap:8px;min-width:0}
.facts dt{color:var(--muted);flex:0 0 84px}
.facts dd{margin:0;overflow-wrap:anywhere;min-width:0}
.summary-line{margin:4px 0 10px;color:var(--muted);overflow-wrap:anywhere}
details.more{margin:6px 0}details.more summary{cursor:pointer;color:var(--muted);font-size:13px}
.warnings{margin:8px 0;padding:8px 12px 8px 28px;background:#fff6e5;border-left:3px solid #d48806}
.warnings li{overflow-wrap:anywhere;white-space:pre-line}
.lines{padding-left:20px}.lines li{overflow-wrap:anywhere}
#variants{background:var(--panel);border:1px solid var(--line);border-radius:6px;padding:6px 10px;margin:12px 0}
#variants summary{cursor:pointer;color:var(--muted);font-size:13px}
.chips{display:flex;flex-wrap:wrap;gap:4px 6px;margin-top:6px}
.chip{display:inline-flex;align-items:center;gap:4px;padding:1px 8px 1px 4px;border:1px solid var(--line);
border-radius:12px;background:#fff;font-size:12.5px;cursor:pointer;max-width:100%;overflow-wrap:anywhere}
.chip input{margin:0}
.swatch{width:10px;height:10px;border-radius:50%;flex:none}
.chip:has(input:not(:checked)){opacity:.45;text-decoration:line-through}
.switch-all{margin-top:6px;display:flex;gap:6px}
.switch-all button{font:inherit;font-size:12px;padding:1px 8px;border:1px solid var(--line);border-radius:4px;
background:#fff;cursor:pointer}
@media (min-width:900px){#variants{position:sticky;top:0;z-index:5;box-shadow:0 2px 4px rgba(0,0,0,.05)}}
.toc{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:13px;margin:6px 0}
.toc a{color:var(--accent);text-decoration:none}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,460px),1fr));gap:8px 24px}
.chart-box{margin:8px 0;min-width:0}
.chart-box h4{margin:6px 0 4px}
.chart{width:100%;min-height:60px}
.chart[data-chart-error]{color:#b3261e}
figcaption,.caption{color:var(--muted);font-size:12px;margin:4px 0 0;overflow-wrap:anywhere}
.table-box{margin:10px 0 16px}
.table-wrap{overflow-x:auto;max-width:100%;width:max-content;border:1px solid var(--line);border-radius:4px}
table{border-collapse:collapse;font-size:12.5px}
th,td{padding:3px 8px;border-bottom:1px solid #eef0f3;text-align:left;white-space:nowrap}
th{background:var(--panel);position:sticky;top:0}
th button{all:unset;cursor:pointer;font-weight:600}
th[aria-sort=ascending] button::after{content:" \\25B2";font-size:9px}
th[aria-sort=descending] button::after{content:" \\25BC";font-size:9px}
.num{text-align:right;font-variant-numeric:tabular-nums}
td.wrap{white-space:pre-wrap;min-width:240px;max-width:640px;overflow-wrap:anywhere}
tbody tr:hover{background:#f7f9fc}
.mark-slower{color:#b3261e;font-weight:700}.mark-faster{color:#2e7d32;font-weight:700}
.mark-failed,.mark-undecided{color:#a85d00;font-weight:700}
.footer{color:var(--muted);font-size:12px;margin-top:32px}
#vg-tooltip-element{font:12px system-ui,sans-serif}
@media (max-width:600px){body{font-size:13.5px}h1{font-size:19px}main{padding:0 10px 32px}
.facts{grid-template-columns:1fr}.banner-line{padding:8px 10px;font-size:13px}}
"""

SCRIPT = r"""
(() => {
  "use strict";
  const data = JSON.parse(document.getElementById("attnbench-data").textContent);
  const hidden = new Set();
  const views = new Map();
  const root = document.documentElement;

  function labelsOf(el) {
    try { return JSON.parse(el.getAttribute("data-labels") || "[]"); } catch (e) { return []; }
  }
  function applyHidden() {
    document.querySelectorAll("[data-labels]").forEach((el) => {
      const labels = labelsOf(el);
      el.hidden = labels.length > 0 && labels.every((l) => hidden.has(l));
    });
    const list = Array.from(hidden);
    const runs = [];
    for (const view of views.values()) runs.push(view.signal("__HIDDEN__", list).runAsync());
    const boxes = document.querySelectorAll("#variants input[data-label]");
    const count = document.getElementById("shown-count");
    if (count) count.textContent = (boxes.length - hidden.size) + " of " + boxes.length;
    return Promise.all(runs);
  }
  document.querySelectorAll("#variants input[data-label]").forEach((box) => {
    box.addEventListener("change", () => {
      if (box.checked) hidden.delete(box.dataset.label); else hidden.add(box.dataset.label);
      applyHidden();
    });
  });
  document.querySelectorAll("#variants button[data-all]").forEach((button) => {
    button.addEventListener("click", () => {
      const on = button.dataset.all === "on";
      document.querySelectorAll("#variants input[data-label]").forEach((box) => {
        box.checked = on;
        if (on) hidden.delete(box.dataset.label); else hidden.add(box.dataset.label);
      });
      applyHidden();
    });
  });

  // Sortable tables: a header's button sorts by data-value (numbers) or the text.
  function sortKey(td, numeric) {
    if (!td) return numeric ? NaN : "";
    const raw = td.hasAttribute("data-value") ? td.getAttribute("data-value") : td.textContent;
    return numeric ? parseFloat(raw) : raw.toLowerCase();
  }
  document.querySelectorAll("table.sortable").forEach((table) => {
    const ths = Array.from(table.tHead.rows[0].cells);
    ths.forEach((th, col) => {
      th.querySelector("button").addEventListener("click", () => {
        const ascending = th.getAttribute("aria-sort") !== "ascending";
        ths.forEach((other) => other.removeAttribute("aria-sort"));
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        const numeric = th.dataset.kind === "num";
        const body = table.tBodies[0];
        const rows = Array.from(body.rows).map((row, i) => [sortKey(row.cells[col], numeric), i, row]);
        rows.sort((a, b) => {
          const [x, y] = [a[0], b[0]];
          if (numeric) {
            if (isNaN(x) !== isNaN(y)) return isNaN(x) ? 1 : -1;  // empty cells last
            if (!isNaN(x) && x !== y) return ascending ? x - y : y - x;
          } else if (x !== y) {
            return (x < y ? -1 : 1) * (ascending ? 1 : -1);
          }
          return a[1] - b[1];
        });
        rows.forEach((r) => body.appendChild(r[2]));
      });
    });
  });

  // Charts: each spec drawn as SVG at its element's width; again when the width changes.
  let drawnWidth = 0;
  async function drawAll() {
    drawnWidth = window.innerWidth;
    const boxes = Array.from(document.querySelectorAll(".chart[data-spec]"));
    for (const el of boxes) {
      const spec = JSON.parse(JSON.stringify(data.specs[el.dataset.spec]));
      spec.width = Math.max(160, el.clientWidth - 4);
      const meta = spec.usermeta || {};
      if (meta.bubbleArea) {  // circles as large as the chart is wide allows (a phone's are smaller)
        const area = meta.bubbleArea * Math.min(1, Math.pow(spec.width / meta.bubbleWidth, 2));
        spec.layer.forEach((layer) => {
          const size = (layer.encoding || {}).size;
          if (size && size.scale) size.scale.range = [0, area];
        });
        if (spec.width <= meta.narrowWidth * 1.15) spec.data.values.forEach((v) => { v.dy = v.dy_narrow; });
      }
      const old = views.get(el.id);
      if (old) { old.finalize(); views.delete(el.id); }
      try {
        const result = await vegaEmbed(el, spec, { renderer: "svg", actions: false, logLevel: 1 });
        views.set(el.id, result.view);
        el.removeAttribute("data-chart-error");
      } catch (error) {
        el.setAttribute("data-chart-error", "1");
        el.textContent = "this chart could not be drawn: " + error;
        console.error("attnbench: chart " + el.id + ": " + error);
      }
    }
    await applyHidden();
    root.setAttribute("data-rendered", String(views.size));
  }
  let timer = null;
  window.addEventListener("resize", () => {
    if (Math.abs(window.innerWidth - drawnWidth) < 24) return;
    clearTimeout(timer);
    timer = setTimeout(() => { root.removeAttribute("data-rendered"); drawAll(); }, 250);
  });
  drawAll();
})();
""".replace("__HIDDEN__", HIDDEN_SIGNAL)

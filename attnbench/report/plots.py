"""Plots of a run: time and peak memory against N on log-log axes.

One column of panels per pass (forward, backward, forward_backward), the top
row time (median, with the interquartile range of the raw samples as a band),
the bottom row peak memory; one line per variant (and head count, when a run
has several). matplotlib runs with the Agg backend: no display is needed.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from attnbench.analysis.baseline import add_quartiles, describe_setting, label_order, settings_groups
from attnbench.errors import AttnbenchError
from attnbench.model import PASSES, Status

FORMATS = (".png", ".svg")
BANNER_HEIGHT = 0.08  # of the figure, kept free at the top for the banner of an unreliable run
PASS_TITLES = {"forward": "forward (inference)", "backward": "backward",
               "forward_backward": "forward + backward (training step)"}


def plot_run(frame: pd.DataFrame, path: str | Path, records: list[dict[str, Any]] | None = None,
             title: str = "", baseline: str | None = None, banner: str | None = None,
             messages: list[str] | None = None) -> Path:
    """Write the time / memory vs N figure of a results frame to ``path``
    (.png or .svg). ``records`` (the run's cases.jsonl records) give the
    quartiles of the raw samples for the band; without them the band is the
    median ± IQR/2. Returns the path written."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise AttnbenchError(f"{path}: the plot must be a .png or .svg file")
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullLocator

    data = frame[frame["status"] == Status.OK].copy()
    if data.empty:
        raise AttnbenchError(f"{path}: nothing to plot: the run has no successful case")
    if records is not None:
        data = add_quartiles(data, records)
    else:
        data["q1_ms"] = data["median_ms"] - data["iqr_ms"] / 2
        data["q3_ms"] = data["median_ms"] + data["iqr_ms"] / 2
    groups = settings_groups(data)
    # One figure per run: with several settings, the first (sorted) one; say so in the title.
    setting, data = groups[0]
    passes = [p for p in PASSES if p in set(data["pass"])]
    heads_all = sorted(set(data["heads"]))
    fig, axes = plt.subplots(2, len(passes), figsize=(5.2 * len(passes), 8.2), squeeze=False)
    cmap = plt.get_cmap("tab20" if len(label_order(data)) > 10 else "tab10")
    styles = ["-", "--", ":", "-."]
    labels = label_order(data)
    for col, pass_name in enumerate(passes):
        ax_t, ax_m = axes[0][col], axes[1][col]
        sub = data[data["pass"] == pass_name]
        for i, label in enumerate(labels):
            for j, heads in enumerate(heads_all):
                rows = sub[(sub["label"] == label) & (sub["heads"] == heads)].sort_values("seq_len")
                if rows.empty:
                    continue
                name = label if len(heads_all) == 1 else f"{label} h={heads}"
                color = cmap(i % cmap.N)
                style = styles[j % len(styles)]
                width = 2.4 if label == baseline else 1.5
                ax_t.plot(rows["seq_len"], rows["median_ms"], style, marker="o", ms=3.5, color=color,
                          lw=width, label=name)
                lo = rows["q1_ms"].where(rows["q1_ms"] > 0, rows["median_ms"])
                ax_t.fill_between(rows["seq_len"], lo, rows["q3_ms"], color=color, alpha=0.2, lw=0)
                mem = rows[rows["peak_mem_mib"].notna() & (rows["peak_mem_mib"] > 0)]
                if not mem.empty:
                    ax_m.plot(mem["seq_len"], mem["peak_mem_mib"], style, marker="o", ms=3.5, color=color,
                              lw=width, label=name)
        for ax, ylabel in ((ax_t, "median time (ms), band: IQR"), (ax_m, "peak memory (MiB)")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            plain = FuncFormatter(lambda v, _pos: f"{v:g}")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:g}" if f"{v:.1g}"[0] in "25" else ""))
            ax.set_xlabel("sequence length N")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            ns = sorted(set(sub["seq_len"]))
            if ns:
                ax.set_xticks(ns)
                ax.set_xticklabels([n_label(n) for n in ns], rotation=45 if len(ns) > 6 else 0)
                ax.xaxis.set_minor_locator(NullLocator())
        ax_t.set_title(PASS_TITLES.get(pass_name, pass_name))
        for ax in (ax_t, ax_m):
            readable_log_ticks(ax)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 6), frameon=False)
    head = f"{title} — " if title else ""
    more = f" (first of {len(groups)} settings)" if len(groups) > 1 else ""
    fig.suptitle(f"{head}{describe_setting(setting)}{more}", y=0.98 - (BANNER_HEIGHT if banner else 0))
    rows_of_legend = math.ceil(len(names) / 6)
    with font_notes(messages):
        fig.tight_layout(rect=(0, 0.035 * rows_of_legend + 0.01, 1, 0.97 - (BANNER_HEIGHT if banner else 0)))
        draw_banner(fig, banner)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@contextmanager
def font_notes(notes: list[str] | None) -> Iterator[None]:
    """Matplotlib's warning per glyph a font lacks (CJK labels), with its
    internal path, becomes one line in ``notes`` (or nothing without a list);
    other warnings pass on."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    missing = [w for w in caught if "missing from font" in str(w.message)]
    for w in caught:
        if w not in missing:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if missing and notes is not None:
        fonts = sorted({m.group(1) for w in missing if (m := re.search(r"font\(s\) (.+?)\.?$", str(w.message)))})
        note = (f"some characters of the labels are not in the plot's font ({', '.join(fonts) or 'the default'}) "
                "and show as boxes")
        if note not in notes:
            notes.append(note)


def draw_banner(fig: Any, banner: str | None) -> None:
    """A red band across the top of ``fig`` saying, in words, why its figures
    cannot be trusted (the run's verdict); nothing without a banner."""
    if banner:
        fig.text(0.5, 0.995, _wrap(banner, int(fig.get_figwidth() * 12)), ha="center", va="top", fontsize=9,
                 color="white", weight="bold",
                 bbox={"boxstyle": "square,pad=0.4", "facecolor": "#b22222", "edgecolor": "none"})


def n_label(n: int) -> str:
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024}K"
    return str(n)


def readable_log_ticks(ax: Any, ticks: int = 4) -> None:
    """Give a log y axis that spans less than a decade labelled ticks: matplotlib
    labels only powers of ten (and here 2s and 5s), so a panel between 1.1 and 1.9
    would have none. Ticks are then spread evenly in log, to two significant digits."""
    import numpy as np
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    lo, hi = ax.get_ylim()
    if not (lo > 0 and hi > lo) or hi / lo >= 10:
        return
    values = sorted({float(f"{v:.2g}") for v in np.geomspace(lo, hi, ticks)} - {0.0})
    values = [v for v in values if lo <= v <= hi] or [float(f"{math.sqrt(lo * hi):.2g}")]
    ax.yaxis.set_major_locator(FixedLocator(values))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.yaxis.set_minor_locator(NullLocator())


# --- the trade-off chart (LRA Figure 3) ---------------------------------------------

TRADEOFF_PASS = "forward_backward"  # LRA's speed is training steps
SCORES_TABLE = "lra_table1"
SPEED_TABLE = "lra_table2"
LRA_BATCH, LRA_N = 32, 4096  # LRA Table 2's setting read by the published panel


POINT_COLUMNS = ["label", "variant", "examples_per_s", "speed_low", "speed_high", "memory", "score", "noisy"]
EXACT_FAMILY = "exact"  # an exact attention takes the published Transformer's (softmax's) score
MQAR_QUALITY_LABEL = "MQAR accuracy (measured, mean over seeds)"  # the quality axis of a run that measured it


def _point(row: pd.Series, score: float | None) -> dict[str, Any]:
    """One chart point: examples/s at the median, and the interval of the speed
    the pairing gives (the paired speed-up's interval, scaled to the point)."""
    speed = float(row["batch"]) * 1000.0 / float(row["median_ms"])
    low = high = math.nan
    ratio = row.get("speedup")
    if row.get("speedup_method") == "t-rounds" and ratio and not pd.isna(ratio):
        low, high = speed * float(row["speedup_low"]) / float(ratio), speed * float(row["speedup_high"]) / float(ratio)
    return {"label": row.name, "variant": str(row["variant"]), "examples_per_s": speed, "speed_low": low,
            "speed_high": high, "memory": float(row["peak_mem_mib"]), "score": score,
            "noisy": bool(row.get("noisy", False))}


def tradeoff_points(frame: pd.DataFrame, scores: pd.DataFrame | None = None,
                    quality: dict[str, float] | None = None) -> tuple[pd.DataFrame, int | None, list[str]]:
    """One row per label of a run's training step (forward_backward) at the largest
    N every label measured (else the N most labels measured): label, variant,
    examples_per_s (batch × steps/s) with its paired interval where the rows are
    against a baseline (``speed_low``, ``speed_high``), memory (peak MiB), score
    and whether the figure is noisy. The score is ``quality[label]`` when
    ``quality`` is given (a measured figure: labels without one get none), else
    the published score of the label's variant in ``scores`` (columns variant and
    score); an exact attention (sdpa) without one takes softmax's, the
    Transformer's. Returns (points with a score, N, notes on the labels left off);
    ``unscored_points`` gives the others."""
    data = frame[(frame["pass"] == TRADEOFF_PASS) & (frame["status"] == "ok")]
    labels = label_order(frame[frame["pass"] == TRADEOFF_PASS])
    if data.empty:
        return pd.DataFrame(columns=POINT_COLUMNS), None, []
    counts = data.groupby("seq_len")["label"].nunique()
    n = int(max(counts.index, key=lambda m: (counts[m], m)))
    at_n = data[data["seq_len"] == n].drop_duplicates("label").set_index("label")
    published = {} if scores is None else dict(zip(scores["variant"], scores["score"], strict=True))
    rows, unscored, missing, borrowed = [], [], [], []
    for label in labels:
        if label not in at_n.index:
            missing.append(label)
            continue
        row = at_n.loc[label]
        if quality is not None:
            score = quality.get(label)
        else:
            score = published.get(str(row["variant"]))
            if (score is None and row.get("family") == EXACT_FAMILY and published.get("softmax") is not None):
                score = published["softmax"]
                borrowed.append(label)
        if score is None or pd.isna(score):
            unscored.append(label)
            continue
        rows.append(_point(row, float(score)))
    notes = []
    if unscored:
        notes.append(f"no {'measured' if quality is not None else 'published LRA'} score: {', '.join(unscored)}")
    if borrowed:
        notes.append(f"exact attention, placed at the Transformer's score: {', '.join(borrowed)}")
    if missing:
        notes.append(f"not measured at N={n_label(n)}: {', '.join(missing)}")
    return pd.DataFrame(rows, columns=POINT_COLUMNS), n, notes


def unscored_points(frame: pd.DataFrame, n: int, scored: pd.DataFrame) -> pd.DataFrame:
    """The labels measured at ``n`` that have no score: placed on the chart by
    speed and memory, apart from the scored ones (their score is None)."""
    data = frame[(frame["pass"] == TRADEOFF_PASS) & (frame["status"] == "ok") & (frame["seq_len"] == n)]
    at_n = data.drop_duplicates("label").set_index("label")
    return pd.DataFrame([_point(at_n.loc[label], None) for label in label_order(data)
                         if label not in set(scored["label"])], columns=POINT_COLUMNS)


def lra_scores() -> tuple[pd.DataFrame, Any]:
    """LRA's Table 1 (the published scores): its rows with the average as
    ``score`` (columns variant and score, as ``tradeoff_points`` takes them),
    and the table (its citation and score label)."""
    from attnbench.store.published import load_published

    table1 = load_published(SCORES_TABLE, kind="scores")
    return table1.frame.rename(columns={str(table1.meta.get("score", "avg")): "score"}), table1


def published_tradeoff_points() -> pd.DataFrame:
    """LRA's own Figure 3 data: Table 2 at N = 4K (examples/s = 32 × steps/s, peak
    memory in GB) with Table 1's average score, one row per model (with the
    attnbench variant it maps to)."""
    from attnbench.store.published import load_published

    speed = load_published(SPEED_TABLE).frame
    speed = speed[speed["seq_len"] == LRA_N].set_index("model")
    avg = load_published(SCORES_TABLE, kind="scores").frame.set_index("model")["avg"]
    rows = [{"label": model, "variant": str(speed.loc[model, "variant"]),
             "examples_per_s": LRA_BATCH * float(speed.loc[model, "steps_per_s"]), "speed_low": math.nan,
             "speed_high": math.nan, "memory": float(speed.loc[model, "memory_gb"]), "score": float(avg[model]),
             "noisy": False}
            for model in speed.index if model in avg.index]
    return pd.DataFrame(rows, columns=POINT_COLUMNS)


def variant_colors(*panels: pd.DataFrame) -> dict[str, Any]:
    """One colour per variant, the same in every panel."""
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(v for points in panels for v in points["variant"]))
    cmap = plt.get_cmap("tab20" if len(variants) > 10 else "tab10")
    return {v: cmap(i % cmap.N) for i, v in enumerate(variants)}


def plot_tradeoff(frame: pd.DataFrame, path: str | Path, title: str = "",
                  quality: dict[str, float] | None = None, quality_label: str = "measured quality",
                  banner: str | None = None, messages: list[str] | None = None) -> Path:
    """Write LRA's Figure 3 for a run to ``path`` (.png or .svg): x = measured
    examples/s of the training step at the run's largest common N, y = the LRA
    score of the label's variant (or ``quality[label]``, named ``quality_label``),
    circle area = measured peak memory; beside it the same chart from the paper's
    numbers (Table 2 at 4K, batch 32; Table 1 averages). Labels with no score are
    listed under the chart. Returns the path written."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise AttnbenchError(f"{path}: the trade-off chart must be a .png or .svg file")
    scores, table1 = lra_scores()
    points, n, notes = tradeoff_points(frame, scores, quality)
    if n is None:
        raise AttnbenchError(f"{path}: the run has no successful {TRADEOFF_PASS} case to place on the chart")
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    y_label = quality_label if quality is not None else str(table1.meta.get("score_label", "LRA score"))
    batch = sorted(set(frame[frame["pass"] == TRADEOFF_PASS]["batch"]))
    fig, (ax_run, ax_lra) = plt.subplots(1, 2, figsize=(13, 6.2))
    published = published_tradeoff_points()
    apart = unscored_points(frame, n, points)
    colors = variant_colors(published, points, apart)
    _bubbles(ax_run, points, "MiB", colors, apart)
    ax_run.set_title(f"measured: one layer, training step, N={n_label(n)}, batch {', '.join(map(str, batch))}")
    ax_run.set_ylabel(y_label)
    _bubbles(ax_lra, published, "GB", colors)
    ax_lra.set_title(f"LRA's own numbers: 4-layer model, N=4K, batch {LRA_BATCH} (TPU v3)")
    ax_lra.set_ylabel(str(table1.meta.get("score_label", "LRA score")))
    head = f"{title} — " if title else ""
    fig.suptitle(f"{head}speed, quality and memory (circle area = peak memory), after LRA Figure 3",
                 y=0.98 - (BANNER_HEIGHT if banner else 0))
    footer = "\n".join(_wrap(line, 190) for line in [*notes, f"scores: {table1.citation}"])
    fig.text(0.01, 0.01, footer, fontsize=7.5, va="bottom")
    with font_notes(messages):
        fig.tight_layout(rect=(0, 0.022 * (footer.count("\n") + 1) + 0.015, 1,
                               0.95 - (BANNER_HEIGHT if banner else 0)))
        draw_banner(fig, banner)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bubbles(ax: Any, points: pd.DataFrame, unit: str, colors: dict[str, Any],
             apart: pd.DataFrame | None = None) -> None:
    """One labelled circle per row, area proportional to ``memory`` (the largest
    2500 pt²), coloured by variant; a noisy figure hollow; the paired interval
    of its speed as a whisker. ``apart``: points without a score, drawn in a
    band below the others, dashed and marked."""
    from matplotlib.ticker import FuncFormatter

    whiskers = any(not pd.isna(v) for v in points["speed_low"]) or (apart is not None and any(
        not pd.isna(v) for v in apart["speed_low"]))
    ax.set_xlabel("speed: examples per second (log scale" + ("; whiskers: paired 95% interval)" if whiskers else ")"))
    ax.set_xscale("log")
    ax.grid(True, which="both", alpha=0.3)
    apart = apart if apart is not None else points.iloc[0:0]
    if points.empty and apart.empty:
        ax.text(0.5, 0.5, "no variant with a score", ha="center", va="center", transform=ax.transAxes)
        return
    everything = pd.concat([points, apart], ignore_index=True)
    largest = float(everything["memory"].max()) if everything["memory"].notna().any() else 0.0

    def size_of(memory: float) -> float:
        return 2500.0 * memory / largest if largest > 0 and not pd.isna(memory) else 30.0

    scores = points["score"].astype(float) if not points.empty else pd.Series([0.0])
    span = max(1.0, float(scores.max() - scores.min()))
    floor = float(scores.min()) - 0.25 * span
    apart_y = floor - 0.2 * span  # the band of the unscored, below the scored ones
    placed = points.copy()
    if not apart.empty:  # in three rows by speed, so that neighbours' labels do not collide
        order = apart["examples_per_s"].rank(method="first").astype(int) - 1
        placed = pd.concat([placed, apart.assign(score=apart_y + 0.08 * span * (order % 3 - 1))], ignore_index=True)
        ax.axhspan(apart_y - 0.14 * span, apart_y + 0.14 * span, color="0.92", zorder=0)
        ax.text(0.01, apart_y + 0.15 * span, "no score: placed by speed and memory only", fontsize=7.5,
                color="0.35", transform=ax.get_yaxis_transform(), va="bottom")
    for row in placed.itertuples():
        color = colors.get(row.variant, "0.5")
        unscored = row.Index >= len(points)
        ax.scatter(row.examples_per_s, row.score, s=size_of(row.memory), alpha=0.55,
                   facecolors="none" if row.noisy or unscored else color, edgecolors=color if row.noisy or unscored
                   else "black", linewidths=1.6 if row.noisy or unscored else 0.6,
                   linestyles="--" if unscored else "-")
        if not (pd.isna(row.speed_low) or pd.isna(row.speed_high)):
            ax.errorbar(row.examples_per_s, row.score, xerr=[[row.examples_per_s - row.speed_low],
                                                             [row.speed_high - row.examples_per_s]],
                        fmt="none", ecolor=color, elinewidth=1.4, capsize=3)
    lo = float(placed[["examples_per_s", "speed_low"]].min().min())
    hi = float(placed[["examples_per_s", "speed_high"]].max().max())
    ax.set_xlim(lo / 1.6, hi * 2.2)
    ax.set_ylim((apart_y - 0.17 * span) if not apart.empty else floor, float(scores.max()) + 0.3 * span)
    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    _labels(ax, placed.assign(label=[f"{r.label}{' ~' if r.noisy else ''}" for r in placed.itertuples()]),
            [size_of(m) for m in placed["memory"]])
    circle = f"{largest:,.0f}" if largest >= 100 else f"{largest:.3g}"
    noisy = "; hollow, ~: noisy (IQR/median > 10%)" if placed["noisy"].any() else ""
    ax.text(0.99, 0.99, f"largest circle: {circle} {unit}{noisy}", transform=ax.transAxes, ha="right", va="top",
            fontsize=8)


def _labels(ax: Any, points: pd.DataFrame, sizes: list[float]) -> None:
    """Each circle's label to its right, moved down (then up) in steps of a line
    while it would overlap a label already placed (a small greedy layout)."""
    to_px = ax.transData.transform
    placed: list[tuple[float, float, float]] = []  # x, y (pixels), width
    for row, size in sorted(zip(points.itertuples(), sizes, strict=True), key=lambda r: -r[0].score):
        px, py = to_px((row.examples_per_s, row.score))
        x = px + math.sqrt(size) / 2 + 4
        width = 6.5 * len(row.label)
        for step in (0, 1, -1, 2, -2, 3, -3, 4, -4):
            y = py - 12 * step
            if all(abs(y - oy) >= 11 or x + width < ox or ox + ow < x for ox, oy, ow in placed):
                break
        placed.append((x, y, width))
        ax.annotate(row.label, (row.examples_per_s, row.score), xytext=(x - px, y - py), textcoords="offset pixels",
                    fontsize=8, va="center", arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.4"}
                    if y != py else None)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text

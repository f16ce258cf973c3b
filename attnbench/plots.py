"""Plots of a run: time and peak memory against N on log-log axes.

One column of panels per pass (forward, backward, forward_backward), the top
row time (median, with the interquartile range of the raw samples as a band),
the bottom row peak memory; one line per variant (and head count, when a run
has several). matplotlib runs with the Agg backend: no display is needed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from attnbench.analysis import add_quartiles, describe_setting, label_order, settings_groups
from attnbench.errors import AttnbenchError
from attnbench.model import PASSES, Status

FORMATS = (".png", ".svg")
PASS_TITLES = {"forward": "forward (inference)", "backward": "backward",
               "forward_backward": "forward + backward (training step)"}


def plot_run(frame: pd.DataFrame, path: str | Path, records: list[dict[str, Any]] | None = None,
             title: str = "", baseline: str | None = None) -> Path:
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
                ax.set_xticklabels([_n_label(n) for n in ns], rotation=45 if len(ns) > 6 else 0)
                ax.xaxis.set_minor_locator(NullLocator())
        ax_t.set_title(PASS_TITLES.get(pass_name, pass_name))
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 6), frameon=False)
    head = f"{title} — " if title else ""
    more = f" (first of {len(groups)} settings)" if len(groups) > 1 else ""
    fig.suptitle(f"{head}{describe_setting(setting)}{more}")
    rows_of_legend = math.ceil(len(names) / 6)
    fig.tight_layout(rect=(0, 0.035 * rows_of_legend + 0.01, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _n_label(n: int) -> str:
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024}K"
    return str(n)

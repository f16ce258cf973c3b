"""Published tables shipped with attnbench (``attnbench/data/NAME.csv`` with its
citation in ``NAME.yaml``): the efficiency tables a suite can name with
``published:`` (LRA Table 2) and the quality scores the trade-off chart reads
(LRA Table 1, ``kind: scores``): which exist, and loading one. The analysis
sets a run beside them (``attnbench.analysis.agreement``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from attnbench.errors import DataError
from attnbench.model import PASSES

DATA_PACKAGE = "attnbench"
DATA_DIR = "data"


@dataclass
class PublishedTable:
    """A paper's efficiency table shipped with attnbench (``attnbench/data/NAME.csv``
    with its citation in ``NAME.yaml``): one row per model and N."""

    name: str
    meta: dict[str, Any]
    frame: pd.DataFrame

    @property
    def title(self) -> str:
        return str(self.meta.get("title", self.name))

    @property
    def citation(self) -> str:
        return " ".join(str(self.meta.get("citation", "")).split())

    @property
    def pass_name(self) -> str:
        return str(self.meta.get("pass", PASSES[-1]))

    @property
    def baseline_variant(self) -> str | None:
        model = self.meta.get("baseline_model")
        rows = self.frame[self.frame["model"] == model]
        return str(rows["variant"].iloc[0]) if not rows.empty else None

    def models(self) -> list[str]:
        return list(dict.fromkeys(self.frame["model"]))


def _data_files():
    from importlib.resources import files

    return files(DATA_PACKAGE).joinpath(DATA_DIR)


def _shipped(kind: str) -> list[str]:
    """Names of the shipped tables of ``kind`` (the yaml's ``kind:``, "efficiency" when absent)."""
    import yaml

    folder = _data_files()
    names = {p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")}
    return sorted(n for n in names if folder.joinpath(n + ".csv").is_file() and (yaml.safe_load(
        folder.joinpath(n + ".yaml").read_text(encoding="utf-8")) or {}).get("kind", "efficiency") == kind)


def published_names() -> list[str]:
    """Names of the published efficiency tables shipped in the package (``published:`` in a suite)."""
    return _shipped("efficiency")


def load_published(name: str, kind: str = "efficiency") -> PublishedTable:
    """Load a shipped published table by name, e.g. ``"lra_table2"`` (or, with
    ``kind="scores"``, a table of quality scores such as ``"lra_table1"``)."""
    import io

    import yaml

    known = _shipped(kind)
    if name not in known:
        raise DataError(f"unknown published table {name!r}; known: {', '.join(known) or 'none'}")
    folder = _data_files()
    meta = yaml.safe_load(folder.joinpath(name + ".yaml").read_text(encoding="utf-8")) or {}
    text = folder.joinpath(name + ".csv").read_text(encoding="utf-8")
    numeric = ["steps_per_s", "relative_speed", "printed_speedup", "memory_gb", "avg"]
    frame = pd.read_csv(io.StringIO(text), comment="#", keep_default_na=False,
                        na_values={column: [""] for column in numeric})
    return PublishedTable(name=name, meta=meta, frame=frame)

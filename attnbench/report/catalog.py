"""``attnbench list``: the variants at a glance (a table that fits 80 columns)
and one variant in full (its docstring and its parameters with type, default,
choices and meaning).

A parameter's meaning is read from a ``Parameters:`` section of the variant's
docstring (one source, next to the code), one ``name: meaning`` per line::

    Parameters:
        k: rows of the projections E and F (the projected length)
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from rich.table import Table
from rich.text import Text

from attnbench.variants import variant_info
from attnbench.variants.decoding import refusal_of
from attnbench.variants.factory import parameter_specs, resolve

_SECTION = re.compile(r"^\s*Parameters:\s*$")
_ITEM = re.compile(r"^(\s*)(\w+)\s*:\s*(.*)$")


def parameter_meanings(doc: str) -> dict[str, str]:
    """``name: meaning`` lines of the docstring's ``Parameters:`` section (a
    more-indented line continues the one above)."""
    meanings: dict[str, str] = {}
    lines = doc.splitlines()
    start = next((i for i, line in enumerate(lines) if _SECTION.match(line)), None)
    if start is None:
        return meanings
    indent, last = None, None
    for line in lines[start + 1:]:
        if not line.strip():
            if meanings:
                break
            continue
        item = _ITEM.match(line)
        depth = len(line) - len(line.lstrip())
        if item and (indent is None or depth == indent):
            indent, last = depth, item.group(2)
            meanings[last] = item.group(3).strip()
        elif last is not None and indent is not None and depth > indent:
            meanings[last] += " " + line.strip()
        else:
            break
    return meanings


NO_DESCRIPTION = "no description"


def docstring(name: str) -> str:
    """The variant's own docstring, without its ``Parameters:`` section (shown as
    a table); "no description" for a class without one (inspect would give its
    base class's: nn.Module's, for a plain layer)."""
    target = resolve(name).target
    own = target.__dict__.get("__doc__") if isinstance(target, type) else getattr(target, "__doc__", None)
    doc = inspect.cleandoc(own) if own else NO_DESCRIPTION
    lines = doc.splitlines()
    cut = next((i for i, line in enumerate(lines) if _SECTION.match(line)), len(lines))
    return "\n".join(lines[:cut]).strip()


def variants_table(names: list[str]) -> Table:
    """One row per variant: name, family, complexity, causal support (80 columns);
    and the origin when some variant is not built in."""
    table = Table(title="attnbench variants", caption="attnbench list NAME: one variant in full",
                  caption_justify="left")
    table.add_column("variant", no_wrap=True, style="bold")
    table.add_column("family", no_wrap=True)
    table.add_column("complexity")
    table.add_column("causal", no_wrap=True)
    infos = [variant_info(name) for name in names]
    others = any(i.origin != "built-in" for i in infos)  # plugins, import paths: say where each is from
    if others:
        table.add_column("origin")
    for info in infos:
        table.add_row(info.name, info.family, info.complexity, "yes" if info.causal else "no",
                      *([info.origin] if others else []))
    return table


def _shown(value: Any) -> str:
    return "None" if value is None else repr(value) if isinstance(value, str) else str(value)


def parameter_rows(name: str) -> list[dict[str, str]]:
    """Per parameter: name, type (choices included), default and meaning."""
    meanings = parameter_meanings(inspect.getdoc(resolve(name).target) or "")
    return [{"parameter": s.name, "type": s.type_text, "default": _shown(s.default),
             "meaning": meanings.get(s.name, "")} for s in parameter_specs(name)]


def serving_text(name: str, causal: bool) -> str | None:
    """Whether the variant decodes (prefill, decode) and shares key/value heads, with
    its default parameters; None where it cannot be built on ``meta`` to ask."""
    import torch

    from attnbench.variants import build

    try:
        with torch.device("meta"):
            layer = build(name, dim=64, heads=4, seq_len=256, causal=causal)
    except Exception:  # noqa: BLE001 - a custom layer that cannot be built without data
        return None
    decode = refusal_of(layer)
    kv = getattr(layer, "kv_heads_refusal", "takes no kv_heads")
    return (f"decode: {'yes' if decode is None else 'no, ' + decode.removeprefix('cannot decode: ')}\n"
            f"kv_heads: {'yes' if kv is None else 'no, ' + kv.removeprefix('kv_heads: ')}")


def variant_detail(name: str) -> list[Any]:
    """What ``attnbench list NAME`` prints: the facts, the docstring, the parameters."""
    info = variant_info(name)
    paper = f"arXiv:{info.paper} (https://arxiv.org/abs/{info.paper})" if info.paper else "no paper"
    facts = [f"family {info.family}", info.complexity, f"causal: {'yes' if info.causal else 'no'}",
             f"origin: {info.origin}"]
    head = Text.assemble((info.name, "bold"), " — " + ", ".join(f for f in facts if f) + f"\n{paper}")
    out: list[Any] = [head, "", Text(docstring(name)), ""]
    serving = serving_text(name, info.causal)
    if serving:
        out += [Text(serving), ""]
    rows = parameter_rows(name)
    if not rows:
        out.append("parameters: none")
        return out
    table = Table(title="parameters", title_justify="left",
                  caption=f"in a suite: - name: {info.name}\n              params: {{{rows[0]['parameter']}: ...}}",
                  caption_justify="left")
    for col in ("parameter", "type", "default", "meaning"):
        table.add_column(col, no_wrap=col == "parameter", style="bold" if col == "parameter" else None)
    for row in rows:
        table.add_row(row["parameter"], row["type"], row["default"], row["meaning"])
    out.append(table)
    return out

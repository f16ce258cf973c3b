"""The suite's ``quality:`` section: which quality measures run, their sizes,
seeds and budget (``attnbench.quality``), validated like the rest of the file:
every mistake names the file, the line and the key."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from attnbench.model import VariantSpec
from attnbench.quality.mqar import MQARConfig
from attnbench.quality.plan import ApproxSettings, QualitySettings, QualityVariant
from attnbench.suite.schema import (
    QUALITY_APPROX_FIELDS,
    QUALITY_FIELDS,
    QUALITY_KEYS,
    QUALITY_MQAR_FIELDS,
    QUALITY_MQAR_KEYS,
)


def parse_quality(v: Any, sections: Any, specs: list[VariantSpec]) -> QualitySettings | None:
    """The ``quality:`` section, then ``quick.quality`` over it with --quick; None when the
    suite has none. ``v`` and ``sections`` are the suite validator's (``attnbench.suite.load``)."""
    from attnbench.variants import variant_info

    parts = sections.parts("quality", QUALITY_KEYS)
    if "quality" not in sections.raw:
        return None
    top: dict[str, Any] = {"measures": ["approx", "mqar"], "threads": 1}
    approx = asdict(ApproxSettings())
    mqar: dict[str, Any] = {**MQARConfig().to_dict(), "seeds": [0, 1]}
    mqar_params: dict[str, dict[str, Any]] = {}
    by_label = {s.label: s for s in specs}
    for part in parts:
        prefix = "quick.quality." if part is not parts[0] else "quality."
        top = v.fields(part, prefix, QUALITY_FIELDS, top)
        a = v.mapping(part.get("approx"), f"{prefix}approx", part, tuple(QUALITY_APPROX_FIELDS))
        approx = v.fields(a, f"{prefix}approx.", QUALITY_APPROX_FIELDS, approx)
        m = v.mapping(part.get("mqar"), f"{prefix}mqar", part, QUALITY_MQAR_KEYS)
        mqar = v.fields(m, f"{prefix}mqar.", QUALITY_MQAR_FIELDS, mqar)
        params = v.mapping(m.get("params"), f"{prefix}mqar.params", m, tuple(by_label))
        for label, values in params.items():  # unknown parameters refused with a did-you-mean
            values = v.mapping(values, f"{prefix}mqar.params.{label}", params,
                               tuple(variant_info(by_label[label].name).defaults))
            mqar_params[label] = json.loads(json.dumps(values))  # plain dicts, no line records
    line = v.line_of(sections.raw, "quality")
    if approx["dim"] % approx["heads"]:
        v.fail(f"heads {approx['heads']} does not divide dim {approx['dim']}", key="quality.approx.heads", line=line)
    if mqar["dim"] % mqar["heads"]:
        v.fail(f"heads {mqar['heads']} does not divide dim {mqar['dim']}", key="quality.mqar.heads", line=line)
    seeds = mqar.pop("seeds")
    try:
        config = MQARConfig(**mqar)
    except ValueError as exc:
        v.fail(str(exc), key="quality.mqar", line=line)
    return QualitySettings(measures=tuple(top["measures"]), threads=top["threads"],
                           approx=ApproxSettings(seq_lens=tuple(sorted(approx["seq_lens"])),
                                                 regimes=tuple(approx["regimes"]), seeds=tuple(approx["seeds"]),
                                                 dim=approx["dim"], heads=approx["heads"]),
                           mqar=config, mqar_seeds=tuple(seeds), mqar_params=mqar_params)


def quality_variants(specs: list[VariantSpec]) -> list[QualityVariant]:
    """The suite's variants as the quality measures take them."""
    return [QualityVariant(s.label, s.name, dict(s.params)) for s in specs]

"""The suite file's keys, defined once: which keys each section takes, what
each value must be, and the JSON Schema of suite files generated from them.

The validator (``suite.py``) checks every value through these tables and
names the file, line and key of a mistake; ``suite_schema()`` turns the same
tables into a JSON Schema (draft 2020-12) for editors, printed by
``attnbench schema`` and shipped as ``attnbench/data/suite.schema.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from attnbench.model import ALLOCATORS, DTYPES, PASSES
from attnbench.quality import MEASURES, REGIMES

SCHEMA_VERSION = 1
# Sizes past these are almost certainly typos (an extra zero), not experiments.
MAX_SEQ_LEN = 1 << 22
MAX_DIM = 1 << 16
MAX_BATCH = 1 << 16
MAX_WARMUP = 10_000
MAX_REPS = 1_000_000
MAX_ROUNDS = 1_000
DEVICE_PATTERN = "^(cpu|cuda|auto|cuda:[0-9]+)$"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_FILE = "suite.schema.json"  # in attnbench/data


@dataclass(frozen=True)
class Field:
    """What one key's value must be.

    kinds: ``integer`` (lo..hi), ``number`` (at least lo; above 0 when
    ``positive``; null allowed when ``nullable``), ``boolean``, ``dtype``
    (one of DTYPES), ``passes`` (one or a list of PASSES), ``int_list`` (one
    or a list of distinct integers lo..hi) and ``devices`` (one or a list of
    cpu, cuda, cuda:N, auto), ``choice`` (one of ``choices``) and ``choices`` (one
    or a list of distinct ``choices``)."""

    kind: str
    description: str
    lo: float = 0
    hi: float | None = None
    positive: bool = False
    nullable: bool = False
    choices: tuple[str, ...] = ()


MAX_DECODE_STEPS = 1 << 16
SETTING_FIELDS: dict[str, Field] = {
    "batch": Field("int_list", "Batch size, or a list of them (a grid axis: decode goes from memory-bound to "
                   "compute-bound as the batch grows).", 1, MAX_BATCH),
    "dim": Field("integer", "Model width (heads x head_dim).", 1, MAX_DIM),
    "head_dim": Field("integer", "Width of one head, instead of dim: dim = heads x head_dim for each heads of "
                      "the grid (32 heads of 128: head_dim: 128).", 1, MAX_DIM),
    "max_prefill_len": Field("integer", "Time prefill only up to this N (a prompt's forward at a large N costs "
                             "seconds on a CPU; decode still starts from the cache or state of every N).", 1,
                             MAX_SEQ_LEN),
    "decode_steps": Field("integer", "One-token steps a decode pass times from its prefill's state; its figure "
                          "is the time per step.", 1, MAX_DECODE_STEPS),
    "dtype": Field("dtype", "The layer's and the input's dtype."),
    "causal": Field("boolean", "Causal (autoregressive) attention."),
    "passes": Field("passes", "What is timed: forward (inference), backward, forward_backward (a training step), "
                    "prefill (the causal forward of N tokens that fills the cache or state) and decode (one-token "
                    "steps against the cache or state of N tokens); prefill and decode need causal: true."),
    "compile": Field("boolean", "torch.compile the layer first (compilation is timed apart)."),
}
GRID_FIELDS: dict[str, Field] = {
    "seq_lens": Field("int_list", "Sequence lengths N.", 1, MAX_SEQ_LEN),
    "heads": Field("int_list", "Numbers of heads; each must divide dim.", 1, MAX_DIM),
    "kv_heads": Field("int_list", "Key/value heads (grouped-query attention: each shared by heads / kv_heads "
                      "query heads); each must divide every heads value. Default: heads.", 1, MAX_DIM),
    "devices": Field("devices", "cpu, cuda, cuda:N or auto (the GPU when there is one)."),
}
TIMING_FIELDS: dict[str, Field] = {
    "rounds": Field("integer", "Visits of every case, each round all cases in a shuffled order, each visit in "
                    "a fresh worker; the other timing keys apply per visit.", 1, MAX_ROUNDS),
    "warmup": Field("integer", "Untimed runs before sampling.", 0, MAX_WARMUP),
    "min_time_s": Field("number", "Keep sampling until this many seconds are spent ...", positive=True),
    "max_reps": Field("integer", "... or this many samples are taken.", 1, MAX_REPS),
    "min_reps": Field("integer", "Never fewer samples than this.", 1, MAX_REPS),
    "target_rel_iqr": Field("number", "Stop early once IQR/median is under this."),
    "interleave": Field("boolean", "Sample the variants of a setting group in turns (A B C A B C ...), pass by "
                        "pass, so that their figures come from the same moments (false: one after another)."),
    "allocator": Field("choice", "CPU memory allocator of the workers: steady (glibc's malloc thresholds fixed, so "
                       "large tensors are reused as in a tuned deployment or with jemalloc/tcmalloc) or default "
                       "(glibc's own: every tensor over 32 MiB is mapped afresh and pays its page faults).",
                       choices=ALLOCATORS),
}
LIMIT_FIELDS: dict[str, Field] = {
    "case_timeout_s": Field("number", "A case running longer is killed and recorded as timeout.", positive=True),
    "memory_margin_mib": Field("number", "CPU: skip a case whose estimated peak leaves less memory free."),
    "memory_limit_mib": Field("number", "Most memory one case may allocate (null: no limit).", positive=True,
                              nullable=True),
}
MAX_SEED = 2**31 - 1
MAX_STEPS = 10_000_000
QUALITY_FIELDS: dict[str, Field] = {
    "measures": Field("choices", "What to measure: approx (error against exact softmax attention), "
                      "mqar (multi-query associative recall accuracy).", choices=MEASURES),
    "threads": Field("integer", "Torch threads while measuring quality (1: one run is deterministic).", 1, 1024),
}
QUALITY_APPROX_FIELDS: dict[str, Field] = {
    "seq_lens": Field("int_list", "Sequence lengths N of the approximation error.", 1, 1 << 14),
    "regimes": Field("choices", "Input regimes: gaussian (near-uniform attention), peaked (a few strong "
                     "matches per query).", choices=REGIMES),
    "seeds": Field("int_list", "Seeds of the inputs and of the variant's random parts.", 0, MAX_SEED),
    "dim": Field("integer", "Width (heads x head_dim) of the layer measured.", 1, MAX_DIM),
    "heads": Field("integer", "Heads of the layer measured.", 1, MAX_DIM),
}
QUALITY_MQAR_FIELDS: dict[str, Field] = {
    "seeds": Field("int_list", "Training seeds (held-out sequences come from another seed).", 0, MAX_SEED),
    "vocab": Field("integer", "Vocabulary: keys from the lower half, values from the upper half.", 4, 1 << 20),
    "seq_len": Field("integer", "Sequence length (even, at least 4 x pairs).", 4, 1 << 16),
    "pairs": Field("integer", "Key-value pairs per sequence.", 1, 1 << 14),
    "dim": Field("integer", "Model width.", 1, MAX_DIM),
    "heads": Field("integer", "Heads of each mixer.", 1, MAX_DIM),
    "layers": Field("integer", "Blocks of [mixer + MLP].", 1, 64),
    "steps": Field("integer", "Training steps (the budget).", 1, MAX_STEPS),
    "batch": Field("integer", "Sequences per step.", 1, MAX_BATCH),
    "lr": Field("number", "AdamW's peak learning rate.", positive=True),
    "weight_decay": Field("number", "AdamW's weight decay."),
    "warmup": Field("integer", "Steps of linear warm-up.", 0, MAX_STEPS),
    "eval_sequences": Field("integer", "Held-out sequences scored.", 1, 1 << 20),
}
QUALITY_MQAR_PARAMS_DESCRIPTION = ("Per variant label, its parameters at MQAR's sequence length, replacing "
                                   "the suite's (a window or block sized for N=1024 covers all of N=32).")
QUALITY_KEYS = (*QUALITY_FIELDS, "approx", "mqar")
QUALITY_MQAR_KEYS = (*QUALITY_MQAR_FIELDS, "params")

TOP_DESCRIPTIONS = {
    "version": "The suite format's version.",
    "name": "The suite's name (default: the file name).",
    "description": "What the suite measures.",
    "defaults": "Settings of every variant, unless a variant sets its own.",
    "grid": "The sizes every variant runs at: seq_lens x heads x kv_heads x devices.",
    "variants": "The variants to measure: a name, or a mapping with name, label, params and own settings.",
    "timing": "How each pass is sampled.",
    "limits": "Per-case limits.",
    "baseline": "The variant (label) the reports compare against.",
    "published": "A paper's table shipped with attnbench to set beside the results.",
    "quality": "Quality beside cost: the approximation error against softmax attention and the accuracy "
               "on multi-query associative recall, for every variant of the suite.",
    "quick": "Smaller settings used with --quick: defaults, grid, timing, limits, quality.",
}
VARIANT_OWN_DESCRIPTIONS = {
    "name": "A registered variant (attnbench list) or an import path package.module:Class.",
    "label": "The name results use (default: name); distinct per variant, without '|'.",
    "params": "The variant's own parameters (attnbench list shows them).",
}

TOP_KEYS = tuple(TOP_DESCRIPTIONS)
DEFAULT_KEYS = tuple(SETTING_FIELDS)
GRID_KEYS = tuple(GRID_FIELDS)
VARIANT_KEYS = tuple(VARIANT_OWN_DESCRIPTIONS) + DEFAULT_KEYS + GRID_KEYS
TIMING_KEYS = tuple(TIMING_FIELDS)
LIMIT_KEYS = tuple(LIMIT_FIELDS)
QUICK_KEYS = ("defaults", "grid", "timing", "limits", "quality")
REQUIRED_GRID_KEYS = ("seq_lens", "heads")


# --- JSON Schema -------------------------------------------------------------------

def _field_schema(field: Field) -> dict[str, Any]:
    out: dict[str, Any]
    if field.kind == "integer":
        out = {"type": "integer", "minimum": int(field.lo)}
        if field.hi is not None:
            out["maximum"] = int(field.hi)
    elif field.kind == "number":
        out = {"type": ["number", "null"] if field.nullable else "number"}
        out["exclusiveMinimum" if field.positive else "minimum"] = field.lo
    elif field.kind == "boolean":
        out = {"type": "boolean"}
    elif field.kind == "dtype":
        out = {"enum": list(DTYPES)}
    elif field.kind == "passes":
        one = {"enum": list(PASSES)}
        out = {"anyOf": [one, {"type": "array", "items": one, "minItems": 1}]}
    elif field.kind == "int_list":
        one = {"type": "integer", "minimum": int(field.lo), "maximum": int(field.hi or 0)}
        out = {"anyOf": [one, {"type": "array", "items": one, "minItems": 1, "uniqueItems": True}]}
    elif field.kind == "devices":
        one = {"type": "string", "pattern": DEVICE_PATTERN}
        out = {"anyOf": [one, {"type": "array", "items": one, "minItems": 1}]}
    elif field.kind == "choice":
        out = {"enum": list(field.choices)}
    elif field.kind == "choices":
        one = {"enum": list(field.choices)}
        out = {"anyOf": [one, {"type": "array", "items": one, "minItems": 1, "uniqueItems": True}]}
    else:  # pragma: no cover - a kind added to Field without its schema
        raise AssertionError(f"no JSON Schema for field kind {field.kind!r}")
    return {"description": field.description, **out}


def _section(fields: dict[str, Field], required: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"type": ["object", "null"], "additionalProperties": False,
                           "properties": {key: _field_schema(f) for key, f in fields.items()}}
    if required:
        out["type"] = "object"
        out["required"] = list(required)
    return out


def _quality_section() -> dict[str, Any]:
    mqar = _section(QUALITY_MQAR_FIELDS)
    mqar["properties"]["params"] = {"type": ["object", "null"], "description": QUALITY_MQAR_PARAMS_DESCRIPTION,
                                    "additionalProperties": {"type": ["object", "null"]}}
    out = _section(QUALITY_FIELDS)
    out["properties"].update({"approx": _section(QUALITY_APPROX_FIELDS), "mqar": mqar})
    return out


def suite_schema(variant_names: list[str] | None = None, published_names: list[str] | None = None
                 ) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of suite files. ``variant_names`` are
    offered as examples of a variant's name (any name or import path is
    allowed: plugins add names); ``published_names`` are the shipped tables."""
    name_schema: dict[str, Any] = {"type": "string", "minLength": 1,
                                   "description": VARIANT_OWN_DESCRIPTIONS["name"]}
    if variant_names:
        name_schema["examples"] = list(variant_names)
    variant = {
        "type": "object", "additionalProperties": False, "required": ["name"],
        "properties": {
            "name": name_schema,
            "label": {"type": "string", "minLength": 1, "pattern": "^[^|]+$",
                      "description": VARIANT_OWN_DESCRIPTIONS["label"]},
            "params": {"type": ["object", "null"], "description": VARIANT_OWN_DESCRIPTIONS["params"]},
            **{key: _field_schema(f) for key, f in {**SETTING_FIELDS, **GRID_FIELDS}.items()},
        },
    }
    published: dict[str, Any] = {"type": "string"}
    if published_names:
        published = {"enum": list(published_names)}
    def sections() -> dict[str, Any]:  # fresh dicts: the top level gets its own descriptions
        return {"defaults": _section(SETTING_FIELDS), "timing": _section(TIMING_FIELDS),
                "limits": _section(LIMIT_FIELDS), "quality": _quality_section()}

    properties: dict[str, Any] = {
        "version": {"const": SCHEMA_VERSION},
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        **sections(),
        "grid": _section(GRID_FIELDS, REQUIRED_GRID_KEYS),
        "variants": {"anyOf": [name_schema, {"type": "array", "minItems": 1,
                                             "items": {"anyOf": [name_schema, {"$ref": "#/$defs/variant"}]}}]},
        "baseline": {"type": "string"},
        "published": published,
        "quick": {"type": ["object", "null"], "additionalProperties": False,
                  "properties": {**sections(), "grid": _section(GRID_FIELDS)}},
    }
    for key, prop in properties.items():
        prop.setdefault("description", TOP_DESCRIPTIONS[key])
    if set(properties) != set(TOP_KEYS):  # pragma: no cover - the two tables must name the same keys
        raise AssertionError(f"schema properties {sorted(properties)} differ from TOP_KEYS {sorted(TOP_KEYS)}")
    properties = {key: properties[key] for key in TOP_KEYS}
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "attnbench suite",
        "description": "A suite file of attnbench (attnbench run SUITE.yaml). Generated by `attnbench schema` "
                       "from the validator's key tables.",
        "type": "object",
        "additionalProperties": False,
        "required": ["grid", "variants"],
        "properties": properties,
        "$defs": {"variant": variant},
    }


def builtin_suite_schema() -> dict[str, Any]:
    """The schema with attnbench's built-in variants and shipped tables (what
    ``attnbench schema`` prints and the package ships)."""
    from attnbench.store.published import published_names
    from attnbench.variants import variant_info, variant_names

    builtins = [n for n in variant_names() if variant_info(n).origin == "built-in"]
    return suite_schema(builtins, published_names())


def schema_text() -> str:
    """``builtin_suite_schema()`` as the shipped file holds it (sorted keys, 2-space indent)."""
    import json

    return json.dumps(builtin_suite_schema(), indent=2, ensure_ascii=False) + "\n"

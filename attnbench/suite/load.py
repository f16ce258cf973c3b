"""Suite files: YAML -> validated ``Suite`` -> list of ``Case``.

Every mistake is a ``SuiteError`` naming the file, the line and the key, so
the CLI can print one clear message and exit 2. The YAML is loaded with a
SafeLoader that remembers the line of every key and list item.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from attnbench.errors import SuiteError, SuiteErrors, VariantError, did_you_mean
from attnbench.model import (
    DEFAULT_DECODE_STEPS,
    DEFAULT_PASSES,
    DTYPES,
    PASSES,
    SERVING_PASSES,
    Case,
    Limits,
    TimingSettings,
    VariantSpec,
    resolve_device,
)
from attnbench.quality.plan import QualitySettings
from attnbench.suite.buildcheck import check_builds
from attnbench.suite.quality import parse_quality
from attnbench.suite.schema import (
    DEFAULT_KEYS,
    GRID_FIELDS,
    GRID_KEYS,
    LIMIT_FIELDS,
    QUICK_KEYS,
    REQUIRED_GRID_KEYS,
    SCHEMA_VERSION,
    SETTING_FIELDS,
    TIMING_FIELDS,
    TOP_KEYS,
    VARIANT_KEYS,
    Field,
)
from attnbench.suite.yamlfile import LineDict as _LineDict
from attnbench.suite.yamlfile import plain as _plain
from attnbench.suite.yamlfile import read_yaml as _read_yaml

T = TypeVar("T")

# --- the validated suite ----------------------------------------------------

@dataclass
class Suite:
    name: str
    description: str
    path: str
    defaults: dict[str, Any]
    grid: dict[str, list[Any]]
    variants: list[VariantSpec]
    timing: TimingSettings
    limits: Limits
    baseline: str | None = None
    published: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    quality: QualitySettings | None = None  # the ``quality:`` section (attnbench.suite.quality)
    # Passes a variant cannot run in a setting, with the reason (suite.buildcheck):
    # (label, heads, kv_heads) -> {pass: reason}. cases() leaves them out.
    refusals: dict[tuple[str, int, int], dict[str, str]] = field(default_factory=dict)

    def settings_of(self, spec: VariantSpec) -> dict[str, Any]:
        """The variant's settings: the suite's defaults and its own, ``head_dim`` (when
        given at the more specific level) taking the place of ``dim``."""
        own = {k: v for k, v in spec.overrides.items() if k in DEFAULT_KEYS}
        settings = {**self.defaults, **own}
        if "dim" in own and "head_dim" not in own:
            settings.pop("head_dim", None)
        return settings

    def grid_of(self, spec: VariantSpec) -> dict[str, list[Any]]:
        return {**self.grid, **{k: v for k, v in spec.overrides.items() if k in GRID_KEYS}}

    def planned(self) -> list[Case]:
        """The grid expanded: for each variant, devices × batch × heads × kv_heads × N, N
        innermost so that a series runs from small to large (an OOM then skips the rest).
        Every pass the suite asks for, refused or not."""
        out: list[Case] = []
        for spec in self.variants:
            settings, grid = self.settings_of(spec), self.grid_of(spec)
            devices = list(dict.fromkeys(resolve_device(d) for d in grid["devices"]))
            for device, batch, heads in itertools.product(devices, settings["batch"], grid["heads"]):
                dim = settings["head_dim"] * heads if "head_dim" in settings else settings["dim"]
                for kv_heads, seq_len in itertools.product(grid.get("kv_heads") or [heads],
                                                           sorted(grid["seq_lens"])):
                    passes = [p for p in settings["passes"]
                              if p != "prefill" or seq_len <= settings.get("max_prefill_len", seq_len)]
                    if not passes:
                        continue
                    out.append(Case(
                        suite=self.name, variant=spec.name, label=spec.label, params=dict(spec.params),
                        batch=batch, seq_len=seq_len, heads=heads, dim=dim, kv_heads=kv_heads,
                        dtype=settings["dtype"], device=device, causal=settings["causal"],
                        passes=tuple(passes), compile=settings.get("compile", False),
                        decode_steps=settings.get("decode_steps", DEFAULT_DECODE_STEPS),
                        timing=self.timing, limits=self.limits))
        return out

    def cases(self) -> list[Case]:
        """The cases to run: ``planned()`` without the passes a variant refuses
        (``refused()`` says which and why); a case with no pass left is dropped."""
        out = []
        for case in self.planned():
            refused = self.refusals.get((case.label, case.heads, case.kv_heads), {})
            passes = tuple(p for p in case.passes if p not in refused)
            if passes:
                out.append(replace(case, passes=passes))
        return out

    def refused(self) -> list[str]:
        """One line per variant and setting whose passes are refused, with the reason."""
        lines = []
        for (label, heads, kv_heads), passes in self.refusals.items():
            for reason in dict.fromkeys(passes.values()):
                names = [p for p, r in passes.items() if r == reason]
                kv = f" with kv_heads {kv_heads} of heads {heads}" if kv_heads != heads else ""
                lines.append(f"{label}{kv}: {', '.join(names)} skipped: {reason}")
        return lines

    def fingerprint(self) -> dict[str, Any]:
        """What must match for two runs' figures to be comparable (used by --resume)."""
        quality = {} if self.quality is None else {"quality": self.quality.to_dict()}
        return {
            "timing": asdict(self.timing),
            "variants": {s.label: {"name": s.name, "params": s.params} for s in self.variants},
            **quality,
        }

    def with_device(self, device: str) -> Suite:
        _check_device(device, self.path, None, "--device")
        grid = {**self.grid, "devices": [device]}
        variants = [replace(s, overrides={k: v for k, v in s.overrides.items() if k != "devices"})
                    for s in self.variants]
        return replace(self, grid=grid, variants=variants)


# --- validation ---------------------------------------------------------------

DEFAULTS: dict[str, Any] = {"batch": [1], "dim": 256, "dtype": "float32", "causal": False,
                            "passes": list(DEFAULT_PASSES), "compile": False}


class _Validator:
    """Checks values against the key tables (``attnbench.suite.schema``); every failure
    is a SuiteError naming the file, the line and the key."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, message: str, node: Any = None, key: str | None = None, line: int | None = None) -> None:
        if line is None and node is not None:
            line = getattr(node, "line", None)
        raise SuiteError(message, file=self.path, line=line, key=key)

    def line_of(self, mapping: Any, key: Any) -> int | None:
        lines = getattr(mapping, "lines", None)
        if isinstance(lines, dict):
            return lines.get(key, getattr(mapping, "line", None))
        return getattr(mapping, "line", None)

    def mapping(self, value: Any, key: str, parent: Any, allowed: tuple[str, ...]) -> dict:
        if value is None:
            return _LineDict()
        if not isinstance(value, dict):
            self.fail(f"must be a mapping, got {_kind(value)}", key=key,
                      line=self.line_of(parent, key.split(".")[-1]))
        for k in value:
            if k not in allowed:
                self.fail(f"unknown key.{did_you_mean(str(k), list(allowed))} "
                          f"Allowed here: {', '.join(allowed)}",
                          key=f"{key}.{k}" if key else str(k), line=self.line_of(value, k))
        return value

    def integer(self, value: Any, key: str, line: int | None, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"must be an integer, got {value!r}", key=key, line=line)
        if value < lo:
            self.fail(f"must be at least {lo}, got {value}", key=key, line=line)
        if value > hi:
            self.fail(f"{value} is larger than {hi}: is that a typo?", key=key, line=line)
        return value

    def number(self, value: Any, key: str, line: int | None, lo: float, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(f"must be a number, got {value!r}", key=key, line=line)
        if value < lo or (positive and value <= 0):
            self.fail(f"must be {'positive' if positive else f'at least {lo}'}, got {value}", key=key,
                      line=line)
        return float(value)

    def boolean(self, value: Any, key: str, line: int | None) -> bool:
        if not isinstance(value, bool):
            self.fail(f"must be true or false, got {value!r}", key=key, line=line)
        return value

    def int_list(self, value: Any, key: str, line: int | None, lo: int, hi: int) -> list[int]:
        items = self.nonempty_list(value, key, line)
        out = [self.integer(v, f"{key}[{i}]", _item_line(items, i, line), lo, hi) for i, v in enumerate(items)]
        if len(set(out)) != len(out):
            self.fail("has repeated values", key=key, line=line)
        return out

    def nonempty_list(self, value: Any, key: str, line: int | None) -> list:
        if not isinstance(value, list):
            value = [value] if isinstance(value, (int, str)) and not isinstance(value, bool) else value
        if not isinstance(value, list):
            self.fail(f"must be a list, got {value!r}", key=key, line=line)
        if not value:
            self.fail("must not be empty", key=key, line=line)
        return value

    def value(self, field: Field, value: Any, name: str, line: int | None) -> Any:
        """``value`` checked against ``field`` (see ``attnbench.suite.schema.Field``)."""
        if field.kind == "integer":
            return self.integer(value, name, line, int(field.lo), int(field.hi or 0))
        if field.kind == "number":
            if field.nullable and value is None:
                return None  # explicitly none
            return self.number(value, name, line, float(field.lo), positive=field.positive)
        if field.kind == "boolean":
            return self.boolean(value, name, line)
        if field.kind == "dtype":
            if value not in DTYPES:
                self.fail(f"unknown dtype {value!r}; choose one of {', '.join(DTYPES)}", key=name, line=line)
            return value
        if field.kind == "int_list":
            return self.int_list(value, name, line, int(field.lo), int(field.hi or 0))
        if field.kind == "choice":
            if value not in field.choices:
                self.fail(f"unknown value {value!r}; choose one of {', '.join(field.choices)}", key=name, line=line)
            return value
        items = self.nonempty_list(value, name, line)
        for i, item in enumerate(items):
            if field.kind == "choices" and item not in field.choices:
                self.fail(f"unknown value {item!r}; choose from {', '.join(field.choices)}",
                          key=f"{name}[{i}]", line=_item_line(items, i, line))
            if field.kind == "passes" and item not in PASSES:
                self.fail(f"unknown pass {item!r}; choose from {', '.join(PASSES)}",
                          key=f"{name}[{i}]", line=_item_line(items, i, line))
            if field.kind == "devices":
                _check_device(item, self.path, _item_line(items, i, line), f"{name}[{i}]")
        return list(dict.fromkeys(items))

    def fields(self, raw: dict, prefix: str, fields: dict[str, Field], base: dict[str, Any]) -> dict[str, Any]:
        """``base`` updated with the keys of ``raw`` that ``fields`` names, each checked."""
        out = dict(base)
        for key, rule in fields.items():
            if key in raw:
                out[key] = self.value(rule, raw[key], f"{prefix}{key}", self.line_of(raw, key))
        return out


def _kind(value: Any) -> str:
    """What a YAML value is, in the file's terms (not our line-tracking classes)."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"[:80]


def _item_line(items: Any, i: int, fallback: int | None) -> int | None:
    lines = getattr(items, "lines", None)
    return lines[i] if isinstance(lines, list) and i < len(lines) else fallback


def _check_device(device: Any, path: str, line: int | None, key: str) -> None:
    ok = isinstance(device, str) and (
        device in ("cpu", "cuda", "auto")
        or (device.startswith("cuda:") and device[5:].isascii() and device[5:].isdigit()))
    if not ok:
        raise SuiteError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto",
                         file=path, line=line, key=key)


# --- one function per part of the file -------------------------------------------

def _header(v: _Validator, raw: Any, path: str) -> tuple[str, str]:
    """The top-level keys, the version, the name and the description."""
    if raw is None:
        v.fail("the suite is empty")
    if not isinstance(raw, dict):
        v.fail(f"a suite is a mapping of keys (name, grid, variants, ...), got {_kind(raw)}", line=1)
    v.mapping(raw, "", None, TOP_KEYS)
    if "version" in raw and raw["version"] != SCHEMA_VERSION:
        v.fail(f"unsupported schema version {raw['version']!r}; this attnbench reads version {SCHEMA_VERSION}",
               key="version", line=v.line_of(raw, "version"))
    name = raw.get("name", Path(path).stem)
    if not isinstance(name, str) or not name.strip():
        v.fail("must be a non-empty string", key="name", line=v.line_of(raw, "name"))
    description = raw.get("description", "")
    if not isinstance(description, str):
        v.fail("must be a string", key="description", line=v.line_of(raw, "description"))
    return name, description


class _Sections:
    """A section of the file (defaults, grid, timing, limits) as the mappings that
    set it: the top-level one, then the quick one with --quick."""

    def __init__(self, v: _Validator, raw: dict, quick: bool) -> None:
        self.v, self.raw = v, raw
        checked_quick = v.mapping(raw.get("quick"), "quick", raw, QUICK_KEYS)  # checked with or without --quick
        self.quick = checked_quick if quick else {}

    def parts(self, key: str, allowed: tuple[str, ...]) -> list[dict]:
        parts = [self.v.mapping(self.raw.get(key), key, self.raw, allowed)]
        if key in self.quick:
            parts.append(self.v.mapping(self.quick[key], f"quick.{key}", self.quick, allowed))
        return parts

    def values(self, key: str, fields: dict[str, Field], base: dict[str, Any], prefix: str) -> dict[str, Any]:
        for part in self.parts(key, tuple(fields)):
            base = self.v.fields(part, prefix, fields, base)
        return base


def _grid(v: _Validator, raw: dict, sections: _Sections) -> dict[str, list]:
    grid = sections.values("grid", GRID_FIELDS, {"devices": ["cpu"]}, "grid.")
    # Every required key at once; the line of the grid when there is one, none (not "line 1") when not.
    missing = [SuiteError("is required: the grid needs at least one value", file=v.path, key=f"grid.{key}",
                          line=v.line_of(raw, "grid") if "grid" in raw else None)
               for key in REQUIRED_GRID_KEYS if key not in grid]
    if missing:
        raise missing[0] if len(missing) == 1 else SuiteErrors(missing)
    return grid


def _timing(sections: _Sections) -> TimingSettings:
    timing = TimingSettings(**sections.values("timing", TIMING_FIELDS, {}, "timing."))
    if timing.min_reps > timing.max_reps:
        timing = replace(timing, min_reps=timing.max_reps)
    return timing


def _variant(v: _Validator, item: Any, i: int, line: int | None, items: list, defaults: dict[str, Any],
             known: list[str], labels: dict[str, int]) -> VariantSpec:
    """One entry of ``variants``: a name, or a mapping with name, label, params and own settings."""
    from attnbench.variants import variant_info
    from attnbench.variants.factory import parameter_problem, unknown_parameter

    key = f"variants[{i}]"
    if isinstance(item, str):
        item = _LineDict(name=item)
        item.line, item.lines = line, {"name": line}
    if not isinstance(item, dict):
        v.fail(f"must be a variant name or a mapping with 'name', got {item!r}", key=key, line=line)
    v.mapping(item, key, items, VARIANT_KEYS)
    vname = item.get("name")
    if not isinstance(vname, str) or not vname:
        v.fail("needs a 'name'", key=f"{key}.name", line=line)
    name_line = v.line_of(item, "name")
    if vname not in known and ":" not in vname:
        v.fail(f"unknown variant {vname!r}.{did_you_mean(vname, known)} "
               f"Run `attnbench list` for all of them", key=f"{key}.name", line=name_line)
    try:
        info = variant_info(vname)
    except (VariantError, ImportError) as exc:
        v.fail(str(exc), key=f"{key}.name", line=name_line)
    params = item.get("params") or {}
    if not isinstance(params, dict):
        v.fail("must be a mapping of parameter: value", key=f"{key}.params", line=v.line_of(item, "params"))
    for p, value in params.items():
        message = unknown_parameter(vname, str(p), list(info.defaults)) or parameter_problem(vname, str(p), value)
        if message:
            v.fail(message, key=f"{key}.params.{p}", line=v.line_of(params, p))
    label = item.get("label", vname)
    if not isinstance(label, str) or not label or "|" in label:
        v.fail("must be a non-empty string without '|'", key=f"{key}.label", line=v.line_of(item, "label"))
    if label in labels:
        v.fail(f"label {label!r} is used twice (also line {labels[label]}); give each a distinct 'label'",
               key=f"{key}.label" if "label" in item else f"{key}.name", line=line)
    labels[label] = line or 0
    own = v.fields(item, f"{key}.", SETTING_FIELDS, {})
    own.update(v.fields(item, f"{key}.", GRID_FIELDS, {}))
    _one_width(v, own, item, f"{key}.")
    passes = own.get("passes", defaults["passes"])
    serving = [p for p in passes if p in SERVING_PASSES]
    if serving and not own.get("causal", defaults["causal"]):
        where = "passes" if "passes" in item else ("causal" if "causal" in item else None)
        v.fail(f"{' and '.join(serving)} {'are' if len(serving) > 1 else 'is'} causal (a prompt, then tokens one "
               "by one): set causal: true", key=f"{key}.{where}" if where else "defaults.causal",
               line=v.line_of(item, where) if where else line)
    if own.get("causal", defaults["causal"]) and not info.causal:
        v.fail(f"variant {vname!r} does not support causal attention; set causal: false for it",
               key=f"{key}.causal" if "causal" in item else "defaults.causal",
               line=v.line_of(item, "causal") if "causal" in item else line)
    return VariantSpec(name=vname, label=label, params=_plain(params), overrides=own, line=line or 0)


def _variants(v: _Validator, raw: dict, defaults: dict[str, Any]) -> list[VariantSpec]:
    from attnbench.variants import variant_names

    if "variants" not in raw:
        v.fail("is required: list the variants to measure", key="variants")
    items = v.nonempty_list(raw["variants"], "variants", v.line_of(raw, "variants"))
    specs: list[VariantSpec] = []
    labels: dict[str, int] = {}  # label -> line, filled by _variant
    known = variant_names()
    errors: list[SuiteError] = []
    for i, item in enumerate(items):
        line = _item_line(items, i, v.line_of(raw, "variants"))
        try:
            specs.append(_variant(v, item, i, line, items, defaults, known, labels))
        except SuiteError as exc:  # each entry stands alone: report every one that is wrong
            errors.append(exc)
    if errors:
        raise SuiteErrors(errors)
    return specs


def _references(v: _Validator, raw: dict, suite: Suite) -> None:
    """``baseline`` (one of the suite's labels) and ``published`` (a shipped table)."""
    from attnbench.store.published import published_names

    for key in ("baseline", "published"):
        if key in raw:
            value = raw[key]
            if not isinstance(value, str):
                v.fail("must be a string", key=key, line=v.line_of(raw, key))
            setattr(suite, key, value)
    if suite.published is not None and suite.published not in published_names():
        v.fail(f"unknown published table {suite.published!r}; shipped: {', '.join(published_names())}",
               key="published", line=v.line_of(raw, "published"))
    labels = [s.label for s in suite.variants]
    if suite.baseline is not None and suite.baseline not in labels:
        v.fail(f"baseline {suite.baseline!r} is not one of the suite's variants ({', '.join(labels)})",
               key="baseline", line=v.line_of(raw, "baseline"))


def _one_width(v: _Validator, values: dict, item: dict, prefix: str) -> None:
    """dim or head_dim at one level (a variant, a defaults section), not both."""
    if "dim" in values and "head_dim" in values:
        v.fail("give dim or head_dim, not both (dim = heads x head_dim)", key=f"{prefix}head_dim",
               line=v.line_of(item, "head_dim"))


def _check_width(v: _Validator, sections: _Sections) -> None:
    for part in sections.parts("defaults", tuple(SETTING_FIELDS)):
        _one_width(v, part, part, "defaults.")


def _check_heads(suite: Suite, v: _Validator, raw: dict) -> None:
    for spec in suite.variants:
        settings, grid = suite.settings_of(spec), suite.grid_of(spec)
        for heads in grid["heads"]:
            dim = settings["dim"]
            if "head_dim" not in settings and dim % heads:
                where = "heads" if "heads" in spec.overrides or "dim" in spec.overrides else "grid.heads"
                v.fail(f"heads {heads} does not divide dim {dim} (variant {spec.label!r})", key=where,
                       line=spec.line if where == "heads" else v.line_of(raw.get("grid") or {}, "heads"))
            for kv_heads in grid.get("kv_heads") or []:
                if heads % kv_heads:
                    own = "kv_heads" in spec.overrides or "heads" in spec.overrides
                    v.fail(f"kv_heads {kv_heads} does not divide heads {heads} (variant {spec.label!r}): each "
                           "key/value head serves heads / kv_heads query heads",
                           key="kv_heads" if own else "grid.kv_heads",
                           line=spec.line if own else v.line_of(raw.get("grid") or {}, "kv_heads"))


def _collect(errors: list[SuiteError], check: Callable[[], T], fallback: T) -> T:
    """``check()``, or ``fallback`` with its errors noted, so that one wrong
    section does not hide the errors of the next."""
    try:
        return check()
    except SuiteErrors as exc:
        errors.extend(exc.errors)
    except SuiteError as exc:
        errors.append(exc)
    return fallback


def parse(text: str, path: str = "<suite>", quick: bool = False) -> Suite:
    """Validate suite text; raise SuiteError naming file, line and key (SuiteErrors
    when there are several: every section is checked)."""
    raw = _read_yaml(text, path)
    v = _Validator(path)
    name, description = _header(v, raw, path)
    errors: list[SuiteError] = []
    sections = _Sections(v, raw, quick)
    defaults = _collect(errors, lambda: sections.values("defaults", SETTING_FIELDS, dict(DEFAULTS), "defaults."),
                        dict(DEFAULTS))
    _collect(errors, lambda: _check_width(v, sections), None)
    grid = _collect(errors, lambda: _grid(v, raw, sections), {})
    timing = _collect(errors, lambda: _timing(sections), TimingSettings())
    limits = _collect(errors, lambda: Limits(**sections.values("limits", LIMIT_FIELDS, {}, "limits.")), Limits())
    specs = _collect(errors, lambda: _variants(v, raw, defaults), [])
    suite = Suite(name=name, description=description, path=path, defaults=defaults, grid=grid,
                  variants=specs, timing=timing, limits=limits, raw=_plain(raw))
    _collect(errors, lambda: _references(v, raw, suite), None)
    if not errors:
        _collect(errors, lambda: _check_heads(suite, v, raw), None)
    suite.quality = _collect(errors, lambda: parse_quality(v, sections, specs), None)
    if not errors:
        _collect(errors, lambda: check_builds(suite), None)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise SuiteErrors(errors)
    return suite


def load(path: str | Path, quick: bool = False) -> Suite:
    """Load and validate a suite file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SuiteError("no such file", file=str(path)) from None
    except IsADirectoryError:
        raise SuiteError("is a directory, not a suite file", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(f"cannot read: {exc}", file=str(path)) from None
    return parse(text, str(path), quick=quick)

"""The suite schema (attnbench.suite.schema): generated from the validator's key
tables, shipped in the package, printed by `attnbench schema`; every shipped
suite validates against it and a misspelt key does not."""

from __future__ import annotations

import json
from importlib.resources import files

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from attnbench.cli.app import app
from attnbench.errors import SuiteError
from attnbench.suite import load as suite_mod
from attnbench.suite import schema as schema_mod
from tests.helpers import ROOT

SHIPPED = sorted([*(ROOT / "suites").glob("*.yaml"), *(ROOT / "examples").glob("*.yaml")])


def messages(validator, document) -> list[str]:
    """Every error message, those inside anyOf branches included."""
    out, todo = [], list(validator.iter_errors(document))
    while todo:
        error = todo.pop()
        out.append(error.message)
        todo.extend(error.context or [])
    return out


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    printed = json.loads(CliRunner().invoke(app, ["schema"]).stdout)
    cls = jsonschema.validators.validator_for(printed)
    cls.check_schema(printed)
    assert cls is jsonschema.Draft202012Validator
    return cls(printed)


def test_the_package_ships_what_attnbench_schema_prints():
    shipped = files("attnbench").joinpath("data", schema_mod.SCHEMA_FILE).read_text(encoding="utf-8")
    assert shipped == schema_mod.schema_text(), "regenerate: attnbench schema > attnbench/data/suite.schema.json"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_suite_validates(validator, path):
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    errors = [e.message for e in validator.iter_errors(document)]
    assert not errors, f"{path.name}: {errors}"
    suite_mod.load(path)  # and the validator agrees


@pytest.mark.parametrize(("where", "text"), [
    ("top level", "variants: [softmax]\ngrid: {seq_lens: [64], heads: [2]}\nvariant: [sdpa]\n"),
    ("defaults", "variants: [softmax]\ngrid: {seq_lens: [64], heads: [2]}\ndefaults: {btach: 2}\n"),
    ("grid", "variants: [softmax]\ngrid: {seq_lens: [64], heads: [2], device: [cpu]}\n"),
    ("a variant", "variants: [{name: softmax, lable: s}]\ngrid: {seq_lens: [64], heads: [2]}\n"),
    ("timing", "variants: [softmax]\ngrid: {seq_lens: [64], heads: [2]}\ntiming: {warmpu: 1}\n"),
    ("quick", "variants: [softmax]\ngrid: {seq_lens: [64], heads: [2]}\nquick: {grdi: {heads: [1]}}\n"),
])
def test_a_misspelt_key_is_rejected_by_both(validator, where, text):
    document = yaml.safe_load(text)
    assert any("Additional properties are not allowed" in m for m in messages(validator, document))
    with pytest.raises(SuiteError, match="unknown key. Did you mean"):
        suite_mod.parse(text, "typo.yaml")


@pytest.mark.parametrize("text", [
    "variants: [softmax]\ngrid: {seq_lens: [64], heads: [2]}\ndefaults: {dtype: float8}\n",
    "variants: [softmax]\ngrid: {seq_lens: [0], heads: [2]}\n",
    "variants: [softmax]\ngrid: {seq_lens: [64], heads: [2], devices: [gpu]}\n",
    "variants: [softmax]\ngrid: {seq_lens: [64], heads: [2]}\nlimits: {case_timeout_s: 0}\n",
    "variants: [softmax]\ngrid: {seq_lens: [64, 64], heads: [2]}\n",
    "variants: [{name: softmax, label: 'a|b'}]\ngrid: {seq_lens: [64], heads: [2]}\n",
    "variants: [softmax]\ngrid: {heads: [2]}\n",
    "grid: {seq_lens: [64], heads: [2]}\n",
])
def test_bad_values_are_rejected_by_both(validator, text):
    assert list(validator.iter_errors(yaml.safe_load(text)))
    with pytest.raises(SuiteError):
        suite_mod.parse(text, "bad.yaml")


def test_the_schema_names_every_key_the_validator_takes():
    generated = schema_mod.suite_schema()
    props = generated["properties"]
    assert tuple(props) == schema_mod.TOP_KEYS
    assert tuple(props["defaults"]["properties"]) == schema_mod.DEFAULT_KEYS
    assert tuple(props["grid"]["properties"]) == schema_mod.GRID_KEYS
    assert tuple(props["timing"]["properties"]) == schema_mod.TIMING_KEYS
    assert tuple(props["limits"]["properties"]) == schema_mod.LIMIT_KEYS
    assert set(props["quick"]["properties"]) == set(schema_mod.QUICK_KEYS)
    quality = props["quality"]["properties"]
    assert tuple(quality) == schema_mod.QUALITY_KEYS
    assert tuple(quality["approx"]["properties"]) == tuple(schema_mod.QUALITY_APPROX_FIELDS)
    assert tuple(quality["mqar"]["properties"]) == schema_mod.QUALITY_MQAR_KEYS
    assert tuple(generated["$defs"]["variant"]["properties"]) == schema_mod.VARIANT_KEYS


def test_the_allocator_is_a_timing_setting(tmp_path):
    base = ("version: 1\nname: a\ndefaults: {dim: 32}\ngrid: {seq_lens: [64], heads: [2]}\nvariants: [softmax]\n")
    assert suite_mod.load(_write(tmp_path / "s.yaml", base)).timing.allocator == "steady"
    assert suite_mod.load(_write(tmp_path / "d.yaml", base + "timing: {allocator: default}\n")).timing.allocator \
        == "default"
    with pytest.raises(SuiteError, match=r"d2.yaml:6: timing.allocator: unknown value 'jemalloc'"):
        suite_mod.load(_write(tmp_path / "d2.yaml", base + "timing: {allocator: jemalloc}\n"))
    assert schema_mod.suite_schema()["properties"]["timing"]["properties"]["allocator"]["enum"] == ["steady",
                                                                                                   "default"]


def _write(path, text):
    path.write_text(text)
    return path

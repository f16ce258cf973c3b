"""The suite loader (attnbench.suite.load): validation messages name file, line and
key; the shipped suites load."""

from pathlib import Path

import pytest

from attnbench.errors import SuiteError
from attnbench.suite import load as suite_mod
from attnbench.suite.load import load, parse
from tests.helpers import SUITE_DIR

BASE = """\
name: t
defaults:
  dim: 64
grid:
  seq_lens: [128, 64]
  heads: [2, 4]
variants:
  - softmax
  - name: linformer
    label: lin16
    params: {k: 16}
    dim: 32
    seq_lens: [64]
"""


def test_cases_expand_the_grid_with_variant_overrides():
    suite = parse(BASE, "s.yaml")
    cases = suite.cases()
    soft = [c for c in cases if c.label == "softmax"]
    lin = [c for c in cases if c.label == "lin16"]
    assert [(c.heads, c.seq_len) for c in soft] == [(2, 64), (2, 128), (4, 64), (4, 128)]
    assert [(c.heads, c.seq_len, c.dim, c.params) for c in lin] == [(2, 64, 32, {"k": 16}), (4, 64, 32, {"k": 16})]
    assert len({c.case_id for c in cases}) == len(cases)
    assert all(c.seed == parse(BASE, "s.yaml").cases()[i].seed for i, c in enumerate(cases))


@pytest.mark.parametrize("text,line,key,message", [
    ("name: [", 1, None, "YAML syntax error"),
    (BASE.replace("dim: 64", "dim: sixty"), 3, "defaults.dim", "must be an integer"),
    (BASE.replace("seq_lens: [128, 64]", "seq_lens: [128, -64]"), 5, "grid.seq_lens[1]", "at least 1"),
    (BASE.replace("seq_lens: [128, 64]", "seq_lens: [128, 1000000000]"), 5, "grid.seq_lens[1]", "typo"),
    (BASE.replace("seq_lens: [128, 64]", "seq_lens: []"), 5, "grid.seq_lens", "must not be empty"),
    (BASE.replace("heads: [2, 4]", "heads: [3]"), 6, "grid.heads", "does not divide"),
    (BASE.replace("  - softmax", "  - softmx"), 8, "variants[0].name", "Did you mean 'softmax'"),
    (BASE.replace("{k: 16}", "{kk: 16}"), 11, "variants[1].params.kk", "Did you mean 'k'"),
    (BASE.replace("name: t", "name: t\nfoo: 1"), 2, "foo", "unknown key"),
    (BASE.replace("  dim: 64", "  dim: 64\n  dtype: float8"), 4, "defaults.dtype", "unknown dtype"),
    (BASE.replace("  heads: [2, 4]", "  heads: [2, 4]\n  devices: [tpu]"), 7, "grid.devices[0]", "unknown device"),
    (BASE.replace("label: lin16", "label: softmax"), 9, "variants[1].label", "used twice"),
    (BASE + "  - name: fastformer\n    causal: true\n", 15, "variants[2].causal", "does not support causal"),
    ("grid: {seq_lens: [64], heads: [2]}\n", None, "variants", "is required"),
    ("variants: [softmax]\n", None, "grid.seq_lens", "is required"),
    ("defaults:\n  batch: 1\n  batch: 2\n", 3, "defaults.batch", "duplicate key"),
    ("variants:\n  - name: linformer\n    params: {k: 8, k: 9}\n", 3, "variants[0].params.k", "duplicate key"),
])
def test_mistakes_name_file_line_and_key(text, line, key, message):
    with pytest.raises(SuiteError) as info:
        parse(text, "suite.yaml")
    err = info.value
    assert err.file == "suite.yaml"
    assert message in err.message
    assert err.line == line  # None: a key that is missing has no line
    assert err.key == key
    assert str(err).startswith("suite.yaml")


def test_load_reports_missing_file(tmp_path: Path):
    with pytest.raises(SuiteError, match="no such file"):
        load(tmp_path / "nope.yaml")


def test_quick_section_overrides_grid_and_timing():
    text = BASE + "quick:\n  grid: {seq_lens: [64]}\n  timing: {max_reps: 3}\n"
    assert {c.seq_len for c in parse(text, "s.yaml").cases()} == {64, 128}
    quick = parse(text, "s.yaml", quick=True)
    assert {c.seq_len for c in quick.cases()} == {64}
    assert quick.timing.max_reps == 3


@pytest.mark.parametrize("path", sorted(SUITE_DIR.glob("*.yaml")))
def test_shipped_suites_validate(path: Path):
    suite = load(path)
    assert suite.cases()
    load(path, quick=True)


def test_every_error_of_a_suite_is_reported_not_only_the_first():
    text = ("grid: {seq_lens: [64], heads: [2]}\ndefaults: {batch: 0}\nvariants:\n  - nope\n"
            "  - name: sdpa\n    params: {backend: flsh}\n")
    with pytest.raises(SuiteError) as info:
        parse(text, "suite.yaml")
    shown = str(info.value)
    assert shown.startswith("suite.yaml: 3 errors")
    assert "suite.yaml:2: defaults.batch" in shown and "suite.yaml:4: variants[0].name" in shown
    assert "suite.yaml:6: variants[1].params.backend" in shown and "Did you mean 'flash'" in shown


def test_a_constructor_check_fails_when_the_suite_is_loaded():
    text = "grid: {seq_lens: [64], heads: [2]}\nvariants:\n  - name: local\n    params: {window: 0}\n"
    with pytest.raises(SuiteError) as info:
        parse(text, "suite.yaml")
    assert info.value.line == 3 and "window" in str(info.value)


def test_every_missing_grid_key_is_reported_at_once():
    with pytest.raises(SuiteError) as info:
        parse("grid: {devices: [cpu]}\nvariants: [softmax]\n", "suite.yaml")
    shown = str(info.value)
    assert "suite.yaml:1: grid.seq_lens: is required" in shown and "suite.yaml:1: grid.heads: is required" in shown


@pytest.mark.parametrize("name", ["lra", "fastformer"])
def test_shipped_lra_and_fastformer_suites_validate(name: str):
    path = SUITE_DIR / f"{name}.yaml"
    full, quick = suite_mod.load(path), suite_mod.load(path, quick=True)
    assert full.baseline == "softmax"
    for s in (full, quick):
        assert all(set(c.passes) == {"forward", "forward_backward"} for c in s.cases())
    if name == "lra":
        assert full.published == "lra_table2"
        assert full.defaults["batch"] == [32] and full.defaults["dim"] == 256 and full.grid["heads"] == [4]
        assert full.grid["seq_lens"] == [1024, 2048, 3072, 4096]
        from attnbench.store.published import load_published

        assert {v.name for v in full.variants} == set(load_published("lra_table2").frame["variant"])
        assert quick.defaults["batch"][0] < 32 and quick.grid["seq_lens"] == full.grid["seq_lens"]
    else:
        assert full.defaults["dim"] == 256 and full.grid["heads"] == [16]
        assert {v.name for v in full.variants} == {"softmax", "longformer", "bigbird", "linformer", "linear",
                                                   "poolingformer", "fastformer"}
        ns = full.grid["seq_lens"]
        assert all(b == 2 * a for a, b in zip(ns, ns[1:], strict=False))

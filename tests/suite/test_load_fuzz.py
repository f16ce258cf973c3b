"""Fuzz the suite loader: random YAML documents, random text, and random
mutations of the shipped suites (suites/*.yaml, whatever exists) either load
or raise SuiteError, never anything else. A suite that loads must also expand
into cases and serialise into run.json."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnbench.errors import SuiteError
from attnbench.model import DTYPES, PASSES
from attnbench.suite import load as suite_mod
from attnbench.suite import schema
from attnbench.variants import registry
from tests.helpers import SUITE_DIR

SUITES = sorted(SUITE_DIR.glob("*.yaml"))
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = sorted(set(schema.TOP_KEYS + schema.DEFAULT_KEYS + schema.GRID_KEYS + schema.VARIANT_KEYS
                  + schema.TIMING_KEYS + schema.LIMIT_KEYS))
WORDS = KEYS + list(DTYPES) + list(PASSES) + [
    "softmax", "sdpa", "linformer", "fastformer", "local", "cpu", "cuda", "cuda:0", "auto", "k", "window"]


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS), st.text(max_size=12), st.sampled_from([0, 1, 2, 16, 64, 4096, 10**9, -1]))


keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8), st.integers(-3, 3))


documents = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=5), st.dictionaries(keys, children, max_size=6)),
    max_leaves=40)


def check(text: str, quick: bool = False) -> None:
    """The property: load or SuiteError; a loaded suite is usable."""
    before = dict(registry.registered())  # an import-path name may register a variant: undo it
    try:
        suite = suite_mod.parse(text, "fuzz.yaml", quick=quick)
    except SuiteError as exc:
        assert str(exc).startswith("fuzz.yaml")
        return
    finally:
        registry.restore(before)
    cases = suite.cases()
    assert cases
    assert all(c.dim % c.heads == 0 for c in cases)
    assert len({c.case_id for c in cases}) == len(cases)
    json.dumps(suite.fingerprint())
    json.dumps(suite.raw, default=str)


def dump(document: Any) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


@pytest.mark.slow
@FUZZ
@given(documents)
def test_random_documents(document):
    check(dump(document))


@pytest.mark.slow
@FUZZ
@given(st.text(alphabet=st.sampled_from(list("abc:-[]{}&*!|>'\"#%@`,?\n\t 0123456789.~=")), max_size=80))
def test_random_yaml_like_text(text):
    check(text)


@pytest.mark.slow
@FUZZ
@given(st.text(max_size=200))
def test_random_text(text):
    check(text)


# --- mutations of the shipped suites -------------------------------------------------

def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys and indices) into a loaded YAML document."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, prefix + (i,))
    return out


def at(node: Any, path: tuple) -> Any:
    for step in path:
        node = node[step]
    return node


@functools.cache
def loaded(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@st.composite
def structural_mutation(draw) -> str:
    document = copy.deepcopy(loaded(draw(st.sampled_from(SUITES))))
    for _ in range(draw(st.integers(1, 3))):
        candidates = [p for p in paths(document) if p]
        if not candidates or not isinstance(document, dict):
            break
        path = draw(st.sampled_from(candidates))
        parent, last = at(document, path[:-1]), path[-1]
        action = draw(st.sampled_from(["delete", "retype", "replace", "insert", "duplicate"]))
        if action == "delete":
            del parent[last]
        elif action == "retype":  # the same value as another type
            value = parent[last]
            parent[last] = draw(st.sampled_from([str(value), [value], {"value": value}, None, True, 3.5, -1, 0]))
        elif action == "replace":
            parent[last] = draw(documents)
        elif action == "insert" and isinstance(parent, dict):
            parent[draw(keys)] = draw(documents)
        elif action == "insert":
            parent.insert(draw(st.integers(0, len(parent))), draw(documents))
        else:  # the same item twice: repeated labels, N, heads
            if isinstance(parent, list):
                parent.append(parent[last])
    return dump(document)


@st.composite
def text_mutation(draw) -> str:
    text = draw(st.sampled_from(SUITES)).read_text()
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["truncate", "garbage", "delete", "swap_lines", "indent"]))
        i = draw(st.integers(0, len(text)))
        if action == "truncate":
            text = text[:i]
        elif action == "garbage":
            text = text[:i] + draw(st.text(max_size=10)) + text[i:]
        elif action == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 20)):]
        else:
            lines = text.splitlines()
            if len(lines) < 2:
                continue
            j = draw(st.integers(0, len(lines) - 1))
            if action == "swap_lines":
                k = draw(st.integers(0, len(lines) - 1))
                lines[j], lines[k] = lines[k], lines[j]
            else:
                lines[j] = draw(st.sampled_from(["", " ", "  ", "\t"])) + lines[j]
            text = "\n".join(lines) + "\n"
    return text


needs_suites = pytest.mark.skipif(not SUITES, reason="no suites/*.yaml to mutate")


@needs_suites
def test_shipped_suites_load():
    for path in SUITES:
        for quick in (False, True):
            suite = suite_mod.load(path, quick=quick)
            assert suite.cases()


@pytest.mark.slow
@needs_suites
@FUZZ
@given(structural_mutation(), st.booleans())
def test_structural_mutations_of_shipped_suites(text, quick):
    check(text, quick=quick)


@pytest.mark.slow
@needs_suites
@FUZZ
@given(text_mutation(), st.booleans())
def test_text_mutations_of_shipped_suites(text, quick):
    check(text, quick=quick)


REGRESSIONS = {
    "impossible date": "name: 2001-02-30\n",
    "tagged int": "name: !!int x\n",
    "tagged float": "name: !!float x\n",
    "tagged bool": "name: !!bool x\n",
    "tagged timestamp": "name: !!timestamp x\n",
    "5000 digits": "name: x\ngrid: {seq_lens: [" + "9" * 5000 + "], heads: [1]}\nvariants: [softmax]\n",
    "deep nesting": "name: " + "[" * 2000 + "]" * 2000 + "\n",
    "quick as a list": "name: x\nquick: [1]\n",
    "non-ascii device index": "name: x\ngrid: {seq_lens: [4], heads: [1], devices: ['cuda:\u0663']}\n"
                              "variants: [softmax]\n",
}


@pytest.mark.parametrize("text", list(REGRESSIONS.values()), ids=list(REGRESSIONS))
def test_regressions_found_by_fuzzing(text):
    with pytest.raises(SuiteError) as info:
        suite_mod.parse(text, "fuzz.yaml")
    assert "_Line" not in str(info.value)  # our line-tracking classes are not the user's business

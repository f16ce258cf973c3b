"""Suites that serve: head_dim instead of dim, kv_heads and batch as grid axes,
prefill and decode only when causal, the passes a variant refuses named (and an
error when nothing could run), max_prefill_len."""

from __future__ import annotations

import pytest

from attnbench.errors import SuiteError
from attnbench.suite.load import parse
from tests.helpers import SUITE_DIR

SERVING = """\
name: s
defaults:
  head_dim: 16
  causal: true
  passes: [prefill, decode]
grid:
  seq_lens: [64, 128]
  heads: [4, 8]
  kv_heads: [4, 2]
variants:
  - sdpa
  - linear
"""


def test_head_dim_sets_dim_per_heads_and_kv_heads_is_an_axis() -> None:
    cases = parse(SERVING, "s.yaml").cases()
    assert {(c.heads, c.dim) for c in cases} == {(4, 64), (8, 128)}
    assert sorted({(c.heads, c.kv_heads) for c in cases}) == [(4, 2), (4, 4), (8, 2), (8, 4)]
    ids = {c.case_id for c in cases}
    assert len(ids) == len(cases) == 2 * 2 * 2 * 2
    plain = next(c for c in cases if c.kv_heads == c.heads)
    assert "kv=" not in plain.case_id  # an MHA case keeps the identity it had before kv_heads existed


def test_batch_is_an_axis() -> None:
    cases = parse(SERVING.replace("  head_dim: 16\n", "  head_dim: 16\n  batch: [1, 4]\n"), "s.yaml").cases()
    assert sorted({c.batch for c in cases}) == [1, 4]


@pytest.mark.parametrize(("text", "key", "words"), [
    (SERVING.replace("  head_dim: 16\n", "  head_dim: 16\n  dim: 64\n"), "defaults.head_dim", "dim or head_dim"),
    (SERVING.replace("causal: true", "causal: false"), "defaults.causal", "set causal: true"),
    (SERVING.replace("kv_heads: [4, 2]", "kv_heads: [3]"), "grid.kv_heads", "does not divide heads 4"),
])
def test_serving_mistakes_name_the_key(text: str, key: str, words: str) -> None:
    with pytest.raises(SuiteError) as info:
        parse(text, "s.yaml")
    assert key in str(info.value) and words in str(info.value)


def test_a_refused_pass_is_left_out_and_said() -> None:
    suite = parse(SERVING.replace("  - linear\n", "  - linear\n  - reformer\n  - aft\n"), "s.yaml")
    refused = "\n".join(suite.refused())
    assert "reformer: prefill, decode skipped: cannot decode" in refused
    assert "aft with kv_heads 2 of heads 4" in refused and "no key/value heads" in refused
    labels = {(c.label, c.kv_heads, c.heads) for c in suite.cases()}
    assert not any(label == "reformer" for label, _, _ in labels)  # no pass left: no case
    assert ("aft", 4, 4) in labels and ("aft", 2, 4) not in labels


def test_a_suite_where_nothing_can_run_is_an_error() -> None:
    text = SERVING.replace("  - sdpa\n  - linear\n", "  - reformer\n")
    with pytest.raises(SuiteError, match="nothing in this suite can run: reformer"):
        parse(text, "s.yaml")


def test_a_forward_still_runs_where_decode_is_refused() -> None:
    text = SERVING.replace("passes: [prefill, decode]", "passes: [forward, decode]").replace(
        "  - linear\n", "  - reformer\n")
    cases = [c for c in parse(text, "s.yaml").cases() if c.label == "reformer"]
    assert cases and all(c.passes == ("forward",) for c in cases)


def test_max_prefill_len_keeps_decode_at_every_n() -> None:
    text = SERVING.replace("  passes: [prefill, decode]\n", "  passes: [prefill, decode]\n  max_prefill_len: 64\n")
    cases = parse(text, "s.yaml").cases()
    assert {c.passes for c in cases if c.seq_len == 64} == {("prefill", "decode")}
    assert {c.passes for c in cases if c.seq_len == 128} == {("decode",)}


def test_the_shipped_decode_suites_validate() -> None:
    from attnbench.suite.load import load

    cpu = load(SUITE_DIR / "decode.yaml")
    assert {c.dim for c in cpu.cases()} == {1024} and {c.kv_heads for c in cpu.cases()} == {8, 2, 1}
    assert {"sdpa", "softmax", "local", "linear", "performer", "rfa", "aft", "lightconv"} == {
        v.name for v in cpu.variants}
    gpu = load(SUITE_DIR / "gpu-decode.yaml")
    assert {(c.heads, c.dim) for c in gpu.cases()} == {(32, 4096)}
    assert {c.kv_heads for c in gpu.cases()} == {32, 8, 1} and {c.batch for c in gpu.cases()} == {1, 16}

"""The prefill and decode passes in a worker: their samples, the cache or state's
size, the bytes a step must move; a refusal is a skip with the reason; a custom
layer that claims to decode is checked against its forward before it is timed."""

from __future__ import annotations

import textwrap
from dataclasses import replace

import pytest

from attnbench.bench.records import finished_record
from attnbench.bench.worker.measure import run_case
from attnbench.bench.worker.process import run_unit_in_process
from attnbench.model import MIB
from attnbench.suite.load import parse


def serving_cases(variants: str, kv_heads: str = "[2]", steps: int = 4) -> list:
    text = f"""\
        name: serve
        defaults: {{head_dim: 8, causal: true, passes: [prefill, decode], decode_steps: {steps}}}
        grid: {{seq_lens: [32], heads: [4], kv_heads: {kv_heads}}}
        variants: {variants}
        timing: {{warmup: 1, max_reps: 3, min_reps: 2, min_time_s: 0.001}}
        """
    return parse(textwrap.dedent(text)).cases()


def test_prefill_and_decode_report_samples_the_cache_and_the_bytes_of_a_step() -> None:
    outcomes = run_unit_in_process(serving_cases("[sdpa, linear]"))
    by_label = {o.case.label: finished_record(o) for o in outcomes}
    sdpa, linear = by_label["sdpa"], by_label["linear"]
    for record in (sdpa, linear):
        assert record["status"] == "ok"
        prefill, decode = record["passes"]
        assert prefill["pass"] == "prefill" and decode["pass"] == "decode"
        assert len(decode["samples_ms"]) >= 2 and prefill["flops"] and decode["flops"] is None
    # A KV cache of 32 tokens, 2 key/value heads of 8, float32: keys and values.
    assert sdpa["passes"][1]["cache_mib"] == pytest.approx(2 * 32 * 2 * 8 * 4 / MIB)
    weights = (32 * (32 + 2 * 2 * 8) + 32 * 32 + 32) * 4  # q/k/v projection, output projection and its bias
    assert sdpa["passes"][1]["step_bytes"] == 2 * 32 * 2 * 8 * 4 + weights + 2 * 32 * 4
    # linear attention's state: per key/value head an 8 x (8 + 1) matrix, read and written.
    state = 2 * 8 * 9 * 4
    assert linear["passes"][1]["cache_mib"] == pytest.approx(state / MIB)
    assert linear["passes"][1]["step_bytes"] == 2 * state + weights + 2 * 32 * 4


def test_a_layer_that_cannot_decode_is_skipped_with_its_reason() -> None:
    case = replace(serving_cases("[sdpa]", kv_heads="[4]")[0], variant="fastformer", label="fastformer",
                   causal=False)
    messages: list = []
    run_case(case, messages.append)
    results = [m for m in messages if getattr(m, "pass_name", None)]
    assert {r.status for r in results} == {"skipped"}
    assert all("not causal" in r.error for r in results)


CUSTOM = '''
import torch
from torch import nn

from attnbench.variants.decoding import DecodeState


class Cumulative(nn.Module):
    """A causal running mean: decodes from a state of its sum."""

    decode_refusal = None

    def __init__(self, dim, heads, seq_len, causal=False, wrong=False):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.wrong = wrong

    def forward(self, x):
        h = self.proj(x)
        return h.cumsum(1) / torch.arange(1, x.shape[1] + 1, dtype=x.dtype, device=x.device)[:, None]

    def prefill(self, x, capacity):
        h = self.proj(x)
        return self(x), DecodeState(length=x.shape[1], recurrent=(h.sum(1, keepdim=True),))

    def step(self, x, state):
        total = state.recurrent[0] + self.proj(x) * (1.01 if self.wrong else 1.0)
        return total / (state.length + 1), DecodeState(length=state.length + 1, recurrent=(total,))
'''


@pytest.mark.parametrize("wrong", [False, True])
def test_a_custom_layer_that_claims_to_decode_is_checked_first(tmp_path, monkeypatch, wrong: bool) -> None:
    from attnbench.variants import registry

    before = dict(registry.registered())
    (tmp_path / "serving_layer.py").write_text(CUSTOM)
    monkeypatch.syspath_prepend(str(tmp_path))
    variants = f"[{{name: 'serving_layer:Cumulative', label: mine, params: {{wrong: {str(wrong).lower()}}}}}]"
    case = serving_cases(variants, kv_heads="[4]")[0]
    messages: list = []
    try:
        run_case(case, messages.append)
    finally:
        registry.restore(before)  # the import path registered itself: other tests list the registry
    if wrong:
        failure = messages[0]
        assert failure.status == "error" and "differ from its causal forward" in failure.error
    else:
        results = [m for m in messages if getattr(m, "pass_name", None)]
        assert [r.status for r in results] == ["ok", "ok"]

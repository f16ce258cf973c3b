"""Serving: every variant that says it decodes is checked against its own causal
forward, over the registry, so that a mechanism registered later is checked the
moment it declares ``decode_refusal = None``.

* a prefill of N tokens and T steps give the causal forward's last T rows over
  N + T tokens (float64, ≤ 1e-10), and so does a prefill of one token and steps;
* with kv_heads < heads the layer equals the same layer with each key/value head
  repeated (its projection's rows repeated): grouped-query attention's meaning;
* the state does not grow for a recurrent state, grows by a row for a cache, and
  halves when kv_heads halves;
* every other variant refuses in one line, and a planted wrong state update fails.
"""

from __future__ import annotations

import pytest
import torch

from attnbench.variants import build, variant_names
from attnbench.variants.decoding import DecodeState, expand_kv
from attnbench.variants.layer import ProjectedAttention
from attnbench.variants.registry import registered

DIM, HEADS, N, STEPS = 32, 4, 24, 6
# Small settings so that each mechanism's pattern shows at N = 24.
SMALL = {"local": {"window": 5}, "flex_local": {"window": 5}, "strided": {"stride": 5},
         "longformer": {"window": 8, "global_tokens": 2}, "linear": {"chunk": 4}, "performer": {"chunk": 4},
         "rfa": {"chunk": 4}, "lightconv": {"kernel_size": 5}, "dynamicconv": {"kernel_size": 5}}
EXTRA = [("rfa", {"chunk": 4, "gate": True}), ("lightconv", {"kernel_size": 1}),
         ("longformer", {"window": 64, "global_tokens": 3}), ("strided", {"stride": 1})]


def built_in() -> list[str]:
    return [n for n in variant_names() if registered()[n].info.origin == "built-in"]


def layer_of(name: str, params: dict | None = None, kv_heads: int | None = None,
             dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    torch.manual_seed(0)
    params = SMALL.get(name, {}) if params is None else params
    return build(name, dim=DIM, heads=HEADS, seq_len=N + STEPS, causal=True, kv_heads=kv_heads,
                 **params).to(dtype)


def decodes(name: str) -> bool:
    entry = registered()[name]
    return entry.info.causal and getattr(layer_of(name), "decode_refusal", "x") is None


DECODING = [n for n in built_in() if decodes(n)]
REFUSING = [n for n in built_in() if n not in DECODING]
CASES = [(n, SMALL.get(n, {})) for n in DECODING] + EXTRA


def decode(layer: torch.nn.Module, x: torch.Tensor, prompt: int) -> tuple[torch.Tensor, DecodeState]:
    """The outputs of a prefill of ``prompt`` tokens then one step per remaining token."""
    with torch.no_grad():
        out, state = layer.prefill(x[:, :prompt], capacity=x.shape[1])
        outs = [out]
        for t in range(prompt, x.shape[1]):
            y, state = layer.step(x[:, t:t + 1], state)
            assert y.shape == (x.shape[0], 1, x.shape[2])
            outs.append(y)
    return torch.cat(outs, dim=1), state


def test_the_serving_mechanisms_decode() -> None:
    assert {"softmax", "sdpa", "local", "strided", "longformer", "linear", "performer", "rfa", "aft", "lightconv",
            "dynamicconv"} <= set(DECODING)


@pytest.mark.parametrize(("name", "params"), CASES, ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("prompt", [N, 1])
def test_prefill_and_steps_equal_the_causal_forward(name: str, params: dict, prompt: int) -> None:
    layer = layer_of(name, params)
    x = torch.randn(2, N + STEPS, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = layer(x)
    got, state = decode(layer, x, prompt)
    assert state.length == N + STEPS
    torch.testing.assert_close(got, full, rtol=0, atol=1e-10)


@pytest.mark.parametrize(("name", "params"), CASES, ids=lambda v: v if isinstance(v, str) else "")
def test_the_prefill_state_starts_again(name: str, params: dict) -> None:
    """A decode pass restarts its steps from one prefill's state: steps from its fork
    must not change what that state holds (a cache's live rows, a recurrent tensor)."""
    layer = layer_of(name, params)
    x = torch.randn(1, N + 2, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, start = layer.prefill(x[:, :N], capacity=N + 2)
        first, _ = layer.step(x[:, N:N + 1], start.fork())
        layer.step(x[:, N + 1:N + 2], layer.step(x[:, N:N + 1], start.fork())[1])
        again, _ = layer.step(x[:, N:N + 1], start.fork())
    torch.testing.assert_close(again, first, rtol=0, atol=0)


def _repeated_heads(layer: ProjectedAttention, name: str) -> ProjectedAttention:
    """The same layer with kv_heads = heads, its key/value projection rows repeated per group."""
    full = layer_of(name, kv_heads=HEADS)
    d, groups = DIM // HEADS, HEADS // layer.kv_heads
    q, k, v = layer.qkv.weight.split([DIM, layer.kv_heads * d, layer.kv_heads * d])

    def repeat(w: torch.Tensor) -> torch.Tensor:
        return w.view(layer.kv_heads, 1, d, DIM).expand(-1, groups, -1, -1).reshape(HEADS * d, DIM)

    with torch.no_grad():
        full.load_state_dict({**layer.state_dict(), "qkv.weight": torch.cat([q, repeat(k), repeat(v)])})
    return full


@pytest.mark.parametrize("name", [n for n in DECODING if layer_of(n).kv_heads_refusal is None])
@pytest.mark.parametrize("kv_heads", [2, 1])
def test_kv_heads_mean_repeated_key_value_heads(name: str, kv_heads: int) -> None:
    grouped = layer_of(name, kv_heads=kv_heads)
    reference = _repeated_heads(grouped, name)
    x = torch.randn(2, N + STEPS, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(grouped(x), expected, rtol=0, atol=1e-10)
    got, state = decode(grouped, x, N)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
    _, full_state = decode(reference, x, N)
    assert state.nbytes * (HEADS // kv_heads) == full_state.nbytes  # kv_heads halved: the cache halves


@pytest.mark.parametrize(("name", "params"), CASES, ids=lambda v: v if isinstance(v, str) else "")
def test_a_recurrent_state_keeps_its_size_and_a_cache_grows_by_a_row(name: str, params: dict) -> None:
    layer = layer_of(name, params)
    x = torch.randn(1, N + STEPS, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    _, short = decode(layer, x[:, :N + 1], N)
    _, long = decode(layer, x, N)
    if short.cache and long.rows > short.rows:  # a growing cache: one row per token
        per_row = short.cache_bytes // short.rows
        assert long.cache_bytes - short.cache_bytes == per_row * (long.rows - short.rows)
    else:  # a ring that is full, or a recurrent state
        assert long.nbytes == short.nbytes


def test_the_kv_cache_is_two_rows_of_kv_heads_per_token() -> None:
    layer = layer_of("sdpa", kv_heads=2)
    x = torch.randn(3, N, DIM, dtype=torch.float64)
    _, state = decode(layer, x, N)
    assert state.nbytes == 2 * 3 * 2 * N * (DIM // HEADS) * 8


@pytest.mark.parametrize("name", REFUSING)
def test_the_others_refuse_in_one_line(name: str) -> None:
    torch.manual_seed(0)
    params = {"window": 8} if name == "flex_longformer" else {}
    causal = registered()[name].info.causal
    layer = build(name, dim=DIM, heads=HEADS, seq_len=N, causal=causal, **params)
    reason = layer.decode_refusal
    assert isinstance(reason, str) and reason and "\n" not in reason
    with pytest.raises((NotImplementedError, ValueError)):
        layer.prefill(torch.randn(1, N, DIM), capacity=N)


def test_kv_heads_are_refused_with_the_reason_where_they_mean_nothing() -> None:
    with pytest.raises(ValueError, match="kv_heads 2 < heads 4"):
        build("reformer", dim=DIM, heads=HEADS, seq_len=N, causal=True, kv_heads=2)
    with pytest.raises(ValueError, match="kv_heads 2 < heads 4"):
        build("aft", dim=DIM, heads=HEADS, seq_len=N, causal=True, kv_heads=2)
    with pytest.raises(ValueError, match="must divide heads"):
        build("sdpa", dim=DIM, heads=HEADS, seq_len=N, causal=True, kv_heads=3)


def test_a_planted_wrong_state_update_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check is not vacuous: a linear-attention step that adds 0.999 of the new
    key's features to its state is caught."""
    from attnbench.variants import kernel

    real = kernel.kernel_step

    def forgetful(phi_q, phi_k, v, state, eps, decay=1.0):  # noqa: ANN001, ANN202
        return real(phi_q, phi_k * 0.999, v, state, eps, decay)

    monkeypatch.setattr(kernel, "kernel_step", forgetful)
    layer = layer_of("linear")
    x = torch.randn(1, N + STEPS, DIM, dtype=torch.float64)
    with torch.no_grad():
        full = layer(x)
    got, _ = decode(layer, x, N)
    assert not torch.allclose(got, full, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", DECODING)
def test_half_precision_decodes_within_its_tolerance(name: str) -> None:
    layer = layer_of(name, dtype=torch.bfloat16)
    x = torch.randn(1, N + STEPS, DIM, generator=torch.Generator().manual_seed(5)).to(torch.bfloat16)
    with torch.no_grad():
        full = layer(x).float()
    got, _ = decode(layer, x, N)
    torch.testing.assert_close(got.float(), full, rtol=0.05, atol=0.05)


def test_expand_kv_repeats_each_head_for_its_group() -> None:
    t = torch.arange(2.0).view(1, 2, 1, 1)
    assert expand_kv(t, 4).flatten().tolist() == [0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize(("name", "params"), CASES, ids=lambda v: v if isinstance(v, str) else "")
def test_a_state_alone_is_the_state_of_the_full_prefill(name: str, params: dict) -> None:
    """A decode pass builds its state with ``output=False`` (no forward output): the
    state must be the same, and so must the steps from it."""
    layer = layer_of(name, params)
    x = torch.randn(2, N + 1, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        out, full = layer.prefill(x[:, :N], capacity=N + 1)
        none, alone = layer.prefill(x[:, :N], capacity=N + 1, output=False)
        assert out is not None and none is None and alone.nbytes == full.nbytes
        torch.testing.assert_close(layer.step(x[:, N:], alone)[0], layer.step(x[:, N:], full)[0], rtol=0, atol=1e-12)


def test_strided_decodes_only_with_a_fixed_stride() -> None:
    layer = build("strided", dim=DIM, heads=HEADS, seq_len=N, causal=True)
    assert "set stride" in layer.decode_refusal


def test_a_sparse_step_reads_part_of_its_cache() -> None:
    layer = layer_of("strided", {"stride": 5})
    x = torch.randn(1, N + STEPS, DIM, dtype=torch.float64)
    _, state = decode(layer, x, N)
    assert state.step_traffic_bytes < state.cache_bytes / 2  # (N + T) rows kept, a few read


def test_longformer_keeps_only_its_globals_and_its_band() -> None:
    layer = layer_of("longformer", {"window": 8, "global_tokens": 2})  # 2 + 4 + 1 rows
    x = torch.randn(1, N + STEPS, DIM, dtype=torch.float64)
    _, short = decode(layer, x[:, :12], 10)
    _, long = decode(layer, x, N)
    assert short.rows == long.rows == 7 and short.nbytes == long.nbytes
    assert long.step_traffic_bytes == long.cache_bytes  # a step reads every row it keeps
    _, early = decode(layer, x[:, :4], 1)  # before the ring fills: a row per token
    assert early.rows == 4

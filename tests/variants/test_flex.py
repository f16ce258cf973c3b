"""FlexAttention versions of the sparse patterns equal the eager ones."""

import pytest
import torch

import attnbench
from attnbench.variants import flex

CASES = [
    ("local", {"window": 16}, False), ("local", {"window": 16}, True),
    ("strided", {}, False), ("strided", {"stride": 12}, True),
    ("longformer", {"window": 32, "global_tokens": 2}, False),
    ("longformer", {"window": 32, "global_tokens": 2}, True),
    ("bigbird", {"block": 16, "random_blocks": 1, "seed": 3}, False),
]


@pytest.mark.parametrize("name,params,causal", CASES)
def test_flex_pattern_equals_the_eager_variant(name, params, causal):
    # N = 300 is not a multiple of FlexAttention's 128-wide tiles nor of the blocks.
    eager = attnbench.build(name, dim=32, heads=4, seq_len=300, causal=causal, **params).core
    flexed = attnbench.build(f"flex_{name}", dim=32, heads=4, seq_len=300, causal=causal, **params).core
    q, k, v = torch.randn(3, 2, 4, 300, 8, dtype=torch.float64).unbind(0)
    torch.testing.assert_close(flexed(q, k, v), eager(q, k, v))


def test_flex_variants_share_their_eager_parameters():
    for name in ("local", "strided", "longformer", "bigbird"):
        assert attnbench.variant_info(f"flex_{name}").defaults == attnbench.variant_info(name).defaults
        assert attnbench.variant_info(f"flex_{name}").causal == attnbench.variant_info(name).causal


@pytest.mark.slow
def test_compiled_flex_forward_on_cpu_equals_eager(monkeypatch):
    monkeypatch.delenv("ATTNBENCH_FLEX_EAGER", raising=False)
    flex._compiled_flex.cache_clear()
    try:
        torch.manual_seed(0)
        eager = attnbench.build("local", dim=32, heads=2, seq_len=256, window=32)
        compiled = attnbench.build("flex_local", dim=32, heads=2, seq_len=256, window=32)
        compiled.load_state_dict(eager.state_dict())
        x = torch.randn(1, 256, 32)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), eager(x), rtol=1e-4, atol=1e-5)
        with pytest.raises(NotImplementedError, match="no backward on CPU"):
            compiled(x.requires_grad_())
    finally:
        flex._compiled_flex.cache_clear()


def test_flex_block_mask_skips_tiles_outside_the_band():
    core = attnbench.build("flex_local", dim=32, heads=2, seq_len=2048, window=64).core
    mask = core.block_mask(2048, torch.device("cpu"))
    # 16 query tiles of 128; each sees at most 3 key tiles of the 16.
    assert mask.sparsity() > 75.0


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("name", ["local", "strided", "longformer", "bigbird"])
def test_compiled_flex_on_cuda_equals_eager_forward_and_backward(name, monkeypatch):
    from attnbench.variants import flex

    monkeypatch.delenv("ATTNBENCH_FLEX_EAGER", raising=False)
    flex._compiled_flex.cache_clear()
    params = {"bigbird": {"block": 64, "random_blocks": 2}}.get(name, {"window": 128} if name != "strided" else {})
    eager = attnbench.build(name, dim=256, heads=4, seq_len=2048, **params).cuda()
    flexed = attnbench.build(f"flex_{name}", dim=256, heads=4, seq_len=2048, **params).cuda()
    flexed.load_state_dict(eager.state_dict())
    x = torch.randn(2, 2048, 256, device="cuda", requires_grad=True)
    y_eager, y_flex = eager(x), flexed(x)
    torch.testing.assert_close(y_flex, y_eager, rtol=2e-3, atol=2e-3)
    g = torch.randn_like(y_eager)
    (ge,) = torch.autograd.grad(y_eager, x, g)
    (gf,) = torch.autograd.grad(y_flex, x, g)
    torch.testing.assert_close(gf, ge, rtol=2e-3, atol=2e-3)

"""Every variant in float16 and bfloat16 against itself in float64 (small N)."""

import copy

import pytest
import torch

import attnbench
from attnbench.variants.registry import _VARIANTS

BUILTIN = [n for n in attnbench.variant_names() if _VARIANTS[n].info.origin == "built-in"]
# Discrete choices (which cluster a token joins) legitimately flip under
# rounding; with one cluster routing's arithmetic path is checked alone.
PARAMS = {"routing": {"clusters": 1}}


def _cases():
    for name in BUILTIN:
        for causal in (False, True):
            if causal and not attnbench.variant_info(name).causal:
                continue
            for dtype in (torch.float16, torch.bfloat16):
                yield pytest.param(name, causal, dtype, id=f"{name}-{'causal' if causal else 'full'}-{dtype}")


@pytest.mark.parametrize("name,causal,dtype", list(_cases()))
def test_half_precision_output_is_close_to_float64(name, causal, dtype):
    torch.manual_seed(0)
    layer = attnbench.build(name, dim=64, heads=4, seq_len=128, causal=causal, **PARAMS.get(name, {}))
    layer = layer.double().eval()
    x = torch.randn(2, 128, 64, dtype=torch.float64)
    with torch.no_grad():
        reference = layer(x)
        out = copy.deepcopy(layer).to(dtype)(x.to(dtype))
    assert out.dtype == dtype
    rel = ((out.double() - reference).norm() / reference.norm()).item()
    assert rel < 1e-2, f"{name} in {dtype}: relative error {rel:.2e}"

"""Every variant in float16 and bfloat16 against itself in float64 (small N)."""

import copy

import pytest
import torch

import attnbench
from attnbench.variants.registry import registered

BUILTIN = [n for n in attnbench.variant_names() if registered()[n].info.origin == "built-in"]
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


def _autocast_cases():
    for name in BUILTIN:
        if name.startswith("flex_"):
            continue  # FlexAttention has no backward on CPU
        for causal in (False, True):
            if not causal or attnbench.variant_info(name).causal:
                yield pytest.param(name, causal, id=f"{name}-{'causal' if causal else 'full'}")


@pytest.mark.parametrize("name,causal", list(_autocast_cases()))
def test_training_step_under_autocast_is_close_to_float32(name, causal):
    # Mixed precision (torch.autocast, here CPU bfloat16): products inside custom autograd
    # Functions must not be cast behind the variant's back (mixed dtypes in backward).
    torch.manual_seed(0)
    layer = attnbench.build(name, dim=64, heads=4, seq_len=128, causal=causal, **PARAMS.get(name, {}))
    x = torch.randn(2, 128, 64, requires_grad=True)
    reference = layer(x)
    reference.sum().backward()
    reference_grad, x.grad = x.grad, None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    out.float().sum().backward()
    rel = ((out.float() - reference).norm() / reference.norm()).item()
    grad_rel = ((x.grad - reference_grad).norm() / reference_grad.norm()).item()
    assert rel < 5e-2 and grad_rel < 5e-2, f"{name}: relative error {rel:.2e}, gradient {grad_rel:.2e}"

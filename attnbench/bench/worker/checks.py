"""The checks a variant from outside attnbench passes before it is timed.

Before any timing, the measurement checks every variant that is not built in
(nor a test fixture, origin "test") with :func:`check_layer`: one tensor out,
of the input's shape, dtype and device, and, for a causal case, outputs at
earlier positions unchanged when the last token changes. A failure is an
``error`` record for that case whose message says what to fix; the other
variants still run.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from attnbench.model import Case
from attnbench.variants.factory import display_name

# Variants not checked before timing: attnbench's own, and the test suite's
# fixtures (which fail on purpose inside the timed passes).
TRUSTED_ORIGINS = ("built-in", "test")

# Largest change (relative to the outputs' magnitude) at positions before the
# perturbed last token that still counts as "unchanged", per dtype.
CAUSAL_RTOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}


class LayerCheckError(ValueError):
    """A custom layer does not behave as attnbench needs; the message says the fix."""


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _check_output(shown: str, y: Any, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        if isinstance(y, tuple | list) and y and isinstance(y[0], torch.Tensor):
            raise LayerCheckError(f"{shown} returned a {type(y).__name__} of {len(y)}, expected one tensor: "
                                  "the layer must return only the output (batch, seq_len, dim), e.g. "
                                  "`return out`, not `return out, weights`")
        raise LayerCheckError(f"{shown} returned {type(y).__name__}, expected a tensor of shape "
                              f"{tuple(x.shape)}: the layer must map (batch, seq_len, dim) to the same shape")
    if tuple(y.shape) != tuple(x.shape):
        raise LayerCheckError(f"{shown} returned shape {tuple(y.shape)}, expected {tuple(x.shape)}: "
                              "the layer must map (batch, seq_len, dim) to the same shape")
    if y.dtype != x.dtype:
        raise LayerCheckError(f"{shown} returned dtype {_dtype_name(y.dtype)}, expected {_dtype_name(x.dtype)}: "
                              "compute in the input's dtype (the layer is cast with .to(dtype); create tensors "
                              "with dtype=x.dtype and register constant tensors as buffers)")
    if y.device != x.device:
        raise LayerCheckError(f"{shown} returned a tensor on {y.device}, expected {x.device}: create tensors "
                              "on x.device and register constant tensors as buffers so that .to(device) "
                              "moves them")
    return y


def check_layer(case: Case, layer: nn.Module, x: torch.Tensor) -> None:
    """Raise LayerCheckError unless ``layer(x)`` is one tensor of x's shape,
    dtype and device and, for a causal case, the outputs before the last
    position do not move when the last token does. Runs in eval mode, without
    gradients, with the same random seed for both forwards (layers that draw
    random projections per call compare like with like)."""
    shown = display_name(case.variant)
    was_training = layer.training
    layer.eval()
    try:
        with torch.no_grad():
            torch.manual_seed(case.seed)
            y = _check_output(shown, layer(x), x)
            if not case.causal or x.shape[1] < 2:
                return
            generator = torch.Generator(device="cpu").manual_seed(case.seed + 1)
            x2 = x.clone()
            # A large, fresh last token: any attention to it moves the earlier outputs visibly.
            x2[:, -1] = 10 * torch.randn(x.shape[0], x.shape[2], generator=generator).to(x.device, x.dtype)
            torch.manual_seed(case.seed)
            y2 = _check_output(shown, layer(x2), x2)
            before, after = y[:, :-1].double(), y2[:, :-1].double()
            change = (after - before).abs().nan_to_num(nan=float("inf")).max().item()
            scale = max(before.abs().nan_to_num(nan=0.0, posinf=0.0).max().item(), 1e-6)
            if change > CAUSAL_RTOL.get(x.dtype, 1e-4) * scale:
                raise LayerCheckError(
                    f"{shown} ignores causal: with causal=True, changing the last token changed the outputs at "
                    f"earlier positions (by up to {change / scale:.2g} of their magnitude). Mask the scores so "
                    "that position i attends only to positions j <= i when causal is set, or declare that the "
                    "layer has no causal mode (supports_causal = False, or causal=False in @attnbench.register)")
    finally:
        layer.train(was_training)


#: A custom layer's decode check: a prompt of this many tokens, then this many steps.
CHECK_PROMPT, CHECK_STEPS = 12, 4
DECODE_ATOL = 1e-8  # float64: the incremental form equals the causal forward


def check_decode(case: Case, layer: nn.Module) -> None:
    """Raise LayerCheckError unless a layer that claims to decode (``decode_refusal``
    None, ``prefill`` and ``step`` methods) gives, in float64 on the CPU, the causal
    forward's outputs: a prefill of CHECK_PROMPT tokens and CHECK_STEPS steps against
    one forward over all of them. Runs on a float64 copy, so the layer itself is
    untouched."""
    import copy

    shown = display_name(case.variant)
    probe = copy.deepcopy(layer).to(device="cpu", dtype=torch.float64).eval()
    n = CHECK_PROMPT + CHECK_STEPS
    generator = torch.Generator(device="cpu").manual_seed(case.seed)
    x = torch.randn(1, n, case.dim, generator=generator, dtype=torch.float64)
    try:
        with torch.no_grad():
            full = probe(x)
            out, state = probe.prefill(x[:, :CHECK_PROMPT], n)
            outs = [out]
            for t in range(CHECK_PROMPT, n):
                y, state = probe.step(x[:, t:t + 1], state)
                outs.append(y)
            got = torch.cat(outs, dim=1)
    except Exception as exc:  # noqa: BLE001 - the layer's own failure, said in one line
        raise LayerCheckError(f"{shown} claims to decode (decode_refusal = None) but its prefill/step failed on "
                              f"{n} tokens in float64: {type(exc).__name__}: {exc}") from None
    if got.shape != full.shape:
        raise LayerCheckError(f"{shown}'s prefill and steps returned {tuple(got.shape)} for {n} tokens, "
                              f"expected {tuple(full.shape)}")
    error = (got - full).abs().nan_to_num(nan=float("inf")).max().item()
    if error > DECODE_ATOL * max(full.abs().max().item(), 1.0):
        raise LayerCheckError(
            f"{shown}'s prefill of {CHECK_PROMPT} tokens and {CHECK_STEPS} steps differ from its causal forward by "
            f"up to {error:.3g} (float64): the state a step carries does not reproduce the forward. Fix prefill/step, "
            "or declare that it does not decode (decode_refusal = 'the reason')")

"""FLOPs of one forward of a case's layer: declared (the layer's ``flops``
method or the function given to ``register``) or counted by torch."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from attnbench.bench.worker.checks import LayerCheckError
from attnbench.model import Case
from attnbench.variants.factory import resolve

#: A pass's FLOPs in forwards: backward costs about two forwards, a training step three.
# A pass's FLOPs in forwards; decode has no figure (a step's work is not a forward's).
PASS_FLOPS_FACTOR = {"forward": 1, "backward": 2, "forward_backward": 3, "prefill": 1}


def _call_flops(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """Call a registered flops function with the arguments it names."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(**kwargs)
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return fn(**kwargs)


def count_flops(layer: nn.Module, x: torch.Tensor) -> int | None:
    """FLOPs of one forward as torch.utils.flop_counter counts them (matrix
    products and attention kernels only), or None when it counts nothing or fails."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            layer(x)
        total = int(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - counting is best effort; the passes report real failures
        return None
    return total if total > 0 else None


def forward_flops(case: Case, layer: nn.Module, x: torch.Tensor) -> tuple[int | None, str | None]:
    """(FLOPs of one forward, source): the layer's ``flops(batch, seq_len)``, else
    the function given to ``register(flops=...)`` ("analytic"); else
    torch.utils.flop_counter's count of one untimed forward ("flop_counter");
    else (None, None): the CSV leaves flops empty rather than write 0."""
    entry = resolve(case.variant)
    shown = getattr(entry.target, "__name__", case.variant)
    method = getattr(layer, "flops", None)
    if callable(method):
        try:
            return int(method(case.batch, case.seq_len)), "analytic"
        except NotImplementedError:
            pass
        except Exception as exc:  # noqa: BLE001
            raise LayerCheckError(f"{shown}.flops({case.batch}, {case.seq_len}) raised {type(exc).__name__}: "
                                  f"{exc}. flops(batch, seq_len) must return the FLOPs of one forward as an "
                                  "int") from None
    if entry.flops is not None:
        params = {**entry.info.defaults, **case.params}
        try:
            value = _call_flops(entry.flops, batch=case.batch, seq_len=case.seq_len, dim=case.dim,
                                heads=case.heads, causal=case.causal, **params)
            return int(value), "analytic"
        except Exception as exc:  # noqa: BLE001
            raise LayerCheckError(f"the flops function of {case.variant!r} raised {type(exc).__name__}: {exc}. "
                                  "It must be flops(batch, seq_len, dim, heads, **params) -> int") from None
    counted = count_flops(layer, x)
    return (counted, "flop_counter") if counted is not None else (None, None)

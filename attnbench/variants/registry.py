"""The variant registry: one dict from name to entry, one factory.

A variant is registered with ``@register(name, family=..., paper=..., ...)``
on either an ``AttentionCore`` subclass (wrapped in ``ProjectedAttention``) or
a whole ``AttentionLayer`` subclass / factory. Its parameters and defaults are
read from the constructor's signature, so they are written once.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from attnbench.variants.layer import AttentionCore, ProjectedAttention, check_dims

# Arguments every variant receives; everything else is a variant parameter.
_LAYER_ARGS = ("dim", "heads", "seq_len", "causal")
_CORE_ARGS = ("heads", "head_dim", "seq_len", "causal")

FAMILIES = ("exact", "sparse", "clustered", "lowrank", "kernel", "synthesizer", "mixer",
            "fastformer", "aft", "conv", "custom")


@dataclass(frozen=True)
class VariantInfo:
    """What a variant is: shown by ``attnbench list`` and stored with results."""

    name: str
    family: str
    paper: str  # arXiv id, e.g. "2006.04768"
    complexity: str  # e.g. "O(N·k·d)"
    causal: bool  # supports causal attention
    defaults: dict[str, Any] = field(default_factory=dict)
    origin: str = "built-in"  # built-in | plugin | import path | test
    description: str = ""


@dataclass(frozen=True)
class _Entry:
    info: VariantInfo
    target: Callable[..., nn.Module]  # the class or factory registered
    is_core: bool  # target builds an AttentionCore, wrapped in ProjectedAttention
    flops: Callable[..., int] | None = None  # analytic FLOPs of one forward, when the layer has no .flops


# name -> entry, in registration order.
_VARIANTS: dict[str, _Entry] = {}


def _signature_params(target: Callable[..., Any], fixed: tuple[str, ...]) -> dict[str, Any]:
    """Keyword parameters of ``target`` beyond the fixed layer/core arguments."""
    sig = inspect.signature(target)
    params: dict[str, Any] = {}
    for p in sig.parameters.values():
        if p.name == "self" or p.name in fixed:
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue  # **kwargs would swallow typos; variants should not use it
        params[p.name] = None if p.default is inspect.Parameter.empty else p.default
    return params


def register(name: str, *, family: str, paper: str = "", complexity: str = "",
             causal: bool = False, origin: str | None = None,
             description: str | None = None, flops: Callable[..., int] | None = None,
             replace: bool = False) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a variant under ``name``. Use as a class decorator.

    ``flops(batch, seq_len, dim, heads, **params) -> int`` (it may also take
    ``causal``; only the arguments it names are passed) gives the FLOPs of one
    forward pass; it is used when the built layer has no ``flops(batch, seq_len)``
    method. Without either, the run counts one forward with
    ``torch.utils.flop_counter`` (``flops_source`` = "flop_counter") or leaves
    flops empty. ``origin`` defaults to "built-in" for attnbench's own modules
    and "user" for everything else.
    """

    def decorator(target: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if not replace and name in _VARIANTS:
            raise ValueError(f"variant {name!r} is already registered "
                             f"(by {_VARIANTS[name].info.origin})")
        is_core = inspect.isclass(target) and issubclass(target, AttentionCore)
        fixed = _CORE_ARGS if is_core else _LAYER_ARGS
        doc = description if description is not None else (inspect.getdoc(target) or "")
        info = VariantInfo(name=name, family=family, paper=paper, complexity=complexity,
                           causal=causal, defaults=_signature_params(target, fixed),
                           origin=origin or _default_origin(target),
                           description=doc.split("\n\n")[0].replace("\n", " "))
        if flops is not None and not callable(flops):
            raise ValueError(f"variant {name!r}: flops must be a function "
                             "flops(batch, seq_len, dim, heads, **params) -> int")
        _VARIANTS[name] = _Entry(info=info, target=target, is_core=is_core, flops=flops)
        return target

    return decorator


def _default_origin(target: Callable[..., Any]) -> str:
    module = getattr(target, "__module__", "") or ""
    return "built-in" if module == "attnbench" or module.startswith("attnbench.") else "user"


def unregister(name: str) -> None:
    """Remove a variant (tests register throw-away ones)."""
    _VARIANTS.pop(name, None)


def did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def _entry(name: str) -> _Entry:
    from attnbench.variants import load_plugins

    if name not in _VARIANTS:
        load_plugins()
    if name not in _VARIANTS and ":" in name:
        from attnbench.variants.custom import register_import_path

        register_import_path(name)
    try:
        return _VARIANTS[name]
    except KeyError:
        names = sorted(_VARIANTS)
        raise ValueError(f"unknown variant {name!r}.{did_you_mean(name, names)} "
                         f"Known variants: {', '.join(names)}") from None


def variant_names() -> list[str]:
    """Every registered variant, in registration order."""
    from attnbench.variants import load_plugins

    load_plugins()
    return list(_VARIANTS)


def variant_info(name: str) -> VariantInfo:
    return _entry(name).info


def check_params(name: str, params: dict[str, Any]) -> None:
    """Raise ValueError for a parameter the variant does not take."""
    known = _entry(name).info.defaults
    for key in params:
        if key not in known:
            choices = ", ".join(known) or "none"
            raise ValueError(f"variant {name!r} has no parameter {key!r}."
                             f"{did_you_mean(key, list(known))} Its parameters: {choices}")


def build(name: str, dim: int = 512, heads: int = 8, seq_len: int = 1024,
          causal: bool = False, **params: Any) -> nn.Module:
    """Build the layer of variant ``name``: x (batch, seq_len, dim) -> same shape."""
    entry = _entry(name)
    check_params(name, params)
    if causal and not entry.info.causal:
        raise ValueError(f"variant {name!r} does not support causal attention")
    head_dim = check_dims(dim, heads, seq_len)
    if entry.is_core:
        core = entry.target(heads=heads, head_dim=head_dim, seq_len=seq_len, causal=causal, **params)
        return ProjectedAttention(core, dim=dim, heads=heads, seq_len=seq_len, causal=causal)
    return entry.target(dim=dim, heads=heads, seq_len=seq_len, causal=causal, **params)


def ceil_sqrt(n: int) -> int:
    """⌈√n⌉, the default stride / cluster count of several variants."""
    return math.isqrt(n - 1) + 1 if n > 0 else 0

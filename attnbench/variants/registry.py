"""The variant registry: one table from name to entry, and the decorator that fills it.

A variant is registered with ``@register(name, family=..., paper=..., ...)``
on either an ``AttentionCore`` subclass (wrapped in ``ProjectedAttention``) or
a whole ``AttentionLayer`` subclass / factory. Its parameters and defaults are
read from the constructor's signature, so they are written once.

The registry only stores and answers; it imports nothing of attnbench but the
base classes and the errors. Resolving a name that is not registered yet (a
plugin, an import path) and building a layer is ``attnbench.variants.factory``'s
job.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn

from attnbench.errors import VariantError
from attnbench.variants.layer import AttentionCore

# Arguments every variant receives; everything else is a variant parameter.
LAYER_ARGS = ("dim", "heads", "seq_len", "causal")
CORE_ARGS = ("heads", "head_dim", "seq_len", "causal")

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
class Entry:
    """A registered variant: what it is and how to build it."""

    info: VariantInfo
    target: Callable[..., nn.Module]  # the class or factory registered
    is_core: bool  # target builds an AttentionCore, wrapped in ProjectedAttention
    flops: Callable[..., int] | None = None  # analytic FLOPs of one forward, when the layer has no .flops

    @property
    def fixed_args(self) -> tuple[str, ...]:
        """The arguments attnbench passes the target besides the variant's parameters."""
        return CORE_ARGS if self.is_core else LAYER_ARGS


# name -> entry, in registration order.
_VARIANTS: dict[str, Entry] = {}


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


def is_core_class(target: Any) -> bool:
    """Whether ``target`` is an ``AttentionCore`` subclass (built as a core and wrapped)."""
    return inspect.isclass(target) and issubclass(target, AttentionCore)


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
            raise VariantError(f"variant {name!r} is already registered "
                               f"(by {_VARIANTS[name].info.origin})")
        is_core = is_core_class(target)
        fixed = CORE_ARGS if is_core else LAYER_ARGS
        doc = description if description is not None else (inspect.getdoc(target) or "")
        info = VariantInfo(name=name, family=family, paper=paper, complexity=complexity,
                           causal=causal, defaults=_signature_params(target, fixed),
                           origin=origin or _default_origin(target),
                           description=doc.split("\n\n")[0].replace("\n", " "))
        if flops is not None and not callable(flops):
            raise VariantError(f"variant {name!r}: flops must be a function "
                               "flops(batch, seq_len, dim, heads, **params) -> int")
        _VARIANTS[name] = Entry(info=info, target=target, is_core=is_core, flops=flops)
        return target

    return decorator


def _default_origin(target: Callable[..., Any]) -> str:
    module = getattr(target, "__module__", "") or ""
    return "built-in" if module == "attnbench" or module.startswith("attnbench.") else "user"


def unregister(name: str) -> None:
    """Remove a variant (tests register throw-away ones)."""
    _VARIANTS.pop(name, None)


def put(name: str, entry: Entry) -> Entry:
    """Store ``entry`` under ``name``, replacing any (the factory's aliases and origins)."""
    _VARIANTS[name] = entry
    return entry


def registered() -> Mapping[str, Entry]:
    """Every variant registered so far, in registration order: a live, read-only view
    (plugins and import paths appear once the factory has resolved them)."""
    return MappingProxyType(_VARIANTS)


def restore(entries: Mapping[str, Entry]) -> None:
    """Make the registry hold exactly ``entries`` (tests undo what they registered)."""
    _VARIANTS.clear()
    _VARIANTS.update(entries)


def ceil_sqrt(n: int) -> int:
    """⌈√n⌉, the default stride / cluster count of several variants."""
    return math.isqrt(n - 1) + 1 if n > 0 else 0

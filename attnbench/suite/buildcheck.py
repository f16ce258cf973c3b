"""Each variant of a suite built once on the ``meta`` device when the suite is
loaded: the constructors' own checks run with their own messages, before any
case does, and the passes a variant cannot run are found (a mechanism with no
incremental form asked to decode, key/value heads where it has none to share).
``meta`` tensors have shapes and no storage, so this costs no memory and no
compute."""

from __future__ import annotations

from typing import Any

from attnbench.errors import SuiteError, SuiteErrors
from attnbench.model import SERVING_PASSES


def check_builds(suite: Any) -> None:
    """Build each variant of ``suite`` (a ``Suite``) once on the ``meta`` device, so
    that its constructor's own checks (a window larger than N, a parameter out
    of range) fail now, at the variant's line, and not in every case at run time.
    Fill ``suite.refusals`` with the passes a variant refuses and why; when every
    pass of every case is refused, nothing could run: a SuiteError that says why."""
    import torch

    from attnbench.variants import build

    errors = []
    seen = set()
    planned = suite.planned()
    for case in planned:
        key = (case.label, case.heads, case.kv_heads, case.dim, case.causal)
        if key in seen:
            continue
        seen.add(key)
        spec = next(s for s in suite.variants if s.label == case.label)
        try:
            with torch.device("meta"):
                layer = build(case.variant, dim=case.dim, heads=case.heads, seq_len=case.seq_len,
                              causal=case.causal, **case.params)
                refused = _refusals(case, layer)
                if case.kv_heads != case.heads and not refused:  # its own checks of kv_heads
                    build(case.variant, dim=case.dim, heads=case.heads, seq_len=case.seq_len, causal=case.causal,
                          kv_heads=case.kv_heads, **case.params)
        except (ValueError, TypeError) as exc:  # VariantError is a ValueError
            index = suite.variants.index(spec)
            kv = f", kv_heads={case.kv_heads}" if case.kv_heads != case.heads else ""
            errors.append(SuiteError(f"variant {case.label!r} cannot be built with heads={case.heads}{kv}, "
                                     f"dim={case.dim}, N={case.seq_len}: {exc}", file=suite.path,
                                     line=spec.line or None, key=f"variants[{index}]"))
            continue
        except Exception:  # noqa: BLE001,S112 - a constructor that cannot run on meta is checked at run time
            continue
        if refused:
            suite.refusals[(case.label, case.heads, case.kv_heads)] = refused
    if errors:
        raise SuiteErrors(errors) if len(errors) > 1 else errors[0]
    if planned and not suite.cases():
        raise SuiteError("nothing in this suite can run: " + "; ".join(suite.refused()), file=suite.path)


def _refusals(case: Any, layer: Any) -> dict[str, str]:
    """{pass: reason} of the passes of ``case`` that ``layer`` cannot run."""
    from attnbench.variants.decoding import refusal_of

    if case.kv_heads != case.heads:
        reason = getattr(layer, "kv_heads_refusal", None)
        if reason:
            return dict.fromkeys(case.passes, f"kv_heads: this mechanism {reason}")
    serving = [p for p in case.passes if p in SERVING_PASSES]
    reason = refusal_of(layer) if serving else None
    return dict.fromkeys(serving, reason) if reason else {}

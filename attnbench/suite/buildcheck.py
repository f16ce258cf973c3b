"""Each variant of a suite built once on the ``meta`` device when the suite is
loaded: the constructors' own checks run with their own messages, before any
case does. ``meta`` tensors have shapes and no storage, so this costs no memory
and no compute."""

from __future__ import annotations

from typing import Any

from attnbench.errors import SuiteError, SuiteErrors


def check_builds(suite: Any) -> None:
    """Build each variant of ``suite`` (a ``Suite``) once on the ``meta`` device, so
    that its constructor's own checks (a window larger than N, a parameter out
    of range) fail now, at the variant's line, and not in every case at run time."""
    import torch

    from attnbench.variants import build

    errors = []
    seen = set()
    for case in suite.cases():
        key = (case.label, case.heads, case.dim, case.causal)
        if key in seen:
            continue
        seen.add(key)
        spec = next(s for s in suite.variants if s.label == case.label)
        try:
            with torch.device("meta"):
                build(case.variant, dim=case.dim, heads=case.heads, seq_len=case.seq_len, causal=case.causal,
                      **case.params)
        except (ValueError, TypeError) as exc:  # VariantError is a ValueError
            index = suite.variants.index(spec)
            errors.append(SuiteError(f"variant {case.label!r} cannot be built with heads={case.heads}, "
                                     f"dim={case.dim}, N={case.seq_len}: {exc}", file=suite.path,
                                     line=spec.line or None, key=f"variants[{index}]"))
        except Exception:  # noqa: BLE001,S112 - a constructor that cannot run on meta is checked at run time
            continue
    if errors:
        raise SuiteErrors(errors) if len(errors) > 1 else errors[0]

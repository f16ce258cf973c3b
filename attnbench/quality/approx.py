"""Approximation error: how far a mechanism's output is from exact softmax attention.

For a core that declares ``approximates_softmax`` (exact, sparse, clustered,
low-rank and kernel cores), on the same q, k, v and in float64:

* ``output_error`` = ‖core(q, k, v) − softmax(L) v‖_F / ‖softmax(L) v‖_F, with
  L = ``core.exact_logits(q, k)`` (q kᵀ/√d; for Reformer the full shared-QK
  attention it approximates), causally masked when the core is causal.
* where the core declares ``linear_in_values`` (out = A(q, k)·v), its implied
  attention rows A are read back by passing one-hot values, head_dim columns at
  a time (N/head_dim calls), and compared with the exact rows P = softmax(L):
  ``row_error`` = ‖A − P‖_F / ‖P‖_F and ``row_tv``, the mean over rows of the
  total variation ½‖a_i − p_i‖₁ (for a sparse pattern: the exact mass that
  falls outside it). Rows are read up to N = ``ROWS_MAX_N`` (A is N×N per head).
  A core without the property gets the output error only, ``rows`` saying so.

A layer without a core, or whose core does not declare the property
(Synthesizer, Fastformer, AFT, the convolutions, the mixers), is
``not an approximation``: a status, no number.

Input regimes (q, k, v of shape (batch, heads, N, head_dim), from one seed):

* ``gaussian``: q, k, v ~ N(0, 1). Logits q·k/√d ~ N(0, 1): near-uniform rows
  (entropy ≈ ln N − ½), which flatters every approximation.
* ``peaked``: k, v ~ N(0, 1); each query points at two keys, a local one
  ℓ(i) = i − U{0..3} (clipped at 0) and a distant one a(i) at circular distance
  at least N/4: q_i = τ·√d·(k_ℓ/‖k_ℓ‖² + k_a/‖k_a‖²) with τ = ``PEAK_LOGIT``, so
  both matches have logit ≈ τ and every other key ≈ N(0, 2τ²/d). At head_dim 64
  and N = 1024 the two matches hold about 94% of a row's mass (row entropy about
  1 nat against gaussian's 6.4); the measured mean row entropy of the exact
  attention is recorded with every result (``ref_entropy``). Shared-QK cores
  (Reformer) see k = q in both regimes, as in their layer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from attnbench.quality import NOT_AN_APPROXIMATION, REGIMES
from attnbench.variants import build
from attnbench.variants.layer import causal_mask

#: the logit of a peaked query's two matches
PEAK_LOGIT = 12.0
#: distance of the local match: i − U{0..LOCAL_SPAN}
LOCAL_SPAN = 3
#: rows are read back (and compared) only up to this N: A is N×N per head
ROWS_MAX_N = 2048


@dataclass(frozen=True)
class ApproxResult:
    """One (variant, N, regime, seed). ``status``: ok | not an approximation | error."""

    variant: str
    params: dict[str, Any]
    seq_len: int
    regime: str
    seed: int
    heads: int
    head_dim: int
    causal: bool
    status: str
    output_error: float | None = None
    row_error: float | None = None
    row_tv: float | None = None
    rows: str = ""  # "read" or why not
    ref_entropy: float | None = None  # mean row entropy of the exact attention, nats
    error: str = ""
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["label"] = self.label or self.variant
        return d


def make_inputs(regime: str, batch: int, heads: int, seq_len: int, head_dim: int, seed: int,
                dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v (batch, heads, seq_len, head_dim) of ``regime``, deterministic from ``seed``."""
    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; choose one of {', '.join(REGIMES)}")
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, heads, seq_len, head_dim)
    k = torch.randn(shape, generator=gen, dtype=torch.float64)
    v = torch.randn(shape, generator=gen, dtype=torch.float64)
    if regime == "gaussian":
        q = torch.randn(shape, generator=gen, dtype=torch.float64)
    else:
        q = _pointing_queries(k, gen)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _pointing_queries(k: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each query aimed at a local key i − U{0..LOCAL_SPAN} and a distant one (≥ N/4 away)."""
    b, h, n, d = k.shape
    i = torch.arange(n)
    local = (i - torch.randint(0, LOCAL_SPAN + 1, (b, h, n), generator=gen)).clamp(min=0)
    far_offset = n // 4 + torch.randint(0, max(1, n - 2 * (n // 4) + 1), (b, h, n), generator=gen)
    distant = (i + far_offset) % n
    unit = k / k.pow(2).sum(-1, keepdim=True)  # k/‖k‖²: its dot product with k is 1

    def pick(idx: torch.Tensor) -> torch.Tensor:
        return unit.gather(2, idx.unsqueeze(-1).expand(b, h, n, d))

    return PEAK_LOGIT * math.sqrt(d) * (pick(local) + pick(distant))


def row_entropy(probs: torch.Tensor) -> float:
    """Mean entropy (nats) of the rows of ``probs`` (…, N, N)."""
    logs = torch.where(probs > 0, probs.log(), torch.zeros_like(probs))
    return float(-(probs * logs).sum(-1).mean())


def _exact_rows(core: torch.nn.Module, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    logits = core.exact_logits(q, k)
    if core.causal:
        n = logits.shape[-1]
        logits = logits.masked_fill(~causal_mask(n, n, q.device), float("-inf"))
    return torch.softmax(logits, dim=-1)


def implied_rows(core: torch.nn.Module, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """A (B, H, N, N) with core(q, k, v) = A v, read back with one-hot values, head_dim
    columns per call. Only meaningful for a core that declares ``linear_in_values``."""
    b, h, n, d = q.shape
    blocks = []
    for start in range(0, n, d):
        width = min(d, n - start)
        probe = q.new_zeros(b, h, n, d)
        cols = torch.arange(width)
        probe[:, :, start + cols, cols] = 1.0
        blocks.append(core(q, k, probe)[..., :width])
    return torch.cat(blocks, dim=-1)


def measure_approx(variant: str, seq_len: int, regime: str, seed: int = 0, dim: int = 256,
                   heads: int = 4, params: dict[str, Any] | None = None, causal: bool = False,
                   batch: int = 1, label: str = "") -> ApproxResult:
    """The approximation error of ``variant``'s core on ``regime`` inputs (see the module)."""
    params = dict(params or {})
    head_dim = dim // heads if heads and dim % heads == 0 else 0

    def result(status: str, **fields: Any) -> ApproxResult:
        return ApproxResult(variant=variant, params=params, seq_len=seq_len, regime=regime, seed=seed,
                            heads=heads, head_dim=head_dim, causal=causal, status=status, label=label,
                            **fields)

    try:
        torch.manual_seed(seed)  # learned parts (Linformer's E and F, Sinkhorn's sort net) from the seed
        layer = build(variant, dim=dim, heads=heads, seq_len=seq_len, causal=causal, **params)
    except ValueError as exc:
        return result("error", error=str(exc))
    core = getattr(layer, "core", None)
    if core is None or not getattr(core, "approximates_softmax", False):
        return result(NOT_AN_APPROXIMATION)
    core = core.to(torch.float64).eval()  # eval: Routing's centroids must not move
    q, k, v = make_inputs(regime, batch, heads, seq_len, head_dim, seed)
    if core.shared_qk:
        k = q
    with torch.no_grad():
        try:
            out = core(q, k, v)
        except (RuntimeError, ValueError) as exc:
            return result("error", error=str(exc))
        exact = _exact_rows(core, q, k)
        reference = torch.matmul(exact, v)
        output_error = float((out - reference).norm() / reference.norm())
        fields: dict[str, Any] = {"output_error": output_error, "ref_entropy": row_entropy(exact)}
        if not core.linear_in_values:
            fields["rows"] = "not exposed: the core is not declared linear in v"
        elif seq_len > ROWS_MAX_N:
            fields["rows"] = f"not read above N={ROWS_MAX_N}"
        else:
            rows = implied_rows(core, q, k)
            fields["rows"] = "read"
            fields["row_error"] = float((rows - exact).norm() / exact.norm())
            fields["row_tv"] = float(0.5 * (rows - exact).abs().sum(-1).mean())
            # A·v must give the output back, or the declaration is wrong.
            fields["extra"] = {"rows_reproduce_output": float(
                (torch.matmul(rows, v) - out).norm() / out.norm().clamp(min=1e-300))}
    return result("ok", **fields)

"""Shared pieces of every attention layer.

Two base classes:

* ``AttentionCore``: the mechanism proper, ``core(q, k, v) -> out`` on tensors
  of shape (batch, heads, seq_len, head_dim). Most variants are only a core;
  ``ProjectedAttention`` wraps one in the usual q/k/v and output projections.
* ``AttentionLayer``: a whole layer ``x (batch, seq_len, dim) -> same``, for
  mechanisms that do not compute attention from q, k, v (Fastformer, AFT,
  convolutions) and for the wrapper itself.

FLOPs convention (used by every variant, see README): a matrix product of
(m x k) by (k x n) costs 2*m*n*k; a softmax costs 5 FLOPs per element (max,
subtract, exp, sum, divide); other element-wise work costs 1 FLOP per element
and operation where it is part of the mechanism. Work that does not depend on
the input (normalising a learned kernel, forming R₁R₂ᵀ) is counted once per
call, not once per batch element. ``flops()`` is one forward
pass; the runner takes backward = 2 x forward and forward_backward = 3 x forward.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from attnbench.variants.decoding import DecodeState, expand_kv

SOFTMAX_FLOPS_PER_ELEMENT = 5

#: On CPU, cores that score many keys per query run their heads in groups whose
#: score workspace stays under this many bytes (see ``in_head_groups``).
CPU_WORKSPACE_BYTES = 16 * 2**20


def matmul_flops(m: int, n: int, k: int) -> int:
    """FLOPs of an (m x k) @ (k x n) product."""
    return 2 * m * n * k


def softmax_flops(elements: int) -> int:
    return SOFTMAX_FLOPS_PER_ELEMENT * elements


def linear_flops(tokens: int, d_in: int, d_out: int) -> int:
    """An nn.Linear applied to ``tokens`` vectors (bias ignored)."""
    return matmul_flops(tokens, d_out, d_in)


def attend_flops(rows: int, keys: int, d: int) -> int:
    """Scores, softmax and weighted sum for ``rows`` queries against ``keys`` keys each."""
    return matmul_flops(rows, keys, d) + softmax_flops(rows * keys) + matmul_flops(rows, d, keys)


def check_int(label: str, value: object, minimum: int | None = 1) -> int:
    """``value`` if it is an integer (not a bool) of at least ``minimum`` (None: any),
    else a ValueError naming ``label`` (e.g. "local window")."""
    if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
        what = {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer >= {minimum}")
        raise ValueError(f"{label} must be {what}, got {value!r}")
    return value


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 at least: softmax normalisers and sums over N lose digits in half precision."""
    return torch.promote_types(dtype, torch.float32)


def pad_seq(t: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad the sequence dim (-2) of (..., N, d) up to ``length``."""
    return t if t.shape[-2] >= length else torch.nn.functional.pad(t, (0, 0, 0, length - t.shape[-2]))


def check_dims(dim: int, heads: int, seq_len: int) -> int:
    """Validate the common layer arguments and return head_dim."""
    for name, value in (("dim", dim), ("heads", heads), ("seq_len", seq_len)):
        check_int(name, value)
    if dim % heads:
        raise ValueError(f"heads ({heads}) must divide dim ({dim})")
    return dim // heads


def causal_mask(n_q: int, n_k: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean mask, True where query i may see key j (j <= i)."""
    i = torch.arange(n_q, device=device)[:, None]
    j = torch.arange(n_k, device=device)[None, :]
    return j <= i


def cpu_slices(count: int, item_bytes: int, device: torch.device) -> list[slice]:
    """range(count) cut into slices whose items take at most CPU_WORKSPACE_BYTES together
    (at least one item per slice); one slice for all off the CPU. See ``in_head_groups``."""
    if device.type != "cpu" or count * item_bytes <= CPU_WORKSPACE_BYTES:
        return [slice(0, count)]
    step = max(1, CPU_WORKSPACE_BYTES // max(1, item_bytes))
    return [slice(s, min(s + step, count)) for s in range(0, count, step)]


def in_head_groups(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, slice], torch.Tensor],
                   q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keys_per_query: int) -> torch.Tensor:
    """``fn(q, k, v, heads)`` over groups of heads (and batch rows) of (B, H, N, d) tensors,
    ``heads`` naming the slice of the core's heads each call gets; the outputs concatenated.

    Only on CPU, and only where one call would score more than CPU_WORKSPACE_BYTES
    (B·H·N·keys_per_query elements). glibc's malloc serves blocks above its mmap
    threshold (at most 32 MiB) with fresh pages that are faulted in and zeroed on
    every call and given back on free: for the block-sparse and LSH cores at
    N = 8192 that was 40% of the time, and it grew faster than N. Smaller blocks
    are reused from the heap. On CUDA the caching allocator reuses memory anyway
    and splitting would only cost parallelism, so the tensors go through whole.
    Cores whose single head is still too big cut it further with ``in_cpu_runs``.
    """
    b, h, n, _ = q.shape
    per_head = n * keys_per_query * q.element_size()
    if len(cpu_slices(b, h * per_head, q.device)) > 1:  # batch rows apart, then their heads
        return in_cpu_runs(lambda q, k, v, _: in_head_groups(fn, q, k, v, keys_per_query),
                           (q, k, v), 0, h * per_head)
    return in_cpu_runs(fn, (q, k, v), 1, b * per_head)


def in_cpu_runs(fn: Callable[..., torch.Tensor], tensors: tuple[torch.Tensor, ...], dim: int,
                item_bytes: int) -> torch.Tensor:
    """``fn(*parts, run)`` over runs of ``dim`` of ``tensors`` (all the same length there)
    whose items take at most CPU_WORKSPACE_BYTES together (``cpu_slices``), ``run``
    naming the slice each call gets; the outputs concatenated along ``dim``. One call
    with everything off the CPU or where it fits."""
    runs = cpu_slices(tensors[0].shape[dim], item_bytes, tensors[0].device)
    if len(runs) == 1:
        return fn(*tensors, runs[0])
    parts = zip(*(split_by(t, runs, dim) for t in tensors), strict=True)
    return torch.cat([fn(*part, r) for part, r in zip(parts, runs, strict=True)], dim=dim)


def split_by(t: torch.Tensor, slices: list[slice], dim: int) -> tuple[torch.Tensor, ...]:
    """t cut along ``dim`` into the consecutive ``slices``, by ``split``: its backward is
    one concatenation, where indexing's would zero-fill a full-size gradient per part."""
    return t.split([s.stop - s.start for s in slices], dim=dim)


class _SplitProjection(torch.autograd.Function):
    """(B, N, P·H·d) -> P views (B, H, N, d); backward stacks the P gradients straight
    into the projection's layout (B, N, P, H, d): one pass. Autograd's backward of the
    plain view/permute/unbind stacks them into a new (P, B, H, N, d) tensor and then
    copies that into the projection's layout: two full passes and two fresh blocks.
    The backward is
    itself differentiable (double backward, torch.func.grad)."""

    @staticmethod
    def forward(fused: torch.Tensor, parts: int, heads: int) -> tuple[torch.Tensor, ...]:
        return _split_views(fused, parts, heads)

    @staticmethod
    def setup_context(ctx, inputs: tuple, output: tuple) -> None:
        ctx.set_materialize_grads(False)  # an unused part's gradient stays None, no zeros

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        first = next((g for g in grads if g is not None), None)
        if first is None:
            return None, None, None
        b, h, n, d = first.shape
        parts = [first.new_zeros(b, n, h, d) if g is None else g.transpose(1, 2) for g in grads]
        return torch.stack(parts, dim=2).view(b, n, len(grads) * h * d), None, None


def _split_views(fused: torch.Tensor, parts: int, heads: int) -> tuple[torch.Tensor, ...]:
    b, n, width = fused.shape
    # unbind, not [i]: indexing makes backward zero-fill the whole fused tensor once per part.
    return fused.view(b, n, parts, heads, width // (parts * heads)).permute(2, 0, 3, 1, 4).unbind(0)


def split_projection(fused: torch.Tensor, parts: int, heads: int) -> tuple[torch.Tensor, ...]:
    """The output of a fused projection (B, N, parts·heads·d) as ``parts`` tensors
    (B, H, N, d), views of it. When it needs a gradient, through ``_SplitProjection``
    (one pass in backward); under torch.compile as plain views, which the compiler
    fuses anyway."""
    if fused.requires_grad and torch.is_grad_enabled() and not torch.compiler.is_compiling():
        return _SplitProjection.apply(fused, parts, heads)
    return _split_views(fused, parts, heads)


class AttentionCore(nn.Module):
    """q, k, v (batch, heads, seq_len, head_dim) -> out of the same shape.

    Subclasses take ``heads, head_dim, seq_len, causal`` and their own keyword
    parameters; the registry reads the parameters and defaults from the
    constructor's signature, so defaults live in one place.
    """

    #: the core uses q as its keys (Reformer); the wrapper then projects no k.
    shared_qk: bool = False
    # Capabilities, declared by the subclasses that differ and read, never probed:
    #: has a causal mode (``register(causal=...)`` says the same for built-ins).
    supports_causal: bool = True
    #: its backward runs on CPU (FlexAttention's compiled kernel has none there).
    cpu_backward: bool = True
    #: computes through torch's fused ``scaled_dot_product_attention`` (the
    #: measurement then records which SDPA kernel ran).
    uses_fused_sdpa: bool = False
    #: computes softmax attention exactly or approximately, so that its error
    #: against ``exact_logits`` can be measured (attnbench.quality.approx). Mechanisms
    #: that do something else with q, k, v leave it False.
    approximates_softmax: bool = False
    #: out = A(q, k)·v with row weights A that do not depend on v: the attention rows
    #: the core implies can be read back by passing one-hot values.
    linear_in_values: bool = False
    #: None when the core decodes token by token (``prefill`` and ``step``, see
    #: attnbench.variants.decoding); otherwise why it cannot, in one line.
    decode_refusal: str | None = "has no incremental (token by token) form"
    #: None when key and value heads may be fewer than query heads (``kv_heads``);
    #: otherwise why they may not.
    kv_heads_refusal: str | None = "shares no key/value heads: its keys are not a per-head cache"
    #: forward() takes keys and values with fewer heads than queries itself; otherwise
    #: the layer repeats them per query head first (``decoding.expand_kv``).
    grouped_forward: bool = False

    def __init__(self, heads: int, head_dim: int, seq_len: int, causal: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim
        self.seq_len = seq_len
        self.causal = causal
        self.scale = head_dim ** -0.5

    def flops(self, batch: int, seq_len: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def exact_logits(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The logits (…, N, N) of the exact attention this core approximates, before any
        causal mask: q kᵀ/√d. A core whose exact counterpart differs overrides it."""
        return torch.matmul(q, k.transpose(-1, -2)) * self.scale

    def whole_layer(self, x: torch.Tensor, qkv: nn.Linear, out: nn.Linear) -> torch.Tensor | None:
        """The whole layer's output from x (B, N, dim), its fused q/k/v projection and
        its output projection, for a core whose products can absorb the projections
        (non-causal linear attention); None, the default: project, run the core, merge
        the heads and project. ``flops()`` counts the standard form either way."""
        return None

    def prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, capacity: int, output: bool = True,
                **extra: torch.Tensor) -> tuple[torch.Tensor | None, DecodeState]:
        """The causal forward of q (B, H, N, d) and k, v (B, kv_heads, N, d) (keys and
        values repeated per query head unless ``grouped_forward``), and ``decode_state``;
        with ``output`` False only the state (the output is None)."""
        out = None
        if output:
            heads = q.shape[1]
            full = (k, v) if self.grouped_forward else (expand_kv(k, heads), expand_kv(v, heads))
            out = self(q, *full, **extra)
        return out, self.decode_state(k, v, capacity, **extra)

    def decode_state(self, k: torch.Tensor, v: torch.Tensor, capacity: int,
                     **extra: torch.Tensor) -> DecodeState:
        """The state that token N needs after the keys and values (B, kv_heads, N, d) of a
        prompt, with room for ``capacity`` tokens in a cache (``extra``: ``layer_input``'s)."""
        raise NotImplementedError(f"{type(self).__name__} {self.decode_refusal}")

    def step(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             state: DecodeState) -> tuple[torch.Tensor, DecodeState]:
        """One token: q (B, H, 1, d), k, v (B, kv_heads, 1, d) against ``state``."""
        raise NotImplementedError(f"{type(self).__name__} {self.decode_refusal}")

    def layer_input(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Keyword arguments that ``prefill`` and ``step`` take from the layer input x
        besides q, k and v (gated RFA's gates); none by default."""
        return {}


class AttentionLayer(nn.Module):
    """x (batch, seq_len, dim) -> (batch, seq_len, dim).

    Layers built around an ``AttentionCore`` expose it as ``layer.core``.
    The capability flags mean what they mean on ``AttentionCore``.
    """

    supports_causal: bool = True
    cpu_backward: bool = True
    uses_fused_sdpa: bool = False
    decode_refusal: str | None = "has no incremental (token by token) form"
    kv_heads_refusal: str | None = "has no key/value heads to share"

    def __init__(self, dim: int, heads: int, seq_len: int, causal: bool = False) -> None:
        super().__init__()
        self.head_dim = check_dims(dim, heads, seq_len)
        self.dim = dim
        self.heads = heads
        self.kv_heads = heads
        self.seq_len = seq_len
        self.causal = causal

    def flops(self, batch: int, seq_len: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def prefill(self, x: torch.Tensor, capacity: int, output: bool = True) -> tuple[torch.Tensor | None,
                                                                                   DecodeState]:
        """The causal forward of x (B, N, dim) and the state token N needs, with room
        for ``capacity`` tokens in a cache (attnbench.variants.decoding); with ``output``
        False only the state, as a decode pass needs (the output is None)."""
        raise NotImplementedError(f"{type(self).__name__} {self.decode_refusal}")

    def step(self, x: torch.Tensor, state: DecodeState) -> tuple[torch.Tensor, DecodeState]:
        """One token x (B, 1, dim) against ``state``: its output and the state after it."""
        raise NotImplementedError(f"{type(self).__name__} {self.decode_refusal}")

    def check_decodes(self) -> None:
        """Raise NotImplementedError with the reason unless the layer decodes causally."""
        if self.decode_refusal is not None:
            raise NotImplementedError(self.decode_refusal)
        if not self.causal:
            raise ValueError("prefill and decode are causal: build the layer with causal=True")

    def split_heads(self, t: torch.Tensor) -> torch.Tensor:
        """(B, N, dim) -> (B, H, N, d)."""
        b, n, _ = t.shape
        return t.view(b, n, self.heads, self.head_dim).transpose(1, 2)

    def merge_heads(self, t: torch.Tensor) -> torch.Tensor:
        """(B, H, N, d) -> (B, N, dim)."""
        b, h, n, d = t.shape
        return t.transpose(1, 2).reshape(b, n, h * d)


class ProjectedAttention(AttentionLayer):
    """The standard multi-head layer around a core: fused q/k/v projection,
    the core, then the output projection.

    ``kv_heads`` (default: ``heads``; must divide it): grouped-query attention, the
    keys and values projected to that many heads, each shared by heads / kv_heads
    query heads (arXiv 2305.13245); only for cores that allow it
    (``kv_heads_refusal`` is None)."""

    def __init__(self, core: AttentionCore, dim: int, heads: int, seq_len: int,
                 causal: bool = False, kv_heads: int | None = None) -> None:
        super().__init__(dim, heads, seq_len, causal)
        kv_heads = heads if kv_heads is None else check_int("kv_heads", kv_heads)
        if heads % kv_heads:
            raise ValueError(f"kv_heads ({kv_heads}) must divide heads ({heads})")
        if kv_heads != heads and core.kv_heads_refusal is not None:
            raise ValueError(f"kv_heads {kv_heads} < heads {heads}: this mechanism {core.kv_heads_refusal}")
        if kv_heads != heads and core.shared_qk:
            raise ValueError("kv_heads: keys shared with queries cannot have fewer heads")
        self.kv_heads = kv_heads
        self.core = core
        self.n_proj = 2 if core.shared_qk else 3
        self.qkv = nn.Linear(dim, self.n_proj * dim if kv_heads == heads else dim + 2 * kv_heads * self.head_dim,
                             bias=False)
        self.out = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.qkv.weight, gain=1 / math.sqrt(2))
        # The layer can do what its core can.
        self.supports_causal = core.supports_causal
        self.cpu_backward = core.cpu_backward
        self.uses_fused_sdpa = core.uses_fused_sdpa
        self.decode_refusal = core.decode_refusal
        self.kv_heads_refusal = core.kv_heads_refusal

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (B, H, N, d) and k, v (B, kv_heads, N, d) of x (B, N, dim)."""
        if self.kv_heads != self.heads:
            kv_width = self.kv_heads * self.head_dim
            q, k, v = self.qkv(x).split([self.dim, kv_width, kv_width], dim=-1)
            return self._heads(q, self.heads), self._heads(k, self.kv_heads), self._heads(v, self.kv_heads)
        parts = split_projection(self.qkv(x), self.n_proj, self.heads)
        if self.n_proj == 2:
            q, v = parts
            return q, q, v
        return parts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        whole = self.core.whole_layer(x, self.qkv, self.out) if self.kv_heads == self.heads else None
        if whole is not None:
            return whole
        q, k, v = self.project(x)
        if self.kv_heads != self.heads and not self.core.grouped_forward:
            k, v = expand_kv(k, self.heads), expand_kv(v, self.heads)
        return self.out(self.merge_heads(self.core(q, k, v)))

    def prefill(self, x: torch.Tensor, capacity: int, output: bool = True) -> tuple[torch.Tensor | None,
                                                                                   DecodeState]:
        self.check_decodes()
        extra = self.core.layer_input(x)
        if not output:  # the state alone: only k and v projected (the fused weight's rows after the queries')
            k, v = F.linear(x, self.qkv.weight[self.dim:]).split(self.kv_heads * self.head_dim, dim=-1)
            return None, self.core.decode_state(self._heads(k, self.kv_heads), self._heads(v, self.kv_heads),
                                                capacity, **extra)
        out, state = self.core.prefill(*self.project(x), capacity, **extra)
        return self.out(self.merge_heads(out)), state

    @staticmethod
    def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:
        """(B, N, heads·d) -> (B, heads, N, d), a view."""
        b, n, _ = t.shape
        return t.view(b, n, heads, -1).transpose(1, 2)

    def step(self, x: torch.Tensor, state: DecodeState) -> tuple[torch.Tensor, DecodeState]:
        self.check_decodes()
        out, state = self.core.step(*self.project(x), state, **self.core.layer_input(x))
        return self.out(self.merge_heads(out)), state

    def flops(self, batch: int, seq_len: int) -> int:
        tokens = batch * seq_len
        proj = (linear_flops(tokens, self.dim, self.qkv.out_features)
                + linear_flops(tokens, self.dim, self.dim))
        return proj + self.core.flops(batch, seq_len)

"""Sparse patterns: each query attends to a fixed subset of the keys.

* ``local``: blocked sliding window, the local 1-D attention of the Image
  Transformer (arXiv 1802.05751). The sequence is cut into blocks of w queries;
  each block scores its own and its neighbouring key blocks (only the previous
  one when causal) under an exact band mask |i − j| ≤ w.
* ``strided``: the Sparse Transformer's strided pattern (arXiv 1904.10509):
  the first ⌈H/2⌉ heads are local, the others strided.
* ``longformer``: sliding band ±w/2 plus g global tokens (arXiv 2004.05150).
* ``bigbird``: blocks of b seeing 3 sliding, 2 global and r random key blocks
  (arXiv 2007.14062).

None of them builds an N×N tensor: each computes small dense blocks (a block of
queries against the few key blocks it may see), one batched matmul over all
blocks, with one softmax over every key a query sees (so sub-patterns such as
Longformer's band and its global columns share one normalisation). N that is
not a multiple of the block is zero-padded; padded keys are masked and padded
query rows dropped. Masks are built once per sequence length and cached.
Causal variants use the non-causal pattern intersected with j ≤ i.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from attnbench.variants.decoding import (
    DecodeState,
    group_queries,
    kv_cache_append,
    kv_cache_prefill,
    new_cache,
    ring_append,
    ring_prefill,
    ungroup_queries,
)
from attnbench.variants.layer import (
    AttentionCore,
    acc_dtype,
    attend_flops,
    check_int,
    in_cpu_runs,
    in_head_groups,
    pad_seq,
)
from attnbench.variants.registry import ceil_sqrt, register

Tensor = torch.Tensor


def attend_scores(q: Tensor, k: Tensor, v: Tensor, blocked: Tensor | None) -> Tensor:
    """softmax(q kᵀ) v with ``blocked`` (True = may not attend) masked; q is pre-scaled.

    Masked logits get the dtype's lowest finite value, not -inf, so that a row
    with nothing to see (a padded query) stays finite instead of NaN. The fill is
    kept out of autograd: softmax's gradient is already exactly 0 where its output
    is 0, and recording it would cost one more pass over the scores in backward.
    """
    scores = torch.matmul(q, k.transpose(-1, -2))
    if blocked is not None:
        with torch.no_grad():  # matmul's backward does not need its output: safe in place
            scores.masked_fill_(blocked, torch.finfo(scores.dtype).min)
    # Normalise in float32 at least: half-precision exp sums lose digits.
    probs = torch.softmax(scores, dim=-1, dtype=acc_dtype(scores.dtype))
    return torch.matmul(probs.to(v.dtype), v)


class SparseCore(AttentionCore):
    """A core with a small cache of masks / patterns keyed by sequence length and device."""

    approximates_softmax = True
    linear_in_values = True

    def __init__(self, heads: int, head_dim: int, seq_len: int, causal: bool) -> None:
        super().__init__(heads, head_dim, seq_len, causal)
        self._cache: dict[tuple, Any] = {}

    def _cached(self, key: tuple, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            if len(self._cache) >= 8:
                self._cache.clear()
            # Built outside inference mode: a pattern first made during an
            # inference_mode forward must still be usable by autograd later.
            with torch.inference_mode(False):
                self._cache[key] = make()
        return self._cache[key]


# --------------------------------------------------------------------------- band


def _band_geometry(n: int, block: int, lo: int, hi: int) -> tuple[int, int, int]:
    """Blocks of ``block`` queries seeing keys i − lo ≤ j ≤ i + hi: (blocks, back, ahead),
    the number of key blocks looked at before and after a query block's own."""
    n_blocks = -(-n // block)
    back = min(-(-lo // block), n_blocks - 1)
    ahead = min(-(-hi // block), n_blocks - 1)
    return n_blocks, back, ahead


def _band_mask(n: int, block: int, lo: int, hi: int, n_global: int, causal: bool,
               device: torch.device) -> Tensor:
    """(blocks, block, width + n_global), True where query i may NOT see key j. Band keys
    j ∉ [i − lo, i + hi], padding and the global tokens (j < n_global, which come
    separately as the last n_global columns) are blocked."""
    n_blocks, back, ahead = _band_geometry(n, block, lo, hi)
    width = (back + 1 + ahead) * block
    i = torch.arange(n_blocks * block, device=device).view(n_blocks, block, 1)
    j = (torch.arange(n_blocks, device=device).view(n_blocks, 1, 1) - back) * block \
        + torch.arange(width, device=device)
    rel = j - i
    blocked = (rel < -lo) | (rel > hi) | (j < n_global) | (j >= n)
    if n_global:
        g = torch.arange(n_global, device=device)
        g_blocked = (g > i) if causal else torch.zeros_like(g > i)
        blocked = torch.cat([blocked, g_blocked.expand(n_blocks, block, n_global)], dim=-1)
    return blocked


def band_attention(core: SparseCore, q: Tensor, k: Tensor, v: Tensor, block: int, lo: int,
                    hi: int, n_global: int = 0) -> Tensor:
    """Attention of (B, H, N, d) under the band i − lo ≤ j ≤ i + hi (plus the first
    ``n_global`` keys as extra columns of every block); q is pre-scaled."""
    n = q.shape[-2]
    n_blocks, back, ahead = _band_geometry(n, block, lo, hi)
    width = (back + 1 + ahead) * block
    blocked = core._cached(("band", n, block, lo, hi, n_global, q.device),
                           lambda: _band_mask(n, block, lo, hi, n_global, core.causal, q.device))

    def heads(q: Tensor, k: Tensor, v: Tensor, _: slice) -> Tensor:
        return _band_heads(q, k, v, blocked, block, n_blocks, back, ahead, n_global)

    return in_head_groups(heads, q, k, v, width + n_global)


def _band_heads(q: Tensor, k: Tensor, v: Tensor, blocked: Tensor, block: int, n_blocks: int,
                back: int, ahead: int, n_global: int) -> Tensor:
    b, h, n, d = q.shape
    width = (back + 1 + ahead) * block

    def windows(t: Tensor) -> Tensor:
        # (B, H, N, d) -> (B, H, blocks, width, d): each block's keys as an overlapping view
        t = F.pad(t, (0, 0, back * block, (n_blocks + ahead) * block - n))
        return t.unfold(-2, width, block).transpose(-1, -2)

    keys, values = windows(k), windows(v)
    queries = pad_seq(q, n_blocks * block).view(b, h, n_blocks, block, d)

    def run(qs: Tensor, ks: Tensor, vs: Tensor, r: slice) -> Tensor:  # the query blocks r
        if n_global:  # every block also sees the global tokens: extra columns, same softmax
            glob = (b, h, ks.shape[2], n_global, d)
            ks = torch.cat([ks, k[:, :, None, :n_global].expand(glob)], dim=-2)
            vs = torch.cat([vs, v[:, :, None, :n_global].expand(glob)], dim=-2)
        return attend_scores(qs, ks, vs, blocked[r])

    # On CPU, a head too long for the workspace is cut into runs of query blocks.
    out = in_cpu_runs(run, (queries, keys, values), 2, b * h * block * (width + n_global) * q.element_size())
    return out.view(b, h, n_blocks * block, d)[:, :, :n]


def band_flops(batch_heads: int, n: int, block: int, lo: int, hi: int, d: int,
                n_global: int = 0) -> int:
    n_blocks, back, ahead = _band_geometry(n, block, lo, hi)
    keys = (back + 1 + ahead) * block + n_global
    return batch_heads * attend_flops(n_blocks * block, keys, d)


# --------------------------------------------------------------------------- variants


@register("local", family="sparse", paper="1802.05751", complexity="O(N·w·d)", causal=True)
class LocalAttention(SparseCore):
    """Blocked sliding window: query i sees keys |i − j| ≤ window (j ≤ i when causal),
    computed block by block, each block of w queries against 3 (causal: 2) key blocks.

    Decodes from a ring of the last w + 1 keys and values (sliding-window attention's
    cache: its size does not grow with N).

    Parameters:
        window: w: keys within w of the query are seen; queries run in blocks of w
    """

    decode_refusal = None  # a ring of the last window + 1 keys
    kv_heads_refusal = None

    def __init__(self, heads: int, head_dim: int, seq_len: int, causal: bool = False,
                 window: int = 256) -> None:
        super().__init__(heads, head_dim, seq_len, causal)
        self.window = check_int("local window", window)

    def decode_state(self, k: Tensor, v: Tensor, capacity: int) -> DecodeState:
        return ring_prefill(k, v, self.window + 1)

    def step(self, q: Tensor, k: Tensor, v: Tensor, state: DecodeState) -> tuple[Tensor, DecodeState]:
        keys, values, state = ring_append(state, k, v)
        out = attend_scores(group_queries(q * self.scale, k.shape[1]), keys, values, None)
        return ungroup_queries(out, q.shape[1]), state

    def _geometry(self, n: int) -> tuple[int, int, int]:
        return min(self.window, n), self.window, 0 if self.causal else self.window

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return band_attention(self, q * self.scale, k, v, *self._geometry(q.shape[-2]))

    def flops(self, batch: int, seq_len: int) -> int:
        return band_flops(batch * self.heads, seq_len, *self._geometry(seq_len), self.head_dim)


@register("strided", family="sparse", paper="1904.10509", complexity="O(N·√N·d)", causal=True)
class StridedAttention(SparseCore):
    """Sparse Transformer strided attention, stride l (⌈√N⌉ when None): the first ⌈H/2⌉
    heads local, the others strided.

    Causal (the paper's setting): local heads see i − l < j ≤ i, strided heads
    (i − j) mod l = 0 with j ≤ i. Non-causal: local |i − j| < l, strided
    (i − j) mod l = 0 in both directions. The strided heads reshape N → (N/l, l)
    and transpose, so each residue class mod l is one contiguous group of N/l
    tokens attending within itself: O(N·(N/l)·d) + O(N·l·d).

    l ≥ N makes the local heads full attention (strided heads then see only
    themselves); l = 1 makes the strided heads full attention. With one head
    the layer is local only.

    Parameters:
        stride: l: the strided heads' stride and the local heads' width; None: ⌈√N⌉
    """

    decode_refusal = None  # a KV cache; a step reads l rows (local heads) or every l-th row (strided heads)

    def __init__(self, heads: int, head_dim: int, seq_len: int, causal: bool = False,
                 stride: int | None = None) -> None:
        super().__init__(heads, head_dim, seq_len, causal)
        if stride is not None:
            check_int("strided stride", stride)
        self.stride = stride
        self.local_heads = heads - heads // 2
        self.decode_refusal = (None if stride is not None else
                               "decodes with a fixed stride only: with stride None it is ⌈√N⌉ and moves as tokens "
                               "come (set stride)")

    def decode_state(self, k: Tensor, v: Tensor, capacity: int) -> DecodeState:
        """A KV cache of every token: the strided heads reach back to the first."""
        return kv_cache_prefill(k, v, capacity)

    def step(self, q: Tensor, k: Tensor, v: Tensor, state: DecodeState) -> tuple[Tensor, DecodeState]:
        """Token t: the local heads read the last l rows, the strided heads rows t, t − l, …"""
        t = state.rows
        keys, values, state = kv_cache_append(state, k, v)
        stride, split = self.stride, self.local_heads
        q = q * self.scale
        local = attend_scores(q[:, :split], keys[:, :split, max(0, t + 1 - stride):],
                              values[:, :split, max(0, t + 1 - stride):], None)
        parts = [local]
        if split < self.heads:
            parts.append(attend_scores(q[:, split:], keys[:, split:, t % stride::stride],
                                       values[:, split:, t % stride::stride], None))
        read = split * min(stride, t + 1) + (self.heads - split) * (t // stride + 1)
        return torch.cat(parts, dim=1), replace(state, read_fraction=read / (self.heads * (t + 1)))

    def _stride(self, n: int) -> int:
        return min(self.stride if self.stride is not None else ceil_sqrt(n), n)

    def _local_geometry(self, n: int) -> tuple[int, int, int]:
        stride = self._stride(n)
        return stride, stride - 1, 0 if self.causal else stride - 1

    def _strided_mask(self, n: int, stride: int, device: torch.device) -> Tensor:
        """(l, m, m), True where group member a may NOT see member c (position c·l + r)."""
        groups = -(-n // stride)
        a = torch.arange(groups, device=device).view(groups, 1)
        c = torch.arange(groups, device=device).view(1, groups)
        r = torch.arange(stride, device=device).view(stride, 1, 1)
        blocked = c * stride + r >= n
        return (blocked | (c > a)) if self.causal else blocked

    def _strided(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        n = q.shape[-2]
        stride = self._stride(n)
        blocked = self._cached(("strided", n, stride, q.device),
                               lambda: self._strided_mask(n, stride, q.device))
        return in_head_groups(lambda q, k, v, _: self._strided_heads(q, k, v, blocked),
                              q, k, v, -(-n // stride))

    def _strided_heads(self, q: Tensor, k: Tensor, v: Tensor, blocked: Tensor) -> Tensor:
        b, h, n, d = q.shape
        stride = self._stride(n)
        groups = -(-n // stride)

        def regroup(t: Tensor) -> Tensor:  # (B, h, N, d) -> (B, h, l, N/l, d), one residue per row
            return pad_seq(t, groups * stride).view(b, h, groups, stride, d).transpose(2, 3)

        out = attend_scores(regroup(q), regroup(k), regroup(v), blocked)
        return out.transpose(2, 3).reshape(b, h, groups * stride, d)[:, :, :n]

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        geometry = self._local_geometry(q.shape[-2])
        q = q * self.scale
        if self.local_heads == self.heads:
            return band_attention(self, q, k, v, *geometry)
        # split, not slicing: its backward concatenates instead of zero-filling H heads per part
        sizes = [self.local_heads, self.heads - self.local_heads]
        (ql, qs), (kl, ks), (vl, vs) = (t.split(sizes, dim=1) for t in (q, k, v))
        return torch.cat([band_attention(self, ql, kl, vl, *geometry), self._strided(qs, ks, vs)], dim=1)

    def flops(self, batch: int, seq_len: int) -> int:
        stride = self._stride(seq_len)
        groups = -(-seq_len // stride)
        strided_heads = self.heads - self.local_heads
        return (band_flops(batch * self.local_heads, seq_len, *self._local_geometry(seq_len),
                            self.head_dim)
                + batch * strided_heads * stride * attend_flops(groups, groups, self.head_dim))


@register("longformer", family="sparse", paper="2004.05150", complexity="O(N·(w+g)·d)", causal=True)
class LongformerAttention(SparseCore):
    """Longformer: a sliding band |i − j| ≤ ⌊w/2⌋ plus the first g tokens global
    (they attend to every token and every token attends to them).

    The band is computed in blocks of ⌊w/2⌋ queries against 3 key blocks, with the
    g global keys appended to every block's keys so one softmax normalises band and
    global columns together; the g global rows are computed apart, (g × N).
    Causal: the same pattern with j ≤ i. Full attention once ⌊w/2⌋ ≥ N − 1.

    Parameters:
        window: w: the band, keys within ⌊w/2⌋ of the query
        global_tokens: g: the first g tokens see, and are seen by, every token
    """

    decode_refusal = None  # the g global keys and a ring of the band: g + ⌊w/2⌋ + 1 rows at any N

    def __init__(self, heads: int, head_dim: int, seq_len: int, causal: bool = False,
                 window: int = 512, global_tokens: int = 1) -> None:
        super().__init__(heads, head_dim, seq_len, causal)
        self.window = check_int("longformer window", window)
        self.global_tokens = check_int("longformer global_tokens", global_tokens, 0)

    # Decoding keeps what a step reads, no more: the first g tokens in slots 0..g-1, and
    # the last ⌊w/2⌋ + 1 tokens after them in a ring, token t >= g in slot
    # g + (t - g) mod (⌊w/2⌋ + 1). The live slots are always the first ones, so a step
    # attends to slots 0..rows-1: keys 0..t for a global token t < g, else the union of
    # the globals and the band max(g, t - ⌊w/2⌋)..t, as the forward has it.

    def _ring_slots(self) -> tuple[int, int]:
        """(global slots, band slots)."""
        return self.global_tokens, self.window // 2 + 1

    def _slot(self, t: int) -> int:
        g, band = self._ring_slots()
        return t if t < g else g + (t - g) % band

    def _live_rows(self, length: int) -> int:
        g, band = self._ring_slots()
        return min(length, g) + min(max(0, length - g), band)

    def decode_state(self, k: Tensor, v: Tensor, capacity: int) -> DecodeState:
        """The globals and the band's ring after a prefill of N tokens (``capacity`` is
        not needed: the ring's size does not grow)."""
        n = k.shape[-2]
        g, band = self._ring_slots()
        kept = [*range(min(n, g)), *range(max(g, n - band), n)]
        tokens = torch.tensor(kept, dtype=torch.long, device=k.device)
        slots = torch.tensor([self._slot(t) for t in kept], dtype=torch.long, device=k.device)
        keys, values = new_cache(k, g + band), new_cache(v, g + band)
        keys[:, :, slots] = k[:, :, tokens]
        values[:, :, slots] = v[:, :, tokens]
        return DecodeState(length=n, cache=(keys, values), rows=len(kept), ring=True)

    def step(self, q: Tensor, k: Tensor, v: Tensor, state: DecodeState) -> tuple[Tensor, DecodeState]:
        """Token t: keys t − ⌊w/2⌋ … t and the first g; a global token (t < g) sees all."""
        t = state.length
        keys, values = state.cache
        slot = self._slot(t)
        keys[:, :, slot:slot + 1].copy_(k)
        values[:, :, slot:slot + 1].copy_(v)
        rows = self._live_rows(t + 1)
        out = attend_scores(q * self.scale, keys[:, :, :rows], values[:, :, :rows], None)
        return out, DecodeState(length=t + 1, cache=state.cache, rows=rows, ring=True)

    def _geometry(self, n: int) -> tuple[int, int, int]:
        half = self.window // 2
        return max(1, min(half, n)), half, 0 if self.causal else half

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        n = q.shape[-2]
        g = min(self.global_tokens, n)
        q = q * self.scale
        band = band_attention(self, q, k, v, *self._geometry(n), n_global=g)
        if not g:
            return band
        blocked = None
        if self.causal:
            blocked = self._cached(("global", n, g, q.device), lambda: torch.arange(
                n, device=q.device) > torch.arange(g, device=q.device)[:, None])
        glob = attend_scores(q[:, :, :g], k, v, blocked)  # the global rows see every key
        return torch.cat([glob, band[:, :, g:]], dim=2)

    def flops(self, batch: int, seq_len: int) -> int:
        g = min(self.global_tokens, seq_len)
        bh = batch * self.heads
        return (band_flops(bh, seq_len, *self._geometry(seq_len), self.head_dim, n_global=g)
                + bh * attend_flops(g, seq_len, self.head_dim))


@register("bigbird", family="sparse", paper="2007.14062", complexity="O(N·b·(5+r)·d)", causal=False)
class BigBirdAttention(SparseCore):
    """BigBird (ITC): blocks of b; each query block sees its 3 sliding blocks, the
    first and last block (global) and r random blocks (per head, drawn from the
    other blocks with a generator seeded by ``seed``, the same on every call);
    the first and last query blocks see every key.

    Key blocks are gathered per query block, so one softmax covers all of them,
    blocks seen twice (block 1's left neighbour is the global block 0) counted
    once. As in the reference code, N ≤ (5 + 2r)·b is plain full attention
    (at most (5 + 2r)·b keys per query, so the cost bound holds). Not causal.

    Parameters:
        block: b: the block size
        random_blocks: r: random key blocks per query block
        seed: seed of the random blocks
    """

    decode_refusal = 'cannot decode: it is not causal (its random and global blocks read later tokens)'

    def __init__(self, heads: int, head_dim: int, seq_len: int, causal: bool = False,
                 block: int = 64, random_blocks: int = 3, seed: int = 0) -> None:
        super().__init__(heads, head_dim, seq_len, causal)
        if causal:
            raise ValueError("bigbird does not support causal attention")
        self.block = check_int("bigbird block", block)
        self.random_blocks = check_int("bigbird random_blocks", random_blocks, 0)
        self.seed = check_int("bigbird seed", seed, None)

    def is_full(self, n: int) -> bool:
        return n <= (5 + 2 * self.random_blocks) * self.block

    def key_blocks(self, n: int) -> tuple[Tensor, Tensor]:
        """The pattern of the middle query blocks 1 … nb−2: block indices (H, nb−2, 5+r)
        [left, self, right, first, last, random…] and whether each counts (False for a
        duplicate of a global block). Deterministic given ``seed``."""
        n_blocks = -(-n // self.block)
        middle = torch.arange(1, n_blocks - 1)
        fixed = torch.stack([middle - 1, middle, middle + 1, torch.zeros_like(middle),
                             torch.full_like(middle, n_blocks - 1)], dim=1)
        gen = torch.Generator().manual_seed(self.seed)
        draw = torch.rand(self.heads, len(middle), n_blocks, generator=gen)
        draw.scatter_(2, fixed.expand(self.heads, -1, -1), 2.0)  # never draw a fixed block
        rand = draw.topk(self.random_blocks, dim=2, largest=False).indices
        idx = torch.cat([fixed.expand(self.heads, -1, -1), rand], dim=2)
        valid = torch.ones_like(idx, dtype=torch.bool)
        valid[:, 0, 0] = False  # block 1's left neighbour is the first (global) block
        valid[:, -1, 2] = False  # block nb−2's right neighbour is the last one
        return idx, valid

    def _pattern(self, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
        idx, valid = self.key_blocks(n)
        pos = idx[..., None] * self.block + torch.arange(self.block)  # (H, m, 5+r, b)
        blocked = (~valid[..., None] | (pos >= n)).flatten(2)[:, :, None]  # (H, m, 1, keys)
        return idx.to(device), blocked.to(device)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        n = q.shape[-2]
        q = q * self.scale
        if self.is_full(n):
            return attend_scores(q, k, v, None)
        idx, blocked = self._cached(("bigbird", n, q.device), lambda: self._pattern(n, q.device))
        return in_head_groups(lambda q, k, v, heads: self._heads(q, k, v, idx[heads], blocked[heads]),
                              q, k, v, self.keys_per_query())

    def keys_per_query(self) -> int:
        """Keys a middle query scores: 3 sliding, 2 global and r random blocks."""
        return (5 + self.random_blocks) * self.block

    def _heads(self, q: Tensor, k: Tensor, v: Tensor, idx: Tensor, blocked: Tensor) -> Tensor:
        """The heads whose key blocks are ``idx`` (h, nb−2, 5+r); q pre-scaled."""
        b, h, n, d = q.shape
        blk = self.block
        n_blocks = -(-n // blk)
        queries = pad_seq(q, n_blocks * blk).view(b, h, n_blocks, blk, d)
        k_blocks, v_blocks = (pad_seq(t, n_blocks * blk).reshape(b, h * n_blocks, blk * d) for t in (k, v))
        head_base = torch.arange(h, device=idx.device)[:, None, None] * n_blocks

        first, middle_q, last = queries.split([1, n_blocks - 2, 1], dim=2)

        def run(qs: Tensor, r: slice) -> Tensor:  # the middle query blocks 1 + r
            # One flat index into the (h·nb) blocks of these heads: index_select copies whole
            # blocks (and its backward adds them back), far faster than 2-D advanced indexing.
            flat = (idx[:, r] + head_base).flatten()
            ks, vs = (t.index_select(1, flat).view(b, h, -1, self.keys_per_query(), d)
                      for t in (k_blocks, v_blocks))
            return attend_scores(qs, ks, vs, blocked[:, r])

        # On CPU, heads too long for the workspace are cut into runs of query blocks.
        middle = in_cpu_runs(run, (middle_q,), 2, b * h * blk * self.keys_per_query() * q.element_size())
        # The first and last query blocks are global: they see all N keys.
        glob = attend_scores(torch.cat([first, last], dim=2).flatten(2, 3), k, v, None)
        out = torch.cat([glob[:, :, :blk], middle.flatten(2, 3), glob[:, :, blk:]], dim=2)
        return out[:, :, :n]

    def flops(self, batch: int, seq_len: int) -> int:
        bh, d, blk = batch * self.heads, self.head_dim, self.block
        if self.is_full(seq_len):
            return bh * attend_flops(seq_len, seq_len, d)
        n_blocks = -(-seq_len // blk)
        keys = (5 + self.random_blocks) * blk
        return bh * (attend_flops((n_blocks - 2) * blk, keys, d) + attend_flops(2 * blk, seq_len, d))

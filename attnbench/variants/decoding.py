"""Serving: what a layer carries from token to token, and the pieces the decoding
variants share.

A layer that decodes (``decode_refusal`` is None) has two more calls beside its
forward:

* ``prefill(x, capacity)``: the causal forward of the N tokens of x (B, N, dim),
  returning its output and the ``DecodeState`` the next token needs;
* ``step(x, state)``: one token x (B, 1, dim) against that state, returning its
  output and the state after it.

A prefill of N tokens followed by T steps gives the last T rows of the causal
forward over N + T tokens (tests/variants/test_decoding.py checks it for every
variant that says it decodes).

The state is either a **cache** (rows kept per token: a KV cache, a ring of the
last w keys, the last K inputs of a convolution), of which a step reads the live
rows and writes one, or a **recurrent** state of fixed size (linear attention's
φ(K)ᵀV), which a step reads and writes whole. A cache is allocated once for
``capacity`` tokens and written in place, as a serving engine does; a state
object only records how many rows are live, so that the same prefill's state
can start every timed run of steps again (``DecodeState.fork``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

#: Why a layer without a ``decode_refusal`` of its own cannot decode.
NO_DECODE = "has no prefill and step methods (attnbench.variants.decoding)"


def refusal_of(layer: object) -> str | None:
    """Why ``layer`` cannot decode, in one line; None when it says it can."""
    return getattr(layer, "decode_refusal", NO_DECODE)


@dataclass(frozen=True)
class DecodeState:
    """What a decoding layer carries from token to token.

    ``length``: the tokens seen so far. ``cache``: buffers (B, heads, slots, d) of
    which ``rows`` slots are live (a KV cache, a ring); a step reads the live rows
    and writes one. ``recurrent``: tensors of a fixed size that a step reads and
    rewrites whole."""

    length: int
    cache: tuple[torch.Tensor, ...] = ()
    rows: int = 0
    recurrent: tuple[torch.Tensor, ...] = ()
    ring: bool = False  # the cache is a ring: a step overwrites the oldest row
    read_fraction: float = 1.0  # the share of the live cache rows a step reads (a sparse pattern's)

    def fork(self) -> DecodeState:
        """A state that steps may advance while this one stays as it is, to run the same
        steps again: a KV cache is only written past its live rows and a recurrent state
        is replaced, not written, so both are shared; a ring is copied (it is small)."""
        if not self.ring:
            return self
        return replace(self, cache=tuple(t.clone() for t in self.cache))

    @property
    def cache_bytes(self) -> int:
        """Bytes of the live cache rows."""
        return sum(t.numel() // t.shape[-2] * t.element_size() for t in self.cache) * self.rows

    @property
    def recurrent_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.recurrent)

    @property
    def nbytes(self) -> int:
        """The cache or state a step needs, in bytes (what serving must keep per sequence)."""
        return self.cache_bytes + self.recurrent_bytes

    @property
    def step_traffic_bytes(self) -> int:
        """Bytes a step must move at least: the live cache rows it reads (one row written
        is counted with them), the recurrent state read and written."""
        return round(self.cache_bytes * self.read_fraction) + 2 * self.recurrent_bytes


def group_queries(q: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """q (B, H, n, d) -> (B, kv_heads, G·n, d), G = H / kv_heads: the queries of the
    heads that share one key/value head side by side, so that they read it once
    (head h uses key/value head h // G, as ``expand_kv`` repeats them)."""
    b, h, n, d = q.shape
    return q.reshape(b, kv_heads, (h // kv_heads) * n, d)


def ungroup_queries(out: torch.Tensor, heads: int) -> torch.Tensor:
    """The inverse of ``group_queries``: (B, kv_heads, G·n, d) -> (B, H, n, d)."""
    b, _, gn, d = out.shape
    return out.reshape(b, heads, -1, d)


def expand_kv(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, kv_heads, N, d) -> (B, heads, N, d), each key/value head repeated for the
    query heads of its group (the reference meaning of shared key/value heads)."""
    groups = heads // t.shape[1]
    return t if groups == 1 else t.repeat_interleave(groups, dim=1)


def new_cache(like: torch.Tensor, capacity: int) -> torch.Tensor:
    """An empty cache buffer (B, heads, capacity, d) for rows like ``like`` (B, heads, n, d)."""
    b, h, _, d = like.shape
    return like.new_empty(b, h, capacity, d)


def kv_cache_prefill(k: torch.Tensor, v: torch.Tensor, capacity: int) -> DecodeState:
    """A KV cache for ``capacity`` tokens holding the N keys and values of a prefill."""
    n = k.shape[-2]
    if capacity < n:
        raise ValueError(f"cache capacity {capacity} is smaller than the prompt ({n} tokens)")
    keys, values = new_cache(k, capacity), new_cache(v, capacity)
    keys[:, :, :n].copy_(k)
    values[:, :, :n].copy_(v)
    return DecodeState(length=n, cache=(keys, values), rows=n)


def kv_cache_append(state: DecodeState, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                                      DecodeState]:
    """Write one token's k, v (B, kv_heads, 1, d) into the cache; the live keys and
    values (views, B, kv_heads, n + 1, d) and the state after the token."""
    keys, values = state.cache
    n = state.rows
    if n >= keys.shape[-2]:
        raise ValueError(f"the KV cache is full ({keys.shape[-2]} tokens): prefill with a larger capacity")
    keys[:, :, n:n + 1].copy_(k)
    values[:, :, n:n + 1].copy_(v)
    after = DecodeState(length=state.length + 1, cache=state.cache, rows=n + 1)
    return keys[:, :, :n + 1], values[:, :, :n + 1], after


def ring_prefill(k: torch.Tensor, v: torch.Tensor, slots: int) -> DecodeState:
    """A ring of ``slots`` rows holding the last keys and values of a prefill, token t in
    slot t mod slots (attention does not depend on the order of its keys)."""
    n = k.shape[-2]
    keys, values = new_cache(k, slots), new_cache(v, slots)
    last = min(n, slots)
    positions = torch.arange(n - last, n, device=k.device)
    keys[:, :, positions % slots] = k[:, :, n - last:]
    values[:, :, positions % slots] = v[:, :, n - last:]
    return DecodeState(length=n, cache=(keys, values), rows=last, ring=True)


def ring_append(state: DecodeState, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                                DecodeState]:
    """Write one token into its ring slot; the live keys and values and the state after."""
    keys, values = state.cache
    slots = keys.shape[-2]
    slot = state.length % slots
    keys[:, :, slot:slot + 1].copy_(k)
    values[:, :, slot:slot + 1].copy_(v)
    rows = min(state.rows + 1, slots)
    after = DecodeState(length=state.length + 1, cache=state.cache, rows=rows, ring=True)
    # Before the ring is full, tokens 0..length sit in slots 0..length.
    return keys[:, :, :rows], values[:, :, :rows], after

"""Attention Free Transformer (arXiv 2105.14103): full, simple and local modes.

    Y_t = σ(Q_t) ⊙ Σ_t' exp(K_t' + w_{t,t'}) ⊙ V_t' / Σ_t' exp(K_t' + w_{t,t'})

with Q, K, V linear projections of x (all ``dim`` wide, element-wise: AFT has
no heads, ``heads`` is accepted for the common interface only) and w a learned
pair-wise position bias shared by all channels.

* ``simple``: w = 0, so the sums are global (cumulative when causal): O(N·d).
* ``full``: w ∈ R^{N×N}; the sums are the matmul exp(w) @ (exp(K) ⊙ V), not
  K·w (a known public defect): O(N²·d).
* ``local``: w is learned inside |t−t'| < s and zero outside, computed as the
  global sum plus a banded correction (exp(w) − 1) applied blockwise: O(N·s·d),
  no N×N tensor and no Python loop over tokens (a public AFT-local rebuilds a
  T×T matrix in a loop). w is stored as its band only, one row per query
  position: ``w[t, j]`` is w_{t, t+j-(s-1)}, so the parameter is (N, 2s−1), or
  (N, s) when causal; entries pointing before the first or after the last token
  are padding and receive no gradient.

Causal: w = −∞ above the diagonal, i.e. cumulative sums (simple, local) or a
masked exp(w) (full).

Stability: K is shifted by its per-channel maximum over the sequence and w by
its per-row maximum (at least 0) before exp; each shift cancels in the ratio.
The global shift may depend on later tokens in causal mode, which changes the
result only by rounding; it assumes the values of one channel of K span less
than ~80 (float32) so that no prefix underflows. Half-precision inputs are
computed in float32.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

from attnbench.variants.decoding import DecodeState
from attnbench.variants.layer import (
    AttentionLayer,
    acc_dtype,
    causal_mask,
    check_int,
    linear_flops,
    matmul_flops,
)
from attnbench.variants.registry import register

AftMode = Literal["simple", "full", "local"]
MODES: tuple[str, ...] = get_args(AftMode)  # the hint is the one source of the choices


def full_to_band(w: torch.Tensor, window: int, causal: bool = False) -> torch.Tensor:
    """The band of an (N, N) bias in the layout of the ``local`` parameter:
    (N, 2s−1) with ``band[t, j] = w[t, t+j-(s-1)]`` (N, s when causal); zero
    where t+j-(s-1) falls outside [0, N). ``window`` is clipped to N."""
    n = w.shape[0]
    s = min(window, n)
    width = s if causal else 2 * s - 1
    cols = torch.arange(n, device=w.device)[:, None] + torch.arange(width, device=w.device) - (s - 1)
    valid = (cols >= 0) & (cols < n)
    return torch.where(valid, w.gather(1, cols.clamp(0, n - 1)), torch.zeros((), dtype=w.dtype))


def band_blocks(band: torch.Tensor, window: int, causal: bool) -> torch.Tensor:
    """The band (N, width) as N/s blocks of s queries × the 3 key blocks around
    them (2 when causal): (N/s, s, span). Query row r of a block and key column c
    of its span are s + r − c apart, i.e. band column j = c − r − 1."""
    n, width = band.shape
    s = window
    nb = -(-n // s)  # ceil(n / s) query blocks
    span = (2 if causal else 3) * s
    r = torch.arange(s, device=band.device)[:, None]
    c = torch.arange(span, device=band.device)[None, :]
    idx = c - r  # column of the band padded with one zero column in front
    idx = torch.where((idx >= 1) & (idx <= width), idx, torch.zeros_like(idx))
    padded = nn.functional.pad(band, (1, 0, 0, nb * s - n)).view(nb, s, width + 1)
    return padded.gather(2, idx.expand(nb, s, span))


def apply_band_blocks(blocks: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """out[:, t] = Σ_j band[t, j] · z[:, t+j-(s-1)] from ``band_blocks`` (nb, s, span)
    and z (B, N, F): one batched matmul per key block (2 or 3), no copy of z per block."""
    bsz, n, feat = z.shape
    nb, s, span = blocks.shape
    n_key_blocks = span // s
    # keys: one zero block before, padding (and one block when non-causal) after.
    right = nb * s - n + (n_key_blocks - 2) * s
    zb = nn.functional.pad(z, (0, 0, s, right)).view(bsz, nb + n_key_blocks - 1, s, feat)
    blocks = blocks.to(z.dtype)
    out = torch.matmul(blocks[..., :s], zb[:, :nb])  # (B, nb, s, F)
    for d in range(1, n_key_blocks):
        out = out + torch.matmul(blocks[..., d * s:(d + 1) * s], zb[:, d:d + nb])
    return out.view(bsz, nb * s, feat)[:, :n]


def banded_apply(band: torch.Tensor, z: torch.Tensor, window: int, causal: bool) -> torch.Tensor:
    """out[:, t] = Σ_j band[t, j] · z[:, t+j-(s-1)] for band (N, width), z (B, N, F):
    blocks of s queries against the key blocks around them. Memory O(N·s + N·F)."""
    return apply_band_blocks(band_blocks(band, window, causal), z)


def _exp_sum(x: torch.Tensor, w_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """e = exp(K − max_t K) and z = Σ_t e for K = x W_kᵀ (B, N, C): softmax over t
    is e / z (the library softmax over a non-last dimension is slower on CPU)."""
    k = nn.functional.linear(x, w_k)
    e = k.sub_(k.amax(dim=1, keepdim=True)).exp_()
    return e, e.sum(dim=1, keepdim=True)


class _SimpleLayer(torch.autograd.Function):
    """The whole non-causal AFT-simple layer, with a hand-written backward.

    Y = σ(Q) ⊙ g with g = Σ_t softmax_t(K) ⊙ V (B, 1, C), out = Y W_oᵀ + b_o. Same
    FLOPs as autograd, fewer ops and passes over (N, C) tensors (the projections
    dominate):
    * the bias of K cancels in the softmax and the bias of V adds to g (Σ_t p_t = 1),
      so the projections are matmuls without bias, plus b_q before the sigmoid;
    * Q, K, V are three (N, C) products, never one (N, 3C) tensor (large blocks are
      mapped and page-faulted afresh by the allocator at every call);
    * out = σ(Q) (W_o diag g)ᵀ + b_o: the (N, C) product σ(Q) ⊙ g is never formed.
    Backward, with s = σ(Q), W' = W_o diag(g) (g with b_v) and upstream dout: dW' = doutᵀ s,
    dW_o = dW' diag(g), dg_c = Σ_j dW'_jc W_o,jc, dQ = (dout W') ⊙ s(1 − s),
    dV = p ⊙ dg, dK = dV ⊙ (V − g); db_q = Σ_t dQ, db_k = 0, db_v = dg."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w_qkv: torch.Tensor, b_qkv: torch.Tensor,
                w_out: torch.Tensor, b_out: torch.Tensor) -> torch.Tensor:
        c = x.shape[-1]
        w_q, w_k, w_v = w_qkv.split(c)  # three (N, C) products: no (N, 3C) tensor
        b_q, b_v = b_qkv[:c], b_qkv[2 * c:]
        e, z = _exp_sum(x, w_k)
        v = nn.functional.linear(x, w_v)
        g = (e * v).sum(dim=1, keepdim=True).div_(z)  # (B, 1, C), without b_v
        s = nn.functional.linear(x, w_q, b_q).sigmoid_()
        gb = g + b_v
        w_g = w_out * gb  # (B, C, C): W_o diag(g + b_v) per batch element
        ctx.save_for_backward(x, w_qkv, w_out, v, e, z, g, gb, s, w_g)
        return torch.baddbmm(b_out, s, w_g.transpose(1, 2))

    @staticmethod
    def backward(ctx, dout: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w_qkv, w_out, v, e, z, g, gb, s, w_g = ctx.saved_tensors
        dw_g = torch.bmm(dout.transpose(1, 2), s)  # (B, C, C)
        dw_out = (dw_g * gb).sum(dim=0)
        dg = (dw_g * w_out).sum(dim=1, keepdim=True)  # (B, 1, C)
        dq = torch.ops.aten.sigmoid_backward(torch.bmm(dout, w_g), s)
        dv = e * (dg / z)  # p ⊙ dg
        dk = torch.sub(v, g).mul_(dv)  # V − g, both without b_v
        grads = [t.flatten(0, 1) for t in (dq, dk, dv)]
        weights = w_qkv.split(x.shape[-1])
        dx = None
        if ctx.needs_input_grad[0]:
            dx = torch.mm(grads[0], weights[0])
            for d, w in zip(grads[1:], weights[1:], strict=True):
                dx.addmm_(d, w)
            dx = dx.view_as(x)
        dw_qkv = torch.cat([torch.mm(d.t(), x.flatten(0, 1)) for d in grads])
        db_qkv = torch.cat([dq.sum(dim=(0, 1)), torch.zeros_like(dg[0, 0]), dg.sum(dim=(0, 1))])
        return dx, dw_qkv, db_qkv, dw_out, dout.sum(dim=(0, 1))


def _simple_inference(x: torch.Tensor, w_qkv: torch.Tensor, b_qkv: torch.Tensor,
                      w_out: torch.Tensor, b_out: torch.Tensor) -> torch.Tensor:
    """Forward only, as ``_SimpleLayer`` but V is never formed: Σ_t p_tc (W_v x_t)_c
    = Σ_j W_v,cj (Pᵀ X)_cj, one (C, N) @ (N, C) product in place of the (N, C) values
    and the two passes over them."""
    c = x.shape[-1]
    w_q, w_k, w_v = w_qkv.split(c)
    e, z = _exp_sum(x, w_k)
    ex = torch.bmm(e.transpose(1, 2), x)  # (B, C, C)
    g = (ex * w_v).sum(dim=-1).unsqueeze(1).div_(z) + b_qkv[2 * c:]  # (B, 1, C)
    s = nn.functional.linear(x, w_q, b_qkv[:c]).sigmoid_()
    return torch.baddbmm(b_out, s, (w_out * g).transpose(1, 2))


@register("aft", family="aft", paper="2105.14103",
          complexity="O(N·d) simple, O(N·s·d) local, O(N²·d) full", causal=True)
class AFT(AttentionLayer):
    """Attention Free Transformer: sigmoid-gated, position-biased weighted mean
    of the values with weights exp(K + w); simple, local or full bias.

    Parameters:
        mode: simple: no position bias; local: a bias within the window; full: an N×N bias
        window: s: width of the local bias (mode local)
    """

    def __init__(self, dim: int, heads: int, seq_len: int, causal: bool = False,
                 mode: AftMode = "simple", window: int = 64) -> None:
        super().__init__(dim, heads, seq_len, causal)
        if mode not in MODES:
            raise ValueError(f"aft mode must be one of {', '.join(MODES)}, got {mode!r}")
        check_int("aft window", window)
        self.mode = mode
        self.window = window
        if mode != "simple":
            self.decode_refusal = (f"mode {mode} has a position bias w with one row per position of the N "
                                   "it was built for: a token past N has none (mode simple decodes)")
        self.s = min(window, seq_len)  # effective local window
        self.to_qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.w: nn.Parameter | None = None
        if mode == "full":
            self.w = nn.Parameter(torch.randn(seq_len, seq_len) * 0.02)
        elif mode == "local":
            width = self.s if causal else 2 * self.s - 1
            self.w = nn.Parameter(torch.randn(seq_len, width) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        if self.mode != "simple" and n != self.seq_len:
            raise ValueError(f"aft mode {self.mode!r} was built for seq_len {self.seq_len}, got {n}: "
                             "its bias w has one row per position")
        dtype = acc_dtype(x.dtype)
        if self.mode == "simple" and not self.causal:
            args = [t.to(dtype) for t in (x, self.to_qkv.weight, self.to_qkv.bias,
                                          self.out.weight, self.out.bias)]
            if torch.is_grad_enabled() and any(t.requires_grad for t in args):
                # Autocast off: its products would otherwise drop to half precision inside
                # the Function, and backward would meet mixed dtypes.
                with torch.autocast(x.device.type, enabled=False):
                    return _SimpleLayer.apply(*args).to(x.dtype)
            return _simple_inference(*args).to(x.dtype)
        # three (N, C) projections rather than one (N, 3C) tensor
        weights, biases = self.to_qkv.weight.split(self.dim), self.to_qkv.bias.split(self.dim)
        q, k, v = (nn.functional.linear(x, w, b).to(dtype) for w, b in zip(weights, biases, strict=True))
        e = torch.exp(k - k.detach().amax(dim=1, keepdim=True))
        ev = e * v
        if self.mode == "simple":  # causal: cumulative sums
            num, den = ev.cumsum(dim=1), e.cumsum(dim=1)
        elif self.mode == "full":
            num, den = self._full(torch.cat([ev, e], dim=-1)).chunk(2, dim=-1)
        else:
            num, den = self._local(ev, e)
        y = torch.sigmoid(q) * (num / den)
        return self.out(y.to(x.dtype))

    decode_refusal = None  # mode simple: running sums Σ exp(K)⊙V and Σ exp(K)

    def _qkv(self, x: torch.Tensor, parts: tuple[int, ...] = (0, 1, 2)) -> tuple[torch.Tensor, ...]:
        """The projections ``parts`` (0: q, 1: k, 2: v) of x, in float32 at least."""
        weights, biases = self.to_qkv.weight.split(self.dim), self.to_qkv.bias.split(self.dim)
        dtype = acc_dtype(x.dtype)
        return tuple(nn.functional.linear(x, weights[i], biases[i]).to(dtype) for i in parts)

    def prefill(self, x: torch.Tensor, capacity: int, output: bool = True) -> tuple[torch.Tensor | None,
                                                                                   DecodeState]:
        """The causal forward and the running sums after N tokens, in the frame m of
        each channel's largest key so far (the shift cancels in the ratio)."""
        self.check_decodes()
        k, v = self._qkv(x, parts=(1, 2))
        frame = k.amax(dim=1, keepdim=True)
        e = torch.exp(k - frame)
        state = ((e * v).sum(dim=1, keepdim=True), e.sum(dim=1, keepdim=True), frame)
        return self(x) if output else None, DecodeState(length=x.shape[1], recurrent=state)

    def step(self, x: torch.Tensor, state: DecodeState) -> tuple[torch.Tensor, DecodeState]:
        self.check_decodes()
        q, k, v = self._qkv(x)
        num, den, frame = state.recurrent
        new_frame = torch.maximum(frame, k)
        decay, e = torch.exp(frame - new_frame), torch.exp(k - new_frame)
        num, den = num * decay + e * v, den * decay + e
        y = torch.sigmoid(q) * (num / den)
        return self.out(y.to(x.dtype)), DecodeState(length=state.length + 1, recurrent=(num, den, new_frame))

    def _full(self, z: torch.Tensor) -> torch.Tensor:
        """exp(w) @ z with w = −∞ above the diagonal when causal."""
        w = self.w.to(z.dtype)
        if self.causal:
            w = w.masked_fill(~causal_mask(w.shape[0], w.shape[1], device=w.device), float("-inf"))
        w = w - w.detach().amax(dim=1, keepdim=True)  # row max: finite, the diagonal is allowed
        return torch.matmul(torch.exp(w), z)

    def _local(self, *zs: torch.Tensor) -> list[torch.Tensor]:
        """Global (or cumulative) sum of each z plus the band correction (exp(w) − 1) z.

        With m_t = max(0, max_j w[t, j]) the row is scaled by exp(−m_t): weight
        exp(−m_t) outside the band and exp(w − m_t) inside, so nothing overflows."""
        band = self.w.to(zs[0].dtype)
        m = band.detach().amax(dim=1, keepdim=True).clamp(min=0)
        outside = torch.exp(-m)  # (N, 1)
        blocks = band_blocks(torch.exp(band - m) - outside, self.s, self.causal)
        out = []
        for z in zs:
            total = z.cumsum(dim=1) if self.causal else z.sum(dim=1, keepdim=True)
            out.append(apply_band_blocks(blocks, z) + outside * total)
        return out

    def flops(self, batch: int, seq_len: int) -> int:
        tokens, c = batch * seq_len, self.dim
        proj = linear_flops(tokens, c, 3 * c) + linear_flops(tokens, c, c)
        # shift, exp, e⊙v, two sums, divide, sigmoid, gate
        elementwise = 8 * tokens * c
        if self.mode == "full":
            n = seq_len
            core = 3 * n * n + batch * matmul_flops(n, 2 * c, n)  # shift, exp of w; the products
        elif self.mode == "local":
            s = self.s
            n_pad = -(-seq_len // s) * s
            span = (2 if self.causal else 3) * s
            core = 4 * seq_len * self.w.shape[1] + batch * matmul_flops(n_pad, 2 * c, span) \
                + 2 * tokens * 2 * c  # band weights; block products; scale and add the global sum
        else:
            core = 0
        return proj + elementwise + core

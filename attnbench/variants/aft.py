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

import torch
from torch import nn

from attnbench.variants.layer import AttentionLayer, causal_mask, linear_flops, matmul_flops
from attnbench.variants.registry import register

MODES = ("simple", "full", "local")


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


def banded_apply(band: torch.Tensor, z: torch.Tensor, window: int, causal: bool) -> torch.Tensor:
    """out[:, t] = Σ_j band[t, j] · z[:, t+j-(s-1)] for band (N, width), z (B, N, F).

    Blocks of s queries against the 3 key blocks around them (2 when causal):
    one batched matmul of (N/s) small (s × 3s) weight matrices, built from the
    band by a gather. Memory O(N·s + N·F)."""
    bsz, n, feat = z.shape
    s, width = window, band.shape[1]
    nb = -(-n // s)  # ceil(n / s) query blocks
    n_pad = nb * s
    span_blocks = 2 if causal else 3
    # keys: one zero block before, padding (and one block when non-causal) after.
    right = n_pad - n + (0 if causal else s)
    zp = nn.functional.pad(z, (0, 0, s, right)).view(bsz, nb + span_blocks - 1, s, feat)
    keys = torch.cat([zp[:, i:i + nb] for i in range(span_blocks)], dim=2)  # (B, nb, span, F)
    # weights: query row r of a block, key column c of its span sees offset c - s - r,
    # i.e. band column j = c - r - 1; column 0 of the padded band is the zero.
    span = span_blocks * s
    r = torch.arange(s, device=z.device)[:, None]
    c = torch.arange(span, device=z.device)[None, :]
    idx = c - r
    idx = torch.where((idx >= 1) & (idx <= width), idx, torch.zeros_like(idx))
    bandz = nn.functional.pad(band, (1, 0, 0, n_pad - n)).view(nb, s, width + 1)
    weights = bandz.gather(2, idx.expand(nb, s, span))  # (nb, s, span)
    out = torch.matmul(weights.to(z.dtype), keys)  # (B, nb, s, F)
    return out.reshape(bsz, n_pad, feat)[:, :n]


class _SimpleLayer(torch.autograd.Function):
    """The whole non-causal AFT-simple layer, with a hand-written backward.

    Y = σ(Q) ⊙ g with g = Σ_t softmax_t(K) ⊙ V (B, 1, C), out = Y W_oᵀ + b_o. Same
    FLOPs as autograd, fewer ops and passes over (N, C) tensors (the projections
    dominate):
    * the bias of K cancels in the softmax and the bias of V adds to g (Σ_t p_t = 1),
      so the projection is one matmul without bias, plus b_q before the sigmoid;
    * out = σ(Q) (W_o diag g)ᵀ + b_o: the (N, C) product σ(Q) ⊙ g is never formed.
    Backward, with s = σ(Q), W' = W_o diag(g) and upstream dout: dW' = doutᵀ s,
    dW_o = dW' diag(g), dg_c = Σ_j dW'_jc W_o,jc, dQ = (dout W') ⊙ s(1 − s),
    dV = p ⊙ dg, dK = dV ⊙ (V − g); db_q = Σ_t dQ, db_k = 0, db_v = dg."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w_qkv: torch.Tensor, b_qkv: torch.Tensor,
                w_out: torch.Tensor, b_out: torch.Tensor) -> torch.Tensor:
        c = x.shape[-1]
        q, k, v = torch.matmul(x, w_qkv.t()).chunk(3, dim=-1)
        b_q, b_v = b_qkv[:c], b_qkv[2 * c:]
        e = torch.sub(k, k.amax(dim=1, keepdim=True)).exp_()  # per-channel max: cancels in p
        z = e.sum(dim=1, keepdim=True)
        g = (e * v).sum(dim=1, keepdim=True).div_(z)  # (B, 1, C), without b_v
        s = torch.add(q, b_q).sigmoid_()
        gb = g + b_v
        w_g = w_out * gb  # (B, C, C): W_o diag(g) per batch element
        ctx.save_for_backward(x, w_qkv, w_out, v, e, z, g, gb, s, w_g)
        return torch.baddbmm(b_out, s, w_g.transpose(1, 2))

    @staticmethod
    def backward(ctx, dout: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w_qkv, w_out, v, e, z, g, gb, s, w_g = ctx.saved_tensors
        dw_g = torch.bmm(dout.transpose(1, 2), s)  # (B, C, C)
        dw_out = (dw_g * gb).sum(dim=0)
        dg = (dw_g * w_out).sum(dim=1, keepdim=True)  # (B, 1, C)
        dqkv = x.new_empty(*x.shape[:2], 3 * x.shape[2])
        dq, dk, dv = dqkv.chunk(3, dim=-1)
        torch.ops.aten.sigmoid_backward.grad_input(torch.bmm(dout, w_g), s, grad_input=dq)
        torch.mul(e, dg / z, out=dv)  # p ⊙ dg with p = e / z
        torch.sub(v, g, out=dk).mul_(dv)  # V − g, both without b_v
        dx = dqkv @ w_qkv if ctx.needs_input_grad[0] else None
        dw_qkv = dqkv.flatten(0, 1).t() @ x.flatten(0, 1)
        db_qkv = torch.cat([dq.sum(dim=(0, 1)), torch.zeros_like(dg[0, 0]), dg.sum(dim=(0, 1))])
        return dx, dw_qkv, db_qkv, dw_out, dout.sum(dim=(0, 1))


@register("aft", family="aft", paper="2105.14103",
          complexity="O(N·d) simple, O(N·s·d) local, O(N²·d) full", causal=True)
class AFT(AttentionLayer):
    """Attention Free Transformer: sigmoid-gated, position-biased weighted mean
    of the values with weights exp(K + w); simple, local or full bias."""

    def __init__(self, dim: int, heads: int, seq_len: int, causal: bool = False,
                 mode: str = "simple", window: int = 64) -> None:
        super().__init__(dim, heads, seq_len, causal)
        if mode not in MODES:
            raise ValueError(f"aft mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not isinstance(window, int) or isinstance(window, bool) or window <= 0:
            raise ValueError(f"aft window must be a positive integer, got {window!r}")
        self.mode = mode
        self.window = window
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
        dtype = torch.promote_types(x.dtype, torch.float32)
        if self.mode == "simple" and not self.causal:
            args = [t.to(dtype) for t in (x, self.to_qkv.weight, self.to_qkv.bias,
                                          self.out.weight, self.out.bias)]
            return _SimpleLayer.apply(*args).to(x.dtype)
        q, k, v = self.to_qkv(x).to(dtype).chunk(3, dim=-1)
        e = torch.exp(k - k.detach().amax(dim=1, keepdim=True))
        if self.mode == "simple":  # causal: cumulative sums
            num, den = e.mul(v).cumsum(dim=1), e.cumsum(dim=1)
        else:
            sums = self._full(torch.cat([e * v, e], dim=-1)) if self.mode == "full" \
                else self._local(torch.cat([e * v, e], dim=-1))
            num, den = sums.chunk(2, dim=-1)
        y = torch.sigmoid(q) * (num / den)
        return self.out(y.to(x.dtype))

    def _full(self, z: torch.Tensor) -> torch.Tensor:
        """exp(w) @ z with w = −∞ above the diagonal when causal."""
        w = self.w.to(z.dtype)
        if self.causal:
            w = w.masked_fill(~causal_mask(w.shape[0], w.shape[1], device=w.device), float("-inf"))
        w = w - w.detach().amax(dim=1, keepdim=True)  # row max: finite, the diagonal is allowed
        return torch.matmul(torch.exp(w), z)

    def _local(self, z: torch.Tensor) -> torch.Tensor:
        """Global (or cumulative) sum of z plus the band correction (exp(w) − 1) z.

        With m_t = max(0, max_j w[t, j]) the row is scaled by exp(−m_t): weight
        exp(−m_t) outside the band and exp(w − m_t) inside, so nothing overflows."""
        band = self.w.to(z.dtype)
        m = band.detach().amax(dim=1, keepdim=True).clamp(min=0)
        outside = torch.exp(-m)  # (N, 1)
        correction = torch.exp(band - m) - outside
        total = z.cumsum(dim=1) if self.causal else z.sum(dim=1, keepdim=True)
        return outside * total + banded_apply(correction, z, self.s, self.causal)

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

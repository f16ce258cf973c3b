"""Change the order of the products: linear attention (elu+1) and Performer (FAVOR+).

softmax(q kᵀ s) v needs the N×N matrix because exp(q·k) does not factor. Replace
it by a kernel φ(q)·φ(k) with an explicit feature map φ (f features) and the
products can be reordered: φ(Q) (φ(K)ᵀ V) costs O(N·f·d) instead of O(N²·d).

* ``linear``: Katharopoulos et al., "Transformers are RNNs" (arXiv 2006.16236),
  φ(x) = elu(x) + 1, f = d.
* ``performer``: Choromanski et al., "Rethinking Attention with Performers"
  (arXiv 2009.14794), FAVOR+ positive orthogonal random features,
  φ(x) = m^-1/2 exp(W x' − ‖x'‖²/2), x' = d^-1/4 x, so that
  E[φ(q)·φ(k)] = exp(qᵀk/√d), the softmax kernel.

Both run through :func:`kernel_attention`:

    out_i = φ(q_i)ᵀ S_i / (φ(q_i)ᵀ z_i + eps),  S_i = Σ_j φ(k_j) v_jᵀ,  z_i = Σ_j φ(k_j)

with j over all keys, or j ≤ i when causal. The non-causal form is two products
around an f×(d+1) state [S z], with a hand-written backward
(:class:`_NonCausalKernelAttention`).
The causal form is chunked: inside a chunk of c tokens the masked c×c quadratic
form, between chunks a carried state (an exclusive prefix sum over the per-chunk
states, shape (N/c, f, d+1), never N×f×d); there the normaliser rides along with
the values, extended by a column of ones, so one product gives both φᵀS and φᵀz.
In exact arithmetic the result does not depend on c.
:func:`recurrent_kernel_attention` is the token-by-token RNN form of the same
computation, the reference for tests.

In a layer, non-causal ``linear`` goes further and folds the value and output
projections into its d×d states (:class:`_LinearAttentionLayer`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from attnbench.variants.layer import (
    AttentionCore,
    acc_dtype,
    check_int,
    in_head_groups,
    matmul_flops,
    softmax_flops,
)
from attnbench.variants.registry import register

#: added to the normaliser φ(q)ᵀz; for Performer in units of the stabilised features.
DEFAULT_EPS = 1e-6


def _with_ones(v: torch.Tensor) -> torch.Tensor:
    """(…, N, d) -> (…, N, d+1), row-major: with this last column, φ(K)ᵀ[v 1] gives the
    state and normaliser [S z] in one product."""
    d = v.shape[-1]
    v1 = v.new_empty(v.shape[:-1] + (d + 1,))
    v1[..., :d] = v
    v1[..., d] = 1.0
    return v1


class _NonCausalKernelAttention(torch.autograd.Function):
    """The non-causal form out_i = φ(q_i)ᵀS / (φ(q_i)ᵀz + eps) with a hand-written
    backward: autograd's version of the same few products spends much of its time in
    element-wise passes (slices, broadcasts, mismatched layouts) over N-sized tensors.

    Shapes: phi_q, phi_k (…, N, f); v (…, N, d). The state [S z] (f×(d+1)) gives
    numerator and normaliser in one product. It is computed from a row-major copy
    [v 1] as [v 1]ᵀφ(K), so that every N-sized gradient is one product and comes out
    row-major, except for inference with few features (f <= d, elu+1): there the
    product with v in place is faster than the copy (measured on CPU)."""

    @staticmethod
    def forward(ctx, phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor,
                eps: float) -> torch.Tensor:
        d = v.shape[-1]
        training = any(ctx.needs_input_grad[:3])
        if training or phi_k.shape[-1] > d:
            v1 = _with_ones(v)
            state = torch.matmul(v1.transpose(-1, -2), phi_k).transpose(-1, -2)  # [S z]
        else:
            state = torch.cat([torch.matmul(phi_k.transpose(-1, -2), v),  # S = Σ_j φ(k_j) v_jᵀ
                               phi_k.sum(-2).unsqueeze(-1)], dim=-1)  # z = Σ_j φ(k_j)
        out1 = torch.matmul(phi_q, state)  # (N, d+1): φᵀS, φᵀz
        num, den = out1.split([d, 1], dim=-1)
        den.add_(eps)
        out = num.div_(den)  # in place: a (N, d) view of out1
        if training:
            ctx.save_for_backward(phi_q, phi_k, v1, state, den, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        phi_q, phi_k, v1, state, den, out = ctx.saved_tensors
        d = out.shape[-1]
        # Gradient of (φᵀS, φᵀz): (grad / den, −Σ grad·out / den), row-major.
        grad1 = grad.new_empty(grad.shape[:-1] + (d + 1,))
        grad_num = torch.div(grad, den, out=grad1[..., :d])
        torch.sum(grad_num * out, dim=-1, out=grad1[..., d]).neg_()
        grad_q = torch.matmul(grad1, state.transpose(-1, -2))
        grad_state_t = torch.matmul(grad1.transpose(-1, -2), phi_q)  # (d+1, f)
        grad_k = torch.matmul(v1, grad_state_t)
        grad_v = torch.matmul(phi_k, grad_state_t[..., :d, :].transpose(-1, -2))
        return grad_q, grad_k, grad_v, None


def kernel_attention(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, *,
                     causal: bool = False, chunk: int = 64, eps: float = DEFAULT_EPS,
                     log_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised kernel attention with the products reordered.

    phi_q, phi_k: (B, H, N, f) non-negative features; v: (B, H, N, d) -> (B, H, N, d).

    ``log_scale`` (B, H, N), causal only, non-decreasing along N: key j's features are
    given divided by exp(log_scale[j]) (Performer's running-max stabiliser). Query i then
    works in the frame log_scale[i]: key j ≤ i is weighted by exp(log_scale[j] −
    log_scale[i]) ≤ 1, so nothing overflows, and the output at i depends on keys ≤ i
    only, numerically too. None: every key on the same scale.
    """
    if not causal:
        return _NonCausalKernelAttention.apply(phi_q, phi_k, v, eps)

    v1 = _with_ones(v)
    b, h, n, f = phi_q.shape
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    if pad:  # zero features: padded keys add nothing, padded queries are dropped below
        phi_q, phi_k, v1 = (F.pad(t, (0, 0, 0, pad)) for t in (phi_q, phi_k, v1))
        if log_scale is not None:
            log_scale = F.pad(log_scale, (0, pad), mode="replicate")
    qc = phi_q.reshape(b, h, n_chunks, chunk, f)
    kc = phi_k.reshape(b, h, n_chunks, chunk, f)
    vc = v1.reshape(b, h, n_chunks, chunk, -1)

    # Inside each chunk: the quadratic form, lower triangle (j <= i) only: c×c.
    local = torch.matmul(qc, kc.transpose(-1, -2))
    if log_scale is not None:
        sc = log_scale.reshape(b, h, n_chunks, chunk)
        # exp(s_j − s_i), <= 1 below the diagonal; clamped above it (masked next anyway).
        local = local * torch.exp((sc.unsqueeze(-2) - sc.unsqueeze(-1)).clamp_(max=0.0))
    out = torch.matmul(local.tril(), vc)

    # Between chunks: the state of every chunk, then an exclusive prefix over chunks.
    if log_scale is None:
        states = torch.matmul(vc.transpose(-1, -2), kc).transpose(-1, -2)  # (B, H, C, f, d+1)
        prefix = F.pad(states[:, :, :-1].cumsum(dim=2), (0, 0, 0, 0, 1, 0))
        out = out + torch.matmul(qc, prefix)
    else:
        # Chunk c's state in the frame of its last token, ends[c]; the running state is
        # carried from frame to frame (factors <= 1): C steps of f×(d+1) work. Query i
        # of chunk c reads it from frame ends[c−1] <= s_i.
        ends = sc[..., -1]  # (B, H, C)
        weights = torch.exp(sc - ends.unsqueeze(-1)).unsqueeze(-1)  # (B, H, C, c, 1)
        states = torch.matmul((vc * weights).transpose(-1, -2), kc).transpose(-1, -2)
        decay = torch.exp(ends[..., :-1] - ends[..., 1:])[..., None, None].unbind(2)
        # unbind, not states[:, :, c]: each select's backward would build a full-size zero tensor.
        per_chunk = states.unbind(2)
        prefix = [torch.zeros_like(per_chunk[0]), per_chunk[0]]  # read by chunks 0, 1
        for c in range(2, n_chunks):
            prefix.append(prefix[-1] * decay[c - 2] + per_chunk[c - 1])
        prefix = torch.stack(prefix[:n_chunks], dim=2)
        # Frame each chunk reads in: ends[c−1]; chunk 0 reads zeros, any frame <= s will do.
        read_frame = torch.cat([sc[..., :1, 0], ends[..., :-1]], dim=-1)
        readout = torch.matmul(qc, prefix) * torch.exp(read_frame.unsqueeze(-1) - sc).unsqueeze(-1)
        out = out + readout
    out = out.reshape(b, h, n_chunks * chunk, -1)[:, :, :n]
    num, den = out.split([out.shape[-1] - 1, 1], dim=-1)
    return num / (den + eps)


def recurrent_kernel_attention(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor,
                               eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Causal kernel attention token by token, the RNN view of arXiv 2006.16236 §3.4:
    S_i = S_{i−1} + φ(k_i) v_iᵀ, z_i = z_{i−1} + φ(k_i), out_i = φ(q_i)ᵀS_i / (φ(q_i)ᵀz_i + eps).

    O(N) Python steps: a reference for tests, not for speed."""
    state = phi_k.new_zeros(phi_k.shape[:-2] + (phi_k.shape[-1], v.shape[-1]))
    norm = phi_k.new_zeros(phi_k.shape[:-2] + (phi_k.shape[-1],))
    outs = []
    for i in range(phi_q.shape[-2]):
        state = state + phi_k[..., i, :, None] * v[..., i, None, :]
        norm = norm + phi_k[..., i, :]
        q_i = phi_q[..., i, :]
        num = torch.einsum("...f,...fd->...d", q_i, state)
        den = (q_i * norm).sum(-1, keepdim=True)
        outs.append(num / (den + eps))
    return torch.stack(outs, dim=-2)


def _kernel_attention_flops(bh: int, n: int, f: int, d: int, causal: bool, chunk: int,
                            scaled: bool = False) -> int:
    """FLOPs of :func:`kernel_attention` for bh (batch × heads) sequences; ``scaled``:
    with a causal ``log_scale``."""
    dv = d + 1  # values and the ones column of the normaliser
    if not causal:
        products = matmul_flops(f, dv, n) + matmul_flops(n, dv, f)
        return bh * (products + 2 * n * d)  # + eps, divide
    c = min(chunk, n)
    padded = -(-n // chunk) * chunk
    n_chunks = padded // chunk
    local = n_chunks * (matmul_flops(c, c, f) + matmul_flops(c, dv, c))
    states = matmul_flops(f, dv, padded)  # per-chunk states, summed over chunks
    prefix = n_chunks * f * dv
    readout = matmul_flops(padded, dv, f) + padded * dv  # + add to the local part
    # frames: exp(s_j − s_i) on the c×c blocks (3), weights of v and of the readout (3 each)
    frames = 3 * padded * c + 6 * padded * dv + 3 * n_chunks * f * dv if scaled else 0
    return bh * (local + states + prefix + readout + frames + 2 * n * d)


class _EluPlusOne(torch.autograd.Function):
    """elu(x) + 1, differentiated from the saved elu(x) (one pass, matching layouts;
    autograd's elu backward reads x, strided unlike its gradient)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        # q, k arrive as strided views of the fused projection: row-major features
        # make the products that follow (and this backward) faster than the copy costs.
        e = F.elu(x.contiguous())
        ctx.save_for_backward(e)
        return e + 1.0

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (e,) = ctx.saved_tensors
        return torch.ops.aten.elu_backward(grad, 1.0, 1.0, 1.0, True, e)


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """φ(x) = elu(x) + 1 > 0 (arXiv 2006.16236, eq. 7)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _EluPlusOne.apply(x)
    return F.elu(x).add_(1.0)  # inference: no backward to serve, keep x's layout, no copy


class _LinearAttentionLayer(torch.autograd.Function):
    """The whole non-causal linear-attention layer, with both projections that touch
    the values folded into the d×d states by associativity:

        S_h = φ(K_h)ᵀ V_h = (φ(K)ᵀ X)_h W_v,hᵀ        (P = φ(K)ᵀ X: one product, no V)
        out = Σ_h (φ(Q_h) S_h / den_h) W_o,hᵀ + b = U M + b,
        U = [φ(Q_h) / den_h]_h,  M = [S_h W_o,hᵀ]_h,  den_h = φ(Q_h) z_h + eps,  z_h = Σ_j φ(k_j)

    where W_v,h are the rows of the value projection and W_o,h the columns of the
    output projection that belong to head h. X (N × dim) is projected to Q and K only;
    P (H·d × dim) and U M (N × H·d by H·d × dim) are products of the sizes of the value
    and output projections they replace, and the per-head products over N
    (φ(K_h)ᵀV_h, φ(Q_h)S_h), the value tensor and the merge of the heads disappear. The
    normaliser of every head is one product with a block-diagonal (H·d × H) matrix of
    the z_h. Backward by hand: every product over N is dim-sized.

    x: (B, N, dim); w_qkv: (3·H·d, dim), rows q, k, v; w_out: (dim_out, H·d);
    b_out: (dim_out,) or None -> (B, N, dim_out)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w_qkv: torch.Tensor, w_out: torch.Tensor,
                b_out: torch.Tensor | None, heads: int, eps: float) -> torch.Tensor:
        b, n, _ = x.shape
        width = w_qkv.shape[0] // 3
        h, d = heads, width // heads
        qk = F.linear(x, w_qkv[:2 * width])  # (B, N, 2·H·d)
        phi_q = F.elu(qk[..., :width]).add_(1.0)  # (B, N, H·d)
        phi_k = F.elu(qk[..., width:]).add_(1.0)
        del qk
        proj = torch.matmul(phi_k.transpose(1, 2), x)  # P = φ(K)ᵀX: (B, H·d, dim)
        w_v = w_qkv[2 * width:].view(h, d, -1)  # W_v,h: (H, d, dim)
        state = torch.matmul(proj.view(b, h, d, -1), w_v.transpose(1, 2))  # S_h: (B, H, d, d)
        z = phi_k.view(b, n, h, d).sum(1)  # (B, H, d)
        den = torch.matmul(phi_q, _block_diagonal(z)).add_(eps)  # (B, N, H)
        u = phi_q.view(b, n, h, d).div_(den.unsqueeze(-1)).view(b, n, width)  # in place: U
        folded = torch.matmul(state, _weight_heads(w_out, h, d)).reshape(b, width, -1)  # M
        out = torch.matmul(u, folded) if b_out is None else torch.baddbmm(b_out, u, folded)
        ctx.save_for_backward(x, w_qkv, w_out, phi_k, u, den, z, proj, state, folded)
        ctx.heads = heads
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w_qkv, w_out, phi_k, u, den, z, proj, state, folded = ctx.saved_tensors
        b, n, dim = x.shape
        width = w_qkv.shape[0] // 3
        h, d = ctx.heads, width // ctx.heads
        grad = grad.contiguous()  # read by two products
        grad_bias = grad.sum((0, 1)) if ctx.needs_input_grad[3] else None
        # out = U M + b
        grad_folded = torch.matmul(u.transpose(1, 2), grad).view(b, h, d, -1)  # dL/dM
        grad_u = torch.matmul(grad, folded.transpose(1, 2)).view(b, n, h, d)  # dL/dU
        # M_h = S_h W_o,hᵀ
        w_out_heads = _weight_heads(w_out, h, d)  # (H, d, dim_out): W_o,hᵀ
        grad_state = torch.matmul(grad_folded, w_out_heads.transpose(-1, -2))  # (B, H, d, d)
        needs_x, needs_w_qkv, needs_w_out = ctx.needs_input_grad[:3]
        grad_w_out = grad_w_qkv = grad_x = None
        if needs_w_out:
            grad_w_out = torch.matmul(state.transpose(-1, -2), grad_folded).sum(0)  # (H, d, dim_out)
            grad_w_out = grad_w_out.permute(2, 0, 1).reshape(-1, width)
        if not (needs_x or needs_w_qkv):
            return None, None, grad_w_out, grad_bias, None, None
        # S_h = P_h W_v,hᵀ
        w_v = w_qkv[2 * width:].view(h, d, -1)
        grad_proj = torch.matmul(grad_state, w_v).view(b, width, dim)  # dL/dP
        # U = φ(Q)/den, den = φ(Q)·z + eps: with c = dL/dU · U per token and head,
        # dL/dφ(Q) = (dL/dU − c z) / den and dL/dz = −Σ_n c_n U_n.
        u_heads = u.view(b, n, h, d)
        work = grad_u * u_heads  # (B, N, H, d) scratch, reused below
        c = work.sum(-1)  # (B, N, H)
        grad_z = -torch.einsum("bnh,bnhd->bhd", c, u_heads)
        grad_u.addcmul_(c.unsqueeze(-1), z.unsqueeze(1), value=-1.0).div_(den.unsqueeze(-1))  # dL/dφ(Q)
        # dφ/dx of φ = elu + 1 is min(φ, 1) (1 where x > 0, exp(x) = φ elsewhere); φ(Q) = U·den.
        grad_qk = grad.new_empty(b, n, 2, h, d)  # dL/d[Q K], in the q/k projection's layout
        torch.mul(grad_u, torch.mul(u_heads, den.unsqueeze(-1), out=work).clamp_(max=1.0),
                  out=grad_qk[:, :, 0])
        # P = φ(K)ᵀX, z = Σ φ(K): dL/dφ(K) = X dL/dPᵀ + dL/dz, and X gets φ(K) dL/dP.
        grad_phi_k = torch.matmul(x, grad_proj.transpose(1, 2)).view(b, n, h, d).add_(grad_z.unsqueeze(1))
        torch.mul(grad_phi_k, torch.clamp(phi_k.view(b, n, h, d), max=1.0, out=work), out=grad_qk[:, :, 1])
        grad_qk = grad_qk.view(b * n, 2 * width)
        if needs_x:
            grad_x = torch.matmul(phi_k, grad_proj).view(b * n, dim)
            grad_x = grad_x.addmm_(grad_qk, w_qkv[:2 * width]).view(b, n, dim)  # + dL/d[Q K] [W_q; W_k]
        if needs_w_qkv:
            grad_w_v = torch.matmul(grad_state.transpose(-1, -2), proj.view(b, h, d, -1)).sum(0)
            grad_w_qkv = torch.cat([torch.mm(grad_qk.t(), x.reshape(b * n, dim)), grad_w_v.view(width, dim)])
        return grad_x, grad_w_qkv, grad_w_out, grad_bias, None, None


def _autocast(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: CUDA autocast only
        return device_type == "cuda" and torch.is_autocast_enabled()


def _block_diagonal(z: torch.Tensor) -> torch.Tensor:
    """z (B, H, d) -> (B, H·d, H), z_h in rows h·d … h·d + d − 1 of column h."""
    b, h, d = z.shape
    blocks = z.new_zeros(b, h, d, h)
    blocks.diagonal(dim1=1, dim2=3).copy_(z.transpose(1, 2))
    return blocks.view(b, h * d, h)


def _weight_heads(weight: torch.Tensor, h: int, d: int) -> torch.Tensor:
    """The output projection's weight (dim_out, H·d) as W_hᵀ per head: (H, d, dim_out)."""
    return weight.view(-1, h, d).permute(1, 2, 0)


@register("linear", family="kernel", paper="2006.16236", complexity="O(N·d²)", causal=True)
class LinearAttention(AttentionCore):
    """Linear attention (Transformers are RNNs): φ = elu + 1 and the products reordered,
    φ(Q)(φ(K)ᵀV) normalised by φ(Q)φ(K)ᵀ1; causal by chunked prefix sums."""

    approximates_softmax = True
    linear_in_values = True

    def __init__(self, heads: int, head_dim: int, seq_len: int, causal: bool = False,
                 chunk: int = 64) -> None:
        super().__init__(heads, head_dim, seq_len, causal)
        self.chunk = check_int("linear chunk", chunk)
        self.eps = DEFAULT_EPS

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return elu_feature_map(x)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        dt = acc_dtype(q.dtype)
        with torch.autocast(q.device.type, enabled=False):  # keep the sums over N in float32
            out = kernel_attention(self.feature_map(q.to(dt)), self.feature_map(k.to(dt)), v.to(dt),
                                   causal=self.causal, chunk=self.chunk, eps=self.eps)
        return out.to(v.dtype)

    def whole_layer(self, x: torch.Tensor, qkv: torch.nn.Linear,
                    out: torch.nn.Linear) -> torch.Tensor | None:
        """Not causal, in float32 or float64: the layer with the value and output
        projections folded into the states (:class:`_LinearAttentionLayer`), the same
        function with fewer and larger products. Otherwise None, the standard
        projections and core: causal; half precision or autocast (the core keeps its
        sums over N in float32, the folded form has no such split); a q/k/v bias;
        torch.compile (which fuses the plain form itself)."""
        if (self.causal or x.dtype not in (torch.float32, torch.float64) or qkv.bias is not None
                or _autocast(x.device.type) or torch.compiler.is_compiling()):
            return None
        return _LinearAttentionLayer.apply(x, qkv.weight, out.weight, out.bias, self.heads, self.eps)

    def flops(self, batch: int, seq_len: int) -> int:
        bh, d = batch * self.heads, self.head_dim
        features = 2 * 2 * seq_len * d  # elu and +1 on q and k
        return bh * features + _kernel_attention_flops(bh, seq_len, d, d, self.causal, self.chunk)


def orthogonal_gaussian_matrix(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    """W ∈ R^{rows×cols} as in FAVOR+ (arXiv 2009.14794, §4): stacked blocks of cols
    orthonormal rows (Q of the QR decomposition of a Gaussian cols×cols matrix; the
    last block truncated), each row rescaled to the norm of an independent Gaussian
    vector (chi distributed with cols degrees of freedom), so that every row is
    marginally N(0, I) while rows within a block are exactly orthogonal."""
    blocks = []
    for _ in range(-(-rows // cols)):
        gaussian = torch.randn(cols, cols, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(gaussian)
        # Fix the signs (diag(R) > 0) so that Q is Haar-distributed.
        q = q * torch.where(torch.diagonal(r) < 0, -1.0, 1.0)
        blocks.append(q.T)
    w = torch.cat(blocks)[:rows]
    norms = torch.randn(rows, cols, generator=generator, dtype=torch.float64).norm(dim=1)
    return (w * norms[:, None]).to(torch.float32)


@register("performer", family="kernel", paper="2009.14794", complexity="O(N·m·d)", causal=True)
class PerformerAttention(AttentionCore):
    """Performer FAVOR+: positive orthogonal random features φ(x) = m^-1/2 exp(Wx' − ‖x'‖²/2)
    estimating the softmax kernel, then linear attention (causal by chunked prefix sums).

    Stabilisers (exp would overflow or underflow otherwise) are subtracted in the
    exponent and detached; a stabiliser shared by every key a query may see is a
    constant factor of both the numerator and the normaliser, so it cancels:

    * queries: a factor per query cancels, so the stabilised φ(q) is softmax over the
      features of W q' (the max subtracted; ‖q'‖²/2 and m^-1/2 are per-query constants
      too, and so is the softmax's own normalisation, which keeps φ(q) summing to 1).
    * keys, not causal: the max over all keys and features (per batch item and head).
    * keys, causal: a global max would let a later key change earlier outputs (through
      eps, underflow and overflow), so key j is stabilised by the running max M_j over
      keys <= j, and :func:`kernel_attention` works for query i in the frame M_i, weighting
      key j <= i by exp(M_j − M_i) <= 1 (inside a chunk on the c×c block, between chunks on
      the carried state). Output i depends on keys <= i only, for any chunk size.

    ``eps`` is in units of the stabilised features (query features sum to 1, the
    largest key feature is m^-1/2). W is drawn once from ``seed`` with a local
    generator (the global RNG is left alone) and kept as a buffer.

    On CPU, heads run in groups whose (batch × N × m) feature tensors fit the
    workspace budget of :func:`in_head_groups` (page faults on larger blocks made the
    time grow 2.4× from N = 4096 to 8192 instead of 2×).
    """

    approximates_softmax = True
    linear_in_values = True

    def __init__(self, heads: int, head_dim: int, seq_len: int, causal: bool = False,
                 features: int = 256, chunk: int = 64, seed: int = 0) -> None:
        super().__init__(heads, head_dim, seq_len, causal)
        self.features = check_int("performer features", features)
        self.chunk = check_int("performer chunk", chunk)
        self.seed = check_int("performer seed", seed, None)
        self.eps = DEFAULT_EPS
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", orthogonal_gaussian_matrix(features, head_dim, generator))

    def _projected(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, H, N, d) -> W x' (B, H, N, m), x' = d^-1/4 x."""
        w = self.projection.to(x.dtype) * self.head_dim ** -0.25
        return torch.matmul(x, w.T)

    def _half_sq_norm(self, x: torch.Tensor) -> torch.Tensor:
        """‖x'‖²/2: (B, H, N, 1)."""
        return x.pow(2).sum(-1, keepdim=True) * (0.5 * self.head_dim ** -0.5)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Unstabilised φ(x) = m^-1/2 exp(W x' − ‖x'‖²/2), so that φ(q)·φ(k) is an unbiased
        estimate of exp(qᵀk/√d). Used by tests and for reference, not by forward()."""
        return torch.exp(self._projected(x) - self._half_sq_norm(x) - 0.5 * math.log(self.features))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # Autocast off: the feature map's exponent needs float32, autocast would make
        # its products half precision again.
        with torch.autocast(q.device.type, enabled=False):
            return in_head_groups(lambda q, k, v, _: self._attend(q, k, v), q, k, v, self.features)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        in_dtype, dt = v.dtype, acc_dtype(q.dtype)
        q, k, v = q.to(dt), k.to(dt), v.to(dt)
        log_norm = 0.5 * math.log(self.features)  # the m^-1/2 factor, inside the exp

        # Queries: any positive factor per query cancels, so softmax over the features
        # (max-subtract, exp and a row scale in one fused pass) is a stabilised φ(q).
        phi_q = torch.softmax(self._projected(q), dim=-1)

        proj_k, half_sq = self._projected(k), self._half_sq_norm(k)
        # Per-key max exponent over the features: (B, H, N).
        key_max = (proj_k.detach().amax(-1, keepdim=True) - half_sq.detach()).squeeze(-1)
        if self.causal:
            stab = key_max.cummax(dim=-1).values  # running max: keys <= i only
        else:
            stab = key_max.amax(-1, keepdim=True)  # global max (per batch item and head)
        phi_k = proj_k.sub_(half_sq + (stab.unsqueeze(-1) + log_norm)).exp_()

        out = kernel_attention(phi_q, phi_k, v, causal=self.causal, chunk=self.chunk, eps=self.eps,
                               log_scale=stab if self.causal else None)
        return out.to(in_dtype)

    def flops(self, batch: int, seq_len: int) -> int:
        bh, n, d, m = batch * self.heads, seq_len, self.head_dim, self.features
        # Per q and k: projection, squared norm (k), then softmax (q) or max, subtract, exp (k).
        features = 2 * matmul_flops(n, m, d) + 2 * n * d + softmax_flops(n * m) + 3 * n * m
        return bh * features + _kernel_attention_flops(bh, n, m, d, self.causal, self.chunk,
                                                       scaled=self.causal)

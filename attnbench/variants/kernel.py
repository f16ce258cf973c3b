"""Change the order of the products: linear attention (elu+1) and efficient attention;
the shared kernel-attention machinery of the random-feature kernels (random_features.py).

softmax(q kᵀ s) v needs the N×N matrix because exp(q·k) does not factor. Replace
it by a kernel φ(q)·φ(k) with an explicit feature map φ (f features) and the
products can be reordered: φ(Q) (φ(K)ᵀ V) costs O(N·f·d) instead of O(N²·d).

* ``linear``: Katharopoulos et al., "Transformers are RNNs" (arXiv 2006.16236),
  φ(x) = elu(x) + 1, f = d.
* ``efficient``: Shen et al., "Efficient Attention: Attention with Linear
  Complexities" (arXiv 1812.01243), ρ_q(q) (ρ_k(k)ᵀ v) with softmax over each
  query's features and over the positions of each key feature: no normaliser.
* ``performer`` (FAVOR+) and ``rfa`` (random feature attention) live in
  random_features.py and run through the same :func:`kernel_attention`.

Kernel attention, :func:`kernel_attention`:

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

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from attnbench.variants.decoding import DecodeState, group_queries, ungroup_queries
from attnbench.variants.layer import (
    AttentionCore,
    acc_dtype,
    check_int,
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


def kernel_state(phi_k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The recurrent state [S z] = φ(K)ᵀ[V 1] (B, H, f, d+1) of keys φ(K) (B, H, N, f) and
    values (B, H, N, d): what a causal kernel attention carries after N tokens."""
    return torch.matmul(phi_k.transpose(-1, -2), _with_ones(v))


def kernel_step(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, state: torch.Tensor,
                eps: float, decay: torch.Tensor | float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One token of causal kernel attention (the RNN form): the state [S z] after it,
    decay·[S z] + φ(k)ᵀ[v 1], and the output φ(q)ᵀS / (φ(q)ᵀz + eps).

    phi_q: (B, kv_heads, G, f), the query heads of each key/value head's group side by
    side; phi_k (B, kv_heads, 1, f); v (B, kv_heads, 1, d); state (B, kv_heads, f, d+1)."""
    state = torch.baddbmm(_flat(state * decay if not _is_one(decay) else state), _flat(phi_k.transpose(-1, -2)),
                          _flat(_with_ones(v))).view(state.shape)
    out = torch.matmul(phi_q, state)
    num, den = out.split([out.shape[-1] - 1, 1], dim=-1)
    return num / (den + eps), state


def _is_one(decay: torch.Tensor | float) -> bool:
    return isinstance(decay, float) and decay == 1.0


def _flat(t: torch.Tensor) -> torch.Tensor:
    """(B, H, a, b) -> (B·H, a, b) for the batched products."""
    return t.reshape(-1, *t.shape[-2:])


def kernel_attention_flops(bh: int, n: int, f: int, d: int, causal: bool, chunk: int,
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
    φ(Q)(φ(K)ᵀV) normalised by φ(Q)φ(K)ᵀ1; causal by chunked prefix sums.

    Parameters:
        chunk: chunk length of the causal prefix sums
    """

    approximates_softmax = True
    linear_in_values = True
    decode_refusal = None  # a recurrent state φ(K)ᵀ[V 1]
    kv_heads_refusal = None

    def __init__(self, heads: int, head_dim: int, seq_len: int, causal: bool = False,
                 chunk: int = 64) -> None:
        super().__init__(heads, head_dim, seq_len, causal)
        self.chunk = check_int("linear chunk", chunk)
        self.eps = DEFAULT_EPS

    def decode_state(self, k: torch.Tensor, v: torch.Tensor, capacity: int) -> DecodeState:
        dt = acc_dtype(k.dtype)
        state = kernel_state(self.feature_map(k.to(dt)), v.to(dt))
        return DecodeState(length=k.shape[-2], recurrent=(state,))

    def step(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             state: DecodeState) -> tuple[torch.Tensor, DecodeState]:
        dt = acc_dtype(q.dtype)
        phi_q = self.feature_map(group_queries(q.to(dt), k.shape[1]))
        out, s = kernel_step(phi_q, self.feature_map(k.to(dt)), v.to(dt), state.recurrent[0], self.eps)
        return ungroup_queries(out, q.shape[1]).to(v.dtype), DecodeState(length=state.length + 1, recurrent=(s,))

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
        return bh * features + kernel_attention_flops(bh, seq_len, d, d, self.causal, self.chunk)


def efficient_feature_maps(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ρ_q(q), softmax over each query's d features, and ρ_k(k), softmax of each key
    feature over the N positions (every column of ρ_k sums to 1)."""
    return torch.softmax(q, dim=-1), torch.softmax(k, dim=-2)


@register("efficient", family="kernel", paper="1812.01243", complexity="O(N·d²)", causal=False)
class EfficientAttention(AttentionCore):
    """Efficient attention (Shen et al., arXiv 1812.01243): ρ_q(q) (ρ_k(k)ᵀ v), ρ_q a
    softmax over each query's features, ρ_k a softmax of each key feature over the
    positions; a d×d context, no N×N matrix and no normaliser. Not causal.

    In float32 at least (the softmax over N and the sums over N), autocast off."""

    decode_refusal = 'cannot decode: it is not causal (its key softmax runs over all positions)'

    def __init__(self, heads: int, head_dim: int, seq_len: int, causal: bool = False) -> None:
        super().__init__(heads, head_dim, seq_len, causal)
        if causal:
            raise ValueError("efficient does not support causal attention "
                             "(ρ_k normalises each key feature over all N positions)")

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        dt = acc_dtype(q.dtype)
        with torch.autocast(q.device.type, enabled=False):
            rho_q, rho_k = efficient_feature_maps(q.to(dt), k.to(dt))
            context = torch.matmul(rho_k.transpose(-1, -2), v.to(dt))  # (d, d)
            out = torch.matmul(rho_q, context)
        return out.to(v.dtype)

    def flops(self, batch: int, seq_len: int) -> int:
        bh, n, d = batch * self.heads, seq_len, self.head_dim
        return bh * (softmax_flops(2 * n * d) + matmul_flops(d, d, n) + matmul_flops(n, d, d))


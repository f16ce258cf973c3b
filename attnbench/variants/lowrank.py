"""Fewer keys: project, compress or summarise the N keys into k ≪ N (Linformer,
memory-compressed attention, Nyström)."""

from __future__ import annotations

import torch
from torch import nn

from attnbench.variants.layer import (
    AttentionCore,
    acc_dtype,
    attend_flops,
    check_int,
    linear_flops,
    matmul_flops,
    softmax_flops,
)
from attnbench.variants.registry import register


@register("linformer", family="lowrank", paper="2006.04768", complexity="O(N·k·d)", causal=False)
class LinformerAttention(AttentionCore):
    """Linformer: keys and values projected along the sequence, K' = E k, V' = F v,
    with learned E, F ∈ R^{k×N} shared across heads; softmax(q K'ᵀ/√d) V'.

    Parameters:
        k: the projected length: rows of E and F
    """

    decode_refusal = 'cannot decode: it is not causal (its projection E mixes all N keys)'

    approximates_softmax = True
    linear_in_values = True

    def __init__(self, heads: int, head_dim: int, seq_len: int, causal: bool = False,
                 k: int = 256) -> None:
        super().__init__(heads, head_dim, seq_len, causal)
        check_int("linformer k", k)
        self.k = k
        std = k ** -0.5
        self.proj_k = nn.Parameter(torch.randn(k, seq_len) * std)
        self.proj_v = nn.Parameter(torch.randn(k, seq_len) * std)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n = k.shape[-2]
        if n != self.seq_len:
            raise ValueError(f"linformer was built for seq_len {self.seq_len}, got {n}: "
                             "its projections E, F have one column per position")
        keys = torch.einsum("kn,bhnd->bhkd", self.proj_k, k)
        values = torch.einsum("kn,bhnd->bhkd", self.proj_v, v)
        scores = torch.matmul(q, keys.transpose(-1, -2)) * self.scale
        probs = torch.softmax(scores, dim=-1, dtype=acc_dtype(scores.dtype))
        return torch.matmul(probs.to(v.dtype), values)

    def flops(self, batch: int, seq_len: int) -> int:
        bh, n, d, k = batch * self.heads, seq_len, self.head_dim, self.k
        project = 2 * bh * matmul_flops(k, d, n)
        attend = bh * attend_flops(n, k, d)
        return project + attend


@register("compressed", family="lowrank", paper="1801.10198", complexity="O(N·(N/f)·d)", causal=True)
class CompressedAttention(AttentionCore):
    """Memory-compressed attention (Liu et al., "Generating Wikipedia by Summarizing Long
    Sequences", arXiv 1801.10198, §4.2.2): after the k and v projections a strided
    convolution, kernel = stride = f, dim → dim, shortens keys and values to ⌈N/f⌉
    slots; softmax(q K'ᵀ/√d) V' over the slots and one null slot.

    The convolution has no overlap, so it is one product of the (⌈N/f⌉, f·dim) view of
    the (zero-padded) keys by a (f·dim → dim) weight, with bias; it mixes the heads, as
    a convolution over dim channels does. f = 3 is tensor2tensor's
    ``attention_red_factor`` default. The null slot is a learned key and value per head,
    zero at start, prepended to the slots: the first queries of the causal form would
    otherwise have nothing to see. Causal: query i sees the slots whose every position
    is ≤ i (slot s covers f·s … f·s + f − 1), and the null slot. Quadratic: N·N/f
    scores.

    Parameters:
        factor: f: kernel and stride of the convolution over keys and values (N/f slots)
    """

    decode_refusal = 'does not decode yet: a step would need the pooled key of the stride in progress'

    approximates_softmax = True  # its convolution mixes the heads: no per-head rows to read back

    def __init__(self, heads: int, head_dim: int, seq_len: int, causal: bool = False,
                 factor: int = 3) -> None:
        super().__init__(heads, head_dim, seq_len, causal)
        self.factor = check_int("compressed factor", factor)
        dim = heads * head_dim
        self.compress_k = nn.Linear(factor * dim, dim)
        self.compress_v = nn.Linear(factor * dim, dim)
        self.null_k = nn.Parameter(torch.zeros(heads, 1, head_dim))
        self.null_v = nn.Parameter(torch.zeros(heads, 1, head_dim))

    def slots(self, n: int) -> int:
        return -(-n // self.factor)

    def compress(self, t: torch.Tensor, conv: nn.Linear) -> torch.Tensor:
        """(B, H, N, d) -> (B, H, 1 + ⌈N/f⌉, d): the null slot, then the strided convolution."""
        b, h, n, d = t.shape
        slots = self.slots(n)
        merged = t.transpose(1, 2).reshape(b, n, h * d)
        if slots * self.factor > n:
            merged = torch.nn.functional.pad(merged, (0, 0, 0, slots * self.factor - n))
        out = conv(merged.reshape(b, slots, self.factor * h * d)).view(b, slots, h, d).transpose(1, 2)
        null = (self.null_k if conv is self.compress_k else self.null_v).to(out.dtype)
        return torch.cat([null.expand(b, h, 1, d), out], dim=2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.attend_scores(q, self.compress(k, self.compress_k), self.compress(v, self.compress_v))

    def whole_layer(self, x: torch.Tensor, qkv: nn.Linear, out: nn.Linear) -> torch.Tensor | None:
        """The layer with each convolution folded into its projection, by associativity:
        conv(x W_kᵀ) is x's (⌈N/f⌉, f·dim) view times the product of the two weights
        ((dim·f × dim)(dim × dim), once per call), so keys and values are never
        projected at full length N. Without a q/k/v bias (the layer has none); None
        otherwise. ``flops()`` counts the standard form."""
        if qkv.bias is not None:
            return None
        b, n, dim = x.shape
        h, d, f = self.heads, self.head_dim, self.factor
        w_q, w_k, w_v = qkv.weight.split(dim)
        q = torch.nn.functional.linear(x, w_q).view(b, n, h, d).transpose(1, 2)
        slots = self.slots(n)
        blocks = torch.nn.functional.pad(x, (0, 0, 0, slots * f - n)).reshape(b, slots, f * dim)

        def compressed(conv: nn.Linear, weight: torch.Tensor, null: torch.Tensor) -> torch.Tensor:
            folded = torch.matmul(conv.weight.view(dim * f, dim), weight).view(dim, f * dim)
            t = torch.nn.functional.linear(blocks, folded, conv.bias).view(b, slots, h, d).transpose(1, 2)
            return torch.cat([null.to(t.dtype).expand(b, h, 1, d), t], dim=2)

        result = self.attend_scores(q, compressed(self.compress_k, w_k, self.null_k),
                              compressed(self.compress_v, w_v, self.null_v))
        return out(result.transpose(1, 2).reshape(b, n, dim))

    def attend_scores(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """softmax(q K'ᵀ s) V' over the null slot and the slots (B, H, 1 + ⌈N/f⌉, d).

        All heads in one product, not in workspace-sized head groups (in_head_groups):
        the scores are only ⌈N/f⌉ wide, so grouping adds passes without saving memory
        that matters."""
        n, width = q.shape[-2], keys.shape[-2]
        scores = torch.matmul(q * self.scale, keys.transpose(-1, -2))
        if self.causal:  # slot s (column s + 1) is hidden from query i while f·s + f − 1 > i
            last = torch.arange(width, device=q.device) * self.factor - 1  # slot's last position
            scores = scores.masked_fill(last > torch.arange(n, device=q.device)[:, None],
                                        torch.finfo(scores.dtype).min)
        probs = torch.softmax(scores, dim=-1, dtype=acc_dtype(scores.dtype))
        return torch.matmul(probs.to(values.dtype), values)

    def flops(self, batch: int, seq_len: int) -> int:
        slots, dim = self.slots(seq_len), self.heads * self.head_dim
        conv = 2 * linear_flops(batch * slots, self.factor * dim, dim)
        return conv + batch * self.heads * (seq_len * self.head_dim  # q · s
                                            + attend_flops(seq_len, slots + 1, self.head_dim))


def newton_pinv(a: torch.Tensor, iters: int) -> torch.Tensor:
    """Moore-Penrose pseudo-inverse of each (…, m, m) matrix by the cubic Newton-type
    iteration of Nyströmformer (arXiv 2102.03902, eq. 16, after Razavi et al. 2014):

        Z ← ¼ Z (13I − AZ (15I − AZ (7I − AZ))),  Z₀ = Aᵀ / (‖A‖₁ ‖A‖_∞)

    ‖A‖_∞ is the largest row sum and ‖A‖₁ the largest column sum of |A|. They are taken
    per matrix (the paper's code takes them over the whole batch, which lets one batch
    item's input change another's output); each is enough for ‖I − AZ₀‖ < 1."""
    m = a.shape[-1]
    abs_a = a.abs()
    norms = abs_a.sum(-1).amax(-1) * abs_a.sum(-2).amax(-1)
    z = a.transpose(-1, -2) / norms[..., None, None]
    eye = torch.eye(m, dtype=a.dtype, device=a.device)
    for _ in range(iters):
        az = torch.matmul(a, z)
        t = torch.matmul(az, 7 * eye - az)
        t = torch.matmul(az, 15 * eye - t)
        z = torch.matmul(z, 13 * eye - t) * 0.25
    return z


def segment_means(x: torch.Tensor, segments: int) -> torch.Tensor:
    """Means of ``segments`` contiguous segments along dim −2: (…, N, d) -> (…, m, d).

    When m divides N every segment has N/m tokens. Otherwise segment i covers tokens
    [⌊iN/m⌋, ⌊(i+1)N/m⌋): lengths ⌊N/m⌋ or ⌈N/m⌉, every token in exactly one segment,
    no padding token in any mean (zero-padding, as one public version does, adds fake
    zero keys and can leave the last landmarks empty)."""
    n = x.shape[-2]
    if n % segments == 0:
        # sum, then scale the small result: the backward of a sum is a free expand,
        # that of a mean a division over all N×d elements.
        return x.unflatten(-2, (segments, n // segments)).sum(-2) * (segments / n)
    bounds = torch.arange(segments + 1, device=x.device) * n // segments
    seg_id = torch.repeat_interleave(torch.arange(segments, device=x.device), bounds.diff())
    sums = x.new_zeros(x.shape[:-2] + (segments, x.shape[-1])).index_add(-2, seg_id, x)
    return sums / bounds.diff().to(x.dtype)[:, None]


@register("nystrom", family="lowrank", paper="2102.03902", complexity="O(N·m·d + m³)", causal=False)
class NystromAttention(AttentionCore):
    """Nyströmformer: m landmarks (segment means of q and k) and the Nyström
    approximation softmax(q k̃ᵀ s) · pinv(softmax(q̃ k̃ᵀ s)) · softmax(q̃ kᵀ s) v.

    The products run right to left, (N×m) · ((m×m) · ((m×N) · v)), so nothing is N×N or
    even N×m×m. The pseudo-inverse is ``pinv_iters`` Newton iterations (in float32 at
    least, half-precision inputs included). With m = N and an exact pseudo-inverse it is
    exact attention. ``conv`` > 0 adds the depthwise convolution of v over the sequence
    (kernel ``conv`` per head) of the paper's code; 0 leaves it out. If N < m at run
    time, m = N landmarks are used.

    Parameters:
        landmarks: m: the landmarks
        pinv_iters: Newton iterations of the pseudo-inverse
        conv: kernel of the depthwise convolution of v per head; 0: none
    """

    decode_refusal = 'cannot decode: it is not causal (its landmarks are means over all tokens)'

    approximates_softmax = True
    linear_in_values = True

    def __init__(self, heads: int, head_dim: int, seq_len: int, causal: bool = False,
                 landmarks: int = 64, pinv_iters: int = 6, conv: int = 0) -> None:
        super().__init__(heads, head_dim, seq_len, causal)
        if causal:
            raise ValueError("nystrom does not support causal attention (the landmarks mix all positions)")
        check_int("nystrom landmarks", landmarks)
        check_int("nystrom pinv_iters", pinv_iters, 0)
        if not isinstance(conv, int) or isinstance(conv, bool) or conv < 0 or (conv and conv % 2 == 0):
            raise ValueError(f"nystrom conv must be 0 (no residual) or a positive odd kernel size, got {conv!r}")
        self.landmarks = landmarks
        self.pinv_iters = pinv_iters
        self.conv = conv
        self.res_conv = (nn.Conv2d(heads, heads, (conv, 1), padding=(conv // 2, 0), groups=heads, bias=False)
                         if conv else None)

    def pinv(self, a: torch.Tensor) -> torch.Tensor:
        """The pseudo-inverse used in forward (tests may swap in torch.linalg.pinv)."""
        return newton_pinv(a, self.pinv_iters)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        m = min(self.landmarks, k.shape[-2])
        acc = acc_dtype(q.dtype)  # softmax and pinv precision
        q_land, k_land = segment_means(q, m), segment_means(k, m)
        # The scale s goes on the m×d landmarks, never on an N-sized tensor.
        q_land_s, k_land_s = q_land * self.scale, k_land * self.scale

        kernel_3 = torch.softmax(torch.matmul(q_land_s, k.transpose(-1, -2)), dim=-1, dtype=acc)  # m×N
        kernel_2 = torch.softmax(torch.matmul(q_land_s, k_land.transpose(-1, -2)), dim=-1, dtype=acc)
        kernel_1 = torch.softmax(torch.matmul(q, k_land_s.transpose(-1, -2)), dim=-1, dtype=acc)  # N×m

        summary = torch.matmul(kernel_3.to(v.dtype), v)  # (m×N)·v first: m×d
        summary = torch.matmul(self.pinv(kernel_2), summary.to(acc))  # m×d
        out = torch.matmul(kernel_1.to(v.dtype), summary.to(v.dtype))
        if self.res_conv is not None:
            out = out + self.res_conv(v)
        return out

    def flops(self, batch: int, seq_len: int) -> int:
        bh, n, d = batch * self.heads, seq_len, self.head_dim
        m = min(self.landmarks, n)
        landmarks = 2 * n * d + 4 * m * d  # segment sums of q and k, means, ·s
        kernels = (2 * matmul_flops(n, m, d) + matmul_flops(m, m, d)
                   + softmax_flops(2 * n * m + m * m))
        pinv = self.pinv_iters * (4 * matmul_flops(m, m, m) + 3 * m * m + m * m)
        apply = matmul_flops(m, d, n) + matmul_flops(m, d, m) + matmul_flops(n, d, m)
        conv = 2 * self.conv * n * d
        return bh * (landmarks + kernels + pinv + apply + conv)

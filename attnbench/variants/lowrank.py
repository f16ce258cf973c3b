"""Fewer keys: project or summarise the N keys into k ≪ N (Linformer, Nyström)."""

from __future__ import annotations

import torch
from torch import nn

from attnbench.variants.layer import (
    AttentionCore,
    acc_dtype,
    attend_flops,
    check_int,
    matmul_flops,
    softmax_flops,
)
from attnbench.variants.registry import register


@register("linformer", family="lowrank", paper="2006.04768", complexity="O(N·k·d)", causal=False)
class LinformerAttention(AttentionCore):
    """Linformer: keys and values projected along the sequence, K' = E k, V' = F v,
    with learned E, F ∈ R^{k×N} shared across heads; softmax(q K'ᵀ/√d) V'."""

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
    time, m = N landmarks are used."""

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

"""Synthesizer: attention weights synthesised without query-key products
(Tay et al., arXiv 2005.00743).

Per head h, out = softmax(B_h) · V_h, then an output projection, where the
(N × N) logits B_h come from

* ``dense``: B_i = W₂ ReLU(W₁ x_i + b₁) + b₂ for each token i. W₁ is one
  Linear(dim, dim); its output is split into heads and each head has its own
  W₂ ∈ R^{d×N} (d = dim/H), so token i's row of logits in head h is computed
  from that head's d hidden units (the paper's per-head dense synthesizer).
* ``random``: a learned R ∈ R^{H×N×N}, independent of the input.
* ``factorized``: R = R₁ R₂ᵀ with R₁, R₂ ∈ R^{H×N×k} (rank k).

All three have one logit per position, so the layer is built for one
``seq_len`` and refuses another. Causal: logits above the diagonal are masked
before the softmax. O(N²·d) by design: the N×N weights are the mechanism. The
softmax runs in float32 for half-precision inputs.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

from attnbench.variants.layer import (
    AttentionLayer,
    acc_dtype,
    causal_mask,
    check_int,
    linear_flops,
    matmul_flops,
    softmax_flops,
)
from attnbench.variants.registry import register

SynthesizerMode = Literal["dense", "random", "factorized"]
MODES: tuple[str, ...] = get_args(SynthesizerMode)  # the hint is the one source of the choices


@register("synthesizer", family="synthesizer", paper="2005.00743", complexity="O(N²·d)", causal=True)
class Synthesizer(AttentionLayer):
    """Synthesizer: softmax of synthetic logits (dense per-token MLP, random
    learned matrix or its rank-k factorisation) applied to projected values.

    Parameters:
        mode: dense: per-token MLP logits; random: a learned N×N matrix; factorized: rank k
        k: rank of the factorized mode (unused otherwise)
    """

    decode_refusal = "cannot decode: its attention weights are learned per position of a fixed N, none past N"

    def __init__(self, dim: int, heads: int, seq_len: int, causal: bool = False,
                 mode: SynthesizerMode = "dense", k: int = 32) -> None:
        super().__init__(dim, heads, seq_len, causal)
        if mode not in MODES:
            raise ValueError(f"synthesizer mode must be one of {', '.join(MODES)}, got {mode!r}")
        check_int("synthesizer k", k)
        self.mode = mode
        self.k = k  # used by mode "factorized" only
        n, d = seq_len, self.head_dim
        if mode == "dense":
            self.hidden = nn.Linear(dim, dim)  # W₁
            self.w2 = nn.Parameter(torch.randn(heads, d, n) * d ** -0.5)
            self.b2 = nn.Parameter(torch.zeros(heads, n))
        elif mode == "random":
            self.r = nn.Parameter(torch.randn(heads, n, n))
        else:
            std = k ** -0.25  # logits R₁R₂ᵀ of unit variance
            self.r1 = nn.Parameter(torch.randn(heads, n, k) * std)
            self.r2 = nn.Parameter(torch.randn(heads, n, k) * std)
        self.to_v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, dim) -> logits (B, H, N, N) for dense, (H, N, N) otherwise."""
        if self.mode == "dense":
            hidden = self.split_heads(torch.relu(self.hidden(x)))  # (B, H, N, d)
            return torch.matmul(hidden, self.w2) + self.b2[:, None, :]
        if self.mode == "random":
            return self.r
        return torch.matmul(self.r1, self.r2.transpose(-1, -2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        if n != self.seq_len:
            raise ValueError(f"synthesizer was built for seq_len {self.seq_len}, got {n}: "
                             "its logits have one column per position")
        logits = self.logits(x)
        if self.causal:
            logits = logits.masked_fill(~causal_mask(n, n, device=x.device), float("-inf"))
        probs = torch.softmax(logits, dim=-1, dtype=acc_dtype(x.dtype))
        v = self.split_heads(self.to_v(x))
        return self.out(self.merge_heads(torch.matmul(probs.to(v.dtype), v)))

    def flops(self, batch: int, seq_len: int) -> int:
        tokens, n, c, h = batch * seq_len, seq_len, self.dim, self.heads
        proj = 2 * linear_flops(tokens, c, c)  # values, output
        if self.mode == "dense":
            # W₁, ReLU, per-head W₂ and its bias
            synth = (linear_flops(tokens, c, c) + tokens * c
                     + batch * h * (matmul_flops(n, n, self.head_dim) + n * n))
        elif self.mode == "factorized":
            synth = h * matmul_flops(n, n, self.k)
        else:
            synth = 0
        attend = softmax_flops(batch * h * n * n) + batch * h * matmul_flops(n, self.head_dim, n)
        return proj + synth + attend

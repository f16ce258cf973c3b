"""Convolutional alternatives to attention: lightweight and dynamic convolution
(Wu et al., "Pay Less Attention with Lightweight and Dynamic Convolutions",
arXiv 1901.10430).

Both layers: x -> Linear(dim, 2·dim) -> GLU -> depthwise convolution over the
sequence -> Linear(dim, dim). The kernel has K taps, is softmax-normalised over
them and shared by the channels of a head: channel c uses kernel row
c // (dim/H).

* ``lightconv``: one learned (H, K) kernel.
* ``dynamicconv``: the kernel of position t is predicted from the convolution's
  input at t by a Linear(dim, H·K) (as fairseq does, after the GLU).

Padding: causal pads K−1 on the left (token t sees t−K+1 … t); otherwise K//2
on the left and K−1−K//2 on the right, i.e. (K−1)/2 each side for odd K and
one more on the left for even K. Tap j of the kernel multiplies token
t + j − left.

Cost O(N·K·d): lightconv runs ``F.conv1d`` with groups=dim (the unfold path is
kept for the equivalence test), dynamicconv an unfold into (B, N, dim, K)
windows. Neither builds the T×T band matrix of fairseq's default path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnbench.variants.layer import AttentionLayer, linear_flops, softmax_flops
from attnbench.variants.registry import register

IMPLS = ("conv1d", "unfold")


def conv_padding(kernel_size: int, causal: bool) -> tuple[int, int]:
    """(left, right) padding that keeps the sequence length."""
    if causal:
        return kernel_size - 1, 0
    return kernel_size // 2, kernel_size - 1 - kernel_size // 2


def _windows(x: torch.Tensor, kernel_size: int, causal: bool) -> torch.Tensor:
    """(B, N, C) -> (B, N, C, K) sliding windows, a view of the padded input."""
    left, right = conv_padding(kernel_size, causal)
    return F.pad(x, (0, 0, left, right)).unfold(1, kernel_size, 1)


def lightconv_conv1d(x: torch.Tensor, kernel: torch.Tensor, causal: bool) -> torch.Tensor:
    """Depthwise convolution of x (B, N, C) with a per-head kernel (H, K)."""
    c, (heads, k) = x.shape[-1], kernel.shape
    weight = kernel.repeat_interleave(c // heads, dim=0).unsqueeze(1)  # (C, 1, K)
    xt = F.pad(x.transpose(1, 2), conv_padding(k, causal))  # (B, C, N + K - 1)
    return F.conv1d(xt, weight.to(x.dtype), groups=c).transpose(1, 2)


def lightconv_unfold(x: torch.Tensor, kernel: torch.Tensor, causal: bool) -> torch.Tensor:
    """The same convolution through unfolded windows (reference path)."""
    b, n, c = x.shape
    heads, k = kernel.shape
    win = _windows(x, k, causal).reshape(b, n, heads, c // heads, k)
    return torch.einsum("bnhck,hk->bnhc", win, kernel.to(x.dtype)).reshape(b, n, c)


def dynamic_conv_unfold(x: torch.Tensor, kernel: torch.Tensor, causal: bool) -> torch.Tensor:
    """Convolution of x (B, N, C) with a kernel per position and head (B, N, H, K)."""
    b, n, c = x.shape
    heads, k = kernel.shape[-2:]
    win = _windows(x, k, causal).reshape(b, n, heads, c // heads, k)
    # (B·N·H) small products (C/H × K) @ (K × 1)
    return torch.matmul(win, kernel.to(x.dtype).unsqueeze(-1)).reshape(b, n, c)


def _check_kernel_size(kernel_size: int) -> None:
    if not isinstance(kernel_size, int) or isinstance(kernel_size, bool) or kernel_size <= 0:
        raise ValueError(f"kernel_size must be a positive integer, got {kernel_size!r}")


class _ConvLayer(AttentionLayer):
    """GLU input projection and output projection shared by both variants."""

    def __init__(self, dim: int, heads: int, seq_len: int, causal: bool, kernel_size: int) -> None:
        super().__init__(dim, heads, seq_len, causal)
        _check_kernel_size(kernel_size)
        self.kernel_size = kernel_size
        self.in_proj = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def conv(self, h: torch.Tensor, impl: str = "conv1d") -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.glu(self.in_proj(x), dim=-1)
        return self.out(self.conv(h))

    def _projection_flops(self, tokens: int) -> int:
        c = self.dim
        glu = 2 * tokens * c  # sigmoid and product
        return linear_flops(tokens, c, 2 * c) + glu + linear_flops(tokens, c, c)


@register("lightconv", family="conv", paper="1901.10430", complexity="O(N·K·d)", causal=True)
class LightConv(_ConvLayer):
    """Lightweight convolution: depthwise, softmax-normalised kernel of K taps
    shared by the channels of each head, between a GLU and an output projection."""

    def __init__(self, dim: int, heads: int, seq_len: int, causal: bool = False,
                 kernel_size: int = 31) -> None:
        super().__init__(dim, heads, seq_len, causal, kernel_size)
        self.weight = nn.Parameter(torch.empty(heads, kernel_size))
        nn.init.xavier_uniform_(self.weight)

    def kernel(self) -> torch.Tensor:
        """The (H, K) kernel, softmax over the taps."""
        return torch.softmax(self.weight, dim=-1)

    def conv(self, h: torch.Tensor, impl: str = "conv1d") -> torch.Tensor:
        """The convolution alone, on the GLU output h (B, N, dim)."""
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
        apply = lightconv_conv1d if impl == "conv1d" else lightconv_unfold
        return apply(h, self.kernel(), self.causal)

    def flops(self, batch: int, seq_len: int) -> int:
        tokens = batch * seq_len
        return (self._projection_flops(tokens) + 2 * tokens * self.dim * self.kernel_size
                + softmax_flops(self.heads * self.kernel_size))


@register("dynamicconv", family="conv", paper="1901.10430", complexity="O(N·K·d + N·d·H·K)",
          causal=True)
class DynamicConv(_ConvLayer):
    """Dynamic convolution: as lightconv, but each position's (H, K) kernel is
    predicted from its input by a linear layer and softmax-normalised."""

    def __init__(self, dim: int, heads: int, seq_len: int, causal: bool = False,
                 kernel_size: int = 31) -> None:
        super().__init__(dim, heads, seq_len, causal, kernel_size)
        self.weight_linear = nn.Linear(dim, heads * kernel_size)

    def kernel(self, h: torch.Tensor) -> torch.Tensor:
        """(B, N, dim) -> per-position kernels (B, N, H, K), softmax over the taps."""
        logits = self.weight_linear(h).unflatten(-1, (self.heads, self.kernel_size))
        return torch.softmax(logits, dim=-1, dtype=torch.promote_types(h.dtype, torch.float32))

    def conv(self, h: torch.Tensor, impl: str = "unfold") -> torch.Tensor:
        if impl != "unfold":
            raise ValueError(f"dynamicconv impl must be 'unfold', got {impl!r}")
        return dynamic_conv_unfold(h, self.kernel(h), self.causal)

    def flops(self, batch: int, seq_len: int) -> int:
        tokens, hk = batch * seq_len, self.heads * self.kernel_size
        predict = linear_flops(tokens, self.dim, hk) + softmax_flops(tokens * hk)
        return self._projection_flops(tokens) + predict + 2 * tokens * self.dim * self.kernel_size

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

Cost O(N·K·d). Both run on unfolded (B, N, dim, K) windows, a strided view of
the padded input that ``einsum`` reads in place, with a hand-written backward
(the transposed convolution, same windows trick): memory O(N·d + N·H·K).
lightconv's ``F.conv1d`` path (groups=dim) is kept as a reference and is slower
on CPU. Neither builds the T×T band matrix of fairseq's default path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnbench.variants.decoding import DecodeState
from attnbench.variants.layer import AttentionLayer, acc_dtype, check_int, linear_flops, softmax_flops
from attnbench.variants.registry import register

IMPLS = ("unfold", "conv1d")


def conv_padding(kernel_size: int, causal: bool) -> tuple[int, int]:
    """(left, right) padding that keeps the sequence length."""
    if causal:
        return kernel_size - 1, 0
    return kernel_size // 2, kernel_size - 1 - kernel_size // 2


def _windows(x: torch.Tensor, kernel_size: int, left: int, right: int, heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, N, H, C/H, K) sliding windows: a view of the padded input,
    so memory stays O(N·C); ``einsum`` reads it in place."""
    b, n, c = x.shape
    return F.pad(x, (0, 0, left, right)).unfold(1, kernel_size, 1).view(b, n, heads, c // heads, kernel_size)


def _flip_kernel(kernel: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """kernel (B, N, H, K) -> flipped[:, s, :, i] = kernel[:, s + i − right, :, K − 1 − i]
    (zero outside): the kernel of the transposed convolution, which maps the output
    gradient back to the input. A strided view of the padded kernel, O(N·H·K)."""
    b, n, h, k = kernel.shape
    padded = F.pad(kernel, (0, 0, 0, 0, right, left)).contiguous()  # (B, N + K − 1, H, K)
    sb, sn, sh, sk = padded.stride()
    return padded.as_strided((b, n, h, k), (sb, sn, sh, sn - sk), (k - 1) * sk).contiguous()


class _DynamicConv(torch.autograd.Function):
    """y[t, c] = Σ_j kernel[t, head(c), j] · x[t + j − left, c] for x (B, N, C) and
    kernel (B, N, H, K), on unfolded windows; the backward is the same product on
    the output gradient's windows with the flipped kernel (for dx) and on the input's
    windows (for the kernel). Nothing (N, C, K) is materialised."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: torch.Tensor, left: int, right: int) -> torch.Tensor:
        heads, k = kernel.shape[-2:]
        ctx.save_for_backward(x, kernel)
        ctx.padding = (left, right)
        win = _windows(x, k, left, right, heads)
        return torch.einsum("bnhck,bnhk->bnhc", win, kernel).flatten(2)

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, kernel = ctx.saved_tensors
        left, right = ctx.padding
        heads, k = kernel.shape[-2:]
        dy = dy.contiguous()
        dx = dkernel = None
        if ctx.needs_input_grad[0]:
            dy_win = _windows(dy, k, right, left, heads)
            dx = torch.einsum("bnhck,bnhk->bnhc", dy_win, _flip_kernel(kernel, left, right)).flatten(2)
        if ctx.needs_input_grad[1]:
            dkernel = torch.einsum("bnhc,bnhck->bnhk", dy.unflatten(2, (heads, -1)),
                                   _windows(x, k, left, right, heads))
        return dx, dkernel, None, None


def dynamic_conv(x: torch.Tensor, kernel: torch.Tensor, causal: bool) -> torch.Tensor:
    """Convolution of x (B, N, C) with a kernel per position and head (B, N, H, K)."""
    return _DynamicConv.apply(x, kernel.to(x.dtype), *conv_padding(kernel.shape[-1], causal))


def lightconv_unfold(x: torch.Tensor, kernel: torch.Tensor, causal: bool) -> torch.Tensor:
    """Depthwise convolution of x (B, N, C) with a per-head kernel (H, K), through
    unfolded windows: ``dynamic_conv`` with the kernel broadcast over positions."""
    b, n, _ = x.shape
    return dynamic_conv(x, kernel.expand(b, n, *kernel.shape), causal)


def lightconv_conv1d(x: torch.Tensor, kernel: torch.Tensor, causal: bool) -> torch.Tensor:
    """The same convolution with ``F.conv1d`` (groups=C, the weight expanded from H rows)."""
    c, (heads, k) = x.shape[-1], kernel.shape
    weight = kernel.repeat_interleave(c // heads, dim=0).unsqueeze(1)  # (C, 1, K)
    xt = F.pad(x.transpose(1, 2), conv_padding(k, causal))  # (B, C, N + K - 1)
    return F.conv1d(xt, weight.to(x.dtype), groups=c).transpose(1, 2)


class _ConvLayer(AttentionLayer):
    """GLU input projection and output projection shared by both variants.

    Causal, they decode from the last K − 1 inputs of the convolution (GLU outputs),
    a state of fixed size: each step convolves them and the token's own."""

    decode_refusal = None  # the last K − 1 convolution inputs

    def __init__(self, dim: int, heads: int, seq_len: int, causal: bool, kernel_size: int) -> None:
        super().__init__(dim, heads, seq_len, causal)
        check_int("kernel_size", kernel_size)
        self.kernel_size = kernel_size
        self.in_proj = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def conv(self, h: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def step_kernel(self, h: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """The (B, H, K) kernel of the token whose convolution input is h (B, 1, dim)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.glu(self.in_proj(x), dim=-1)
        return self.out(self.conv(h))

    def prefill(self, x: torch.Tensor, capacity: int, output: bool = True) -> tuple[torch.Tensor | None,
                                                                                   DecodeState]:
        self.check_decodes()
        kept = self.kernel_size - 1
        h = F.glu(self.in_proj(x if output else x[:, x.shape[1] - kept:] if kept else x[:, :0]), dim=-1)
        last = F.pad(h[:, -kept:] if kept else h[:, :0], (0, 0, max(0, kept - h.shape[1]), 0))
        return self.out(self.conv(h)) if output else None, DecodeState(length=x.shape[1], recurrent=(last,))

    def step(self, x: torch.Tensor, state: DecodeState) -> tuple[torch.Tensor, DecodeState]:
        self.check_decodes()
        h = F.glu(self.in_proj(x), dim=-1)
        window = torch.cat([state.recurrent[0], h], dim=1)  # (B, K, dim): tap j is token t − K + 1 + j
        b, k, c = window.shape
        kernel = self.step_kernel(h).to(h.dtype)
        y = torch.einsum("bkhc,bhk->bhc", window.view(b, k, self.heads, c // self.heads), kernel)
        return self.out(y.reshape(b, 1, c)), DecodeState(length=state.length + 1, recurrent=(window[:, 1:],))

    def _projection_flops(self, tokens: int) -> int:
        c = self.dim
        glu = 2 * tokens * c  # sigmoid and product
        return linear_flops(tokens, c, 2 * c) + glu + linear_flops(tokens, c, c)


@register("lightconv", family="conv", paper="1901.10430", complexity="O(N·K·d)", causal=True)
class LightConv(_ConvLayer):
    """Lightweight convolution: depthwise, softmax-normalised kernel of K taps
    shared by the channels of each head, between a GLU and an output projection.

    Parameters:
        kernel_size: K: taps of each head's kernel
    """

    def __init__(self, dim: int, heads: int, seq_len: int, causal: bool = False,
                 kernel_size: int = 31) -> None:
        super().__init__(dim, heads, seq_len, causal, kernel_size)
        self.weight = nn.Parameter(torch.empty(heads, kernel_size))
        nn.init.xavier_uniform_(self.weight)

    def kernel(self) -> torch.Tensor:
        """The (H, K) kernel, softmax over the taps."""
        return torch.softmax(self.weight, dim=-1)

    def step_kernel(self, h: torch.Tensor) -> torch.Tensor:
        return self.kernel().expand(h.shape[0], *self.weight.shape)

    def conv(self, h: torch.Tensor, impl: str = "unfold") -> torch.Tensor:
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
    predicted from its input by a linear layer and softmax-normalised.

    Parameters:
        kernel_size: K: taps of each position's predicted kernel
    """

    def __init__(self, dim: int, heads: int, seq_len: int, causal: bool = False,
                 kernel_size: int = 31) -> None:
        super().__init__(dim, heads, seq_len, causal, kernel_size)
        self.weight_linear = nn.Linear(dim, heads * kernel_size)

    def kernel(self, h: torch.Tensor) -> torch.Tensor:
        """(B, N, dim) -> per-position kernels (B, N, H, K), softmax over the taps."""
        logits = self.weight_linear(h).unflatten(-1, (self.heads, self.kernel_size))
        return torch.softmax(logits, dim=-1, dtype=acc_dtype(h.dtype))

    def conv(self, h: torch.Tensor) -> torch.Tensor:
        """The convolution alone, on the GLU output h (B, N, dim)."""
        return dynamic_conv(h, self.kernel(h), self.causal)

    def step_kernel(self, h: torch.Tensor) -> torch.Tensor:
        return self.kernel(h)[:, 0]

    def flops(self, batch: int, seq_len: int) -> int:
        tokens, hk = batch * seq_len, self.heads * self.kernel_size
        predict = linear_flops(tokens, self.dim, hk) + softmax_flops(tokens * hk)
        return self._projection_flops(tokens) + predict + 2 * tokens * self.dim * self.kernel_size

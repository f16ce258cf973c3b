"""Issue 2's speed targets, measured side by side in one process.

CPU, dim 512, 8 heads, batch 1, N=4096, forward_backward (one training step of
the layer): the medians of softmax, sdpa, linformer (k 256) and fastformer, and
attnbench's ``sdpa`` against calling ``F.scaled_dot_product_attention`` directly
inside the same projections. Rounds interleave the layers so that drift in the
machine's speed hits all of them alike.

usage: python benchmarks/backbone_targets.py [--n 4096] [--rounds 5] [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import attnbench


class DirectSDPA(nn.Module):
    """The same projections as attnbench's ProjectedAttention, SDPA called directly."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, dim = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, dim))


def step_time(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> float:
    layer.zero_grad(set_to_none=True)
    x.grad = None
    t0 = time.perf_counter()
    layer(x).backward(grad)
    return (time.perf_counter() - t0) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    torch.manual_seed(0)
    layers = {
        "softmax": attnbench.build("softmax", dim=a.dim, heads=a.heads, seq_len=a.n),
        "sdpa": attnbench.build("sdpa", dim=a.dim, heads=a.heads, seq_len=a.n),
        "linformer(k=256)": attnbench.build("linformer", dim=a.dim, heads=a.heads, seq_len=a.n, k=256),
        "fastformer": attnbench.build("fastformer", dim=a.dim, heads=a.heads, seq_len=a.n),
        "direct F.sdpa": DirectSDPA(a.dim, a.heads),
    }
    x = torch.randn(1, a.n, a.dim, requires_grad=True)
    grad = torch.randn(1, a.n, a.dim)
    samples: dict[str, list[float]] = {name: [] for name in layers}
    for layer in layers.values():  # warm-up
        step_time(layer, x, grad)
    for _ in range(a.rounds):
        for name, layer in layers.items():
            samples[name].extend(step_time(layer, x, grad) for _ in range(a.reps))
    print(f"N={a.n}, dim {a.dim}, {a.heads} heads, batch 1, forward_backward, threads {torch.get_num_threads()}")
    print("layer,median_ms,min_ms,samples")
    for name, s in samples.items():
        print(f"{name},{statistics.median(s):.1f},{min(s):.1f},{len(s)}")
    ratio = statistics.median(samples["sdpa"]) / statistics.median(samples["direct F.sdpa"])
    print(f"attnbench sdpa / direct F.sdpa = {ratio:.3f}")
    fastest = min(samples, key=lambda k: statistics.median(samples[k]) if k != "direct F.sdpa" else float("inf"))
    print(f"fastest of the four: {fastest}")


if __name__ == "__main__":
    main()

"""One decode step's attention against a KV cache, several ways, in rounds:
torch's SDPA, matmul / softmax / matmul (q·Kᵀ), the tall form K·qᵀ, and the
cache split into chunks whose partial softmaxes are combined (flash-decoding).
Each way's GB/s of cache read, beside a sum and a copy of large buffers, so
that a step's share of the memory bandwidth can be judged.

    python benchmarks/decode_attention.py [--kv-heads 2] [--heads 8] [--rounds 3]

The projections are left out: this is the attention alone (see
docs/serving.md for the whole step and its bound). Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def median_s(fn, reps: int = 30) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def ways(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> dict:
    d = q.shape[-1]

    def matmul() -> torch.Tensor:
        return torch.softmax(q @ k.transpose(-1, -2) * d ** -0.5, -1) @ v

    def tall() -> torch.Tensor:  # K·qᵀ: (N, G), softmax over the keys, Pᵀ·V
        p = torch.softmax(k @ q.transpose(-1, -2) * d ** -0.5, dim=-2)
        return p.transpose(-1, -2) @ v

    def split(chunks: int) -> torch.Tensor:
        b, h, n, _ = k.shape
        kc, vc = k.view(b, h, chunks, n // chunks, d), v.view(b, h, chunks, n // chunks, d)
        s = q.unsqueeze(2) @ kc.transpose(-1, -2) * d ** -0.5
        m = s.amax(-1, keepdim=True)
        p = torch.exp(s - m)
        o, total = p @ vc, p.sum(-1, keepdim=True)
        w = torch.exp(m - m.amax(2, keepdim=True))
        return (o * w).sum(2) / (total * w).sum(2)

    return {"sdpa": lambda: F.scaled_dot_product_attention(q, k, v), "q·Kᵀ": matmul, "K·qᵀ": tall,
            "split 8": lambda: split(8)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, nargs="+", default=[16384, 32768, 65536])
    args = parser.parse_args()
    from attnbench.bench.worker.setup import steady_malloc

    steady_malloc()
    torch.manual_seed(0)
    big = torch.randn(128 * 2**20)  # 512 MiB
    src = torch.randn(32 * 2**20)
    dst = torch.empty_like(src)
    groups = args.heads // args.kv_heads
    for r in range(args.rounds):
        read = big.numel() * 4 / median_s(big.sum, 5)
        copy = 2 * src.numel() * 4 / median_s(lambda: dst.copy_(src), 10)
        print(f"round {r + 1}: sum {read / 1e9:.1f} GB/s, copy {copy / 1e9:.1f} GB/s (read + write)")
        for n in args.n:
            k = torch.randn(1, args.kv_heads, n, args.head_dim)
            v = torch.randn_like(k)
            q = torch.randn(1, args.kv_heads, groups, args.head_dim)
            cache = 2 * k.numel() * 4
            for name, fn in ways(q, k, v).items():
                t = median_s(fn)
                print(f"  N={n:6d} {name:8s} {t * 1e3:7.2f} ms  {cache / t / 1e9:5.1f} GB/s of cache "
                      f"({100 * cache / t / copy:3.0f}% of the copy)")


if __name__ == "__main__":
    main()

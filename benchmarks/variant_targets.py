"""Issues 3, 4 and 15's speed targets, measured side by side in one process.

Every layer at every N is timed in interleaved rounds (so drift in the
machine's speed hits all alike, the growth from one N to the next included):
forward under torch.no_grad() and forward+backward, batch 1, dim 512, 8 heads,
the variants' default settings.
With ``--peers PATH`` (the shared tools' peers.py, run from a scratch venv
that has the published packages installed) the published implementations are
timed in the same rounds. Prints a CSV of medians, then the ratios the issues
name.

usage: python benchmarks/variant_targets.py [--ns 4096,8192] [--rounds 5]
           [--variants local,reformer,...] [--peers ../shared/tools/peers.py]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics

import torch

import attnbench
from attnbench.bench.worker.timing import timed

DIM, HEADS = 512, 8

DEFAULT_VARIANTS = ("softmax,local,strided,longformer,bigbird,reformer,routing,sinkhorn,"
                    "nystrom,linear,performer,aft,aft-local,lightconv,dynamicconv,"
                    "compressed,efficient,rfa,fnet,gmlp,mixer,poolingformer")
BUILD = {"aft-local": ("aft", {"mode": "local", "window": 64}), "nystrom": ("nystrom", {"landmarks": 64}),
         "performer": ("performer", {"features": 256}), "aft": ("aft", {"mode": "simple"})}
PEERS = {  # peer name -> the attnbench variants it is compared with
    "local-attention(w=256)": ("local",), "reformer-pytorch(b=64,h=4)": ("reformer",),
    # its non-causal attention is efficient attention (1812.01243); also the linear baseline
    "linear-attention-transformer": ("linear", "efficient"), "performer-pytorch(m=256)": ("performer",),
    "aft-pytorch simple": ("aft",), "nystrom-attention(m=64,no residual)": ("nystrom",),
    "memory-compressed-attention(f=3)": ("compressed",), "g-mlp-pytorch(sgu)": ("gmlp",),
    "mlp-mixer-pytorch(token,256)": ("mixer",), "torch.fft.fft2(fnet)": ("fnet",),
}


def extra_peers(dim: int, heads: int) -> dict[str, object]:
    """Peers at the issue's settings where peers.py builds them otherwise: Nyström with
    64 landmarks and no residual convolution (peers.py: 256 landmarks, residual on)."""
    try:
        from nystrom_attention import NystromAttention
    except ImportError:
        return {}
    return {"nystrom-attention(m=64,no residual)": lambda: NystromAttention(
        dim=dim, dim_head=dim // heads, heads=heads, num_landmarks=64, pinv_iterations=6, residual=False)}


def time_forward(layer: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return timed(lambda: layer(x), x.device)


def time_step(layer: torch.nn.Module, x: torch.Tensor) -> float:
    layer.zero_grad(set_to_none=True)
    x.grad = None
    return timed(lambda: layer(x).sum().backward(), x.device)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ns", default="4096,8192")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--variants", default=DEFAULT_VARIANTS)
    ap.add_argument("--peers", default="")
    a = ap.parse_args()
    ns = [int(n) for n in a.ns.split(",")]
    labels = a.variants.split(",")
    peer_makers = None
    if a.peers:
        spec = importlib.util.spec_from_file_location("peers", a.peers)
        peers_mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(peers_mod)
        peer_makers = peers_mod.peers
    results: dict[tuple[str, int, str], float] = {}
    # Every N's layers in the same rounds: the growth from one N to the next is then
    # measured side by side too, not across a drift of the machine between N phases.
    layers: dict[tuple[str, int], torch.nn.Module] = {}
    inputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for n in ns:
        torch.manual_seed(0)
        for label in labels:
            name, params = BUILD.get(label, (label, {}))
            layers[(label, n)] = attnbench.build(name, dim=DIM, heads=HEADS, seq_len=n, **params)
        if peer_makers is not None:
            # Only the peers of the chosen variants: every other layer in the rounds
            # would churn the allocator for the layers compared.
            for peer, make in {**peer_makers(DIM, HEADS, n), **extra_peers(DIM, HEADS)}.items():
                if any(v in labels for v in PEERS.get(peer, ())) or (peer == "torch.sdpa" and "softmax" in labels):
                    layers[(peer, n)] = make()
        x = torch.randn(1, n, DIM)
        inputs[n] = (x, x.clone().requires_grad_())
    samples: dict[tuple[str, int, str], list[float]] = {}
    for (_label, n), layer in layers.items():  # warm-up
        time_forward(layer, inputs[n][0])
        time_step(layer, inputs[n][1])
    for _ in range(a.rounds):
        for (label, n), layer in layers.items():
            samples.setdefault((label, n, "fwd"), []).append(time_forward(layer, inputs[n][0]))
            samples.setdefault((label, n, "fwd+bwd"), []).append(time_step(layer, inputs[n][1]))
    for key, s in samples.items():
        results[key] = statistics.median(s)
    print(f"threads {torch.get_num_threads()}, rounds {a.rounds}")
    print("layer,N,pass,median_ms")
    for (label, n, kind), ms in results.items():
        print(f"{label},{n},{kind},{ms:.1f}")
    if len(ns) >= 2:
        n0, n1 = ns[0], ns[1]
        print(f"\ngrowth {n0} -> {n1} (fwd, fwd+bwd)")
        for label in labels:
            g = [results[(label, n1, k)] / results[(label, n0, k)] for k in ("fwd", "fwd+bwd")]
            print(f"{label},{g[0]:.2f},{g[1]:.2f}")
    for n in ns:
        if ("local", n, "fwd") in results and ("softmax", n, "fwd") in results:
            print(f"\nN={n} softmax / local: fwd {results[('softmax', n, 'fwd')] / results[('local', n, 'fwd')]:.2f}, "
                  f"fwd+bwd {results[('softmax', n, 'fwd+bwd')] / results[('local', n, 'fwd+bwd')]:.2f}")
        for peer, variants in PEERS.items():
            for label in variants:
                if (peer, n, "fwd") in results and (label, n, "fwd") in results:
                    print(f"N={n} {label} / {peer}: fwd {results[(label, n, 'fwd')] / results[(peer, n, 'fwd')]:.2f}, "
                          f"fwd+bwd {results[(label, n, 'fwd+bwd')] / results[(peer, n, 'fwd+bwd')]:.2f}")


if __name__ == "__main__":
    main()

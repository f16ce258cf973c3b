"""Clustering and learnable patterns: each token attends only to the tokens that a
hash, a router or a learned sort puts next to it.

* ``reformer``: LSH attention of Kitaev, Kaiser & Levskaya, "Reformer: The
  Efficient Transformer" (arXiv 2001.04451).
* ``routing``: Roy, Saffar, Vaswani & Grangier, "Efficient Content-Based Sparse
  Attention with Routing Transformers" (arXiv 2003.05997).
* ``sinkhorn``: Tay, Bahri, Yang, Metzler & Juan, "Sparse Sinkhorn Attention"
  (arXiv 2002.11296).

None of them builds an N×N tensor: scores are (…, groups, group size, keys of
the group), and groups are formed by gathering rows with index tensors.
Masked logits get a large finite negative value, so no row is ever NaN, and
scores are normalised in float32 at least.

Causal note (reformer, routing): keys after the query are masked by original
position, as in the papers. Which tokens share a chunk or a cluster still
depends on the hashes / routes of the whole sequence, as in the papers' causal
models: the weights on future tokens are exactly zero, but changing a future
token can move the chunk or cluster boundaries that an earlier token sees.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from attnbench.variants.layer import (
    AttentionCore,
    acc_dtype,
    check_int,
    cpu_slices,
    in_head_groups,
    matmul_flops,
    pad_seq,
    softmax_flops,
)
from attnbench.variants.registry import ceil_sqrt, register

#: logit of a masked key (finite: a row with every key masked stays finite)
MASKED = -1e9
#: Reformer's logit for a token attending to itself (only used when nothing else is visible)
SELF_LOGIT = -5e4
#: FLOPs per element of Reformer's logsumexp on top of its softmax (max of logits, max of probabilities)
LOGSUMEXP_FLOPS_PER_ELEMENT = 2


def _flat_rows(index: torch.Tensor, n: int) -> torch.Tensor:
    """Positions (B, H, …) in [0, n) -> row ids into a (B·H·n, ·) flattening, as one vector."""
    b, h = index.shape[:2]
    base = torch.arange(b * h, device=index.device).view(b, h, *([1] * (index.dim() - 2))) * n
    return (index + base).reshape(-1)


def _select_rows(x: torch.Tensor, rows: torch.Tensor, width: int) -> torch.Tensor:
    """Rows of x flattened to (-1, width): a row copy (index_select), much cheaper than an
    element-wise gather, with a row-wise index_add as its backward."""
    return x.reshape(-1, width).index_select(0, rows)


def _with_previous(x: torch.Tensor, chunk_dim: int) -> torch.Tensor:
    """Append to every chunk the previous one (cyclically) along the next dim."""
    return torch.cat([x, torch.roll(x, 1, dims=chunk_dim)], dim=chunk_dim + 1)


class _ChunkSoftmax(torch.autograd.Function):
    """Reformer's masked softmax over chunk logits x (…, c, w), in place, and its
    logsumexp for the price of one softmax. Before it, ``hidden`` (broadcastable
    bool) logits get MASKED and the first c columns' diagonal (a token and itself)
    gets SELF_LOGIT; no gradient flows to those. lse = max x − log max p, since the
    largest logit has the largest probability."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, hidden: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if hidden is not None:
            x.masked_fill_(hidden, MASKED)
        x[..., : x.shape[-2]].diagonal(dim1=-2, dim2=-1).fill_(SELF_LOGIT)
        top = x.amax(dim=-1)
        p = torch.softmax(x, dim=-1, out=x)  # in place: the logits are not needed again
        ctx.mark_dirty(p)
        ctx.save_for_backward(p)
        return p, top - p.amax(dim=-1).log()

    @staticmethod
    @once_differentiable
    def backward(ctx, g_p: torch.Tensor, g_lse: torch.Tensor) -> tuple[torch.Tensor, None]:
        (p,) = ctx.saved_tensors
        # softmax: p ⊙ (g − Σ g p); logsumexp: p · g_lse. Masked logits have p = 0
        # (no gradient); the self logit is a constant, so its gradient is cleared.
        grad = g_p * p
        grad.addcmul_(p, g_lse.unsqueeze(-1) - grad.sum(dim=-1, keepdim=True))
        grad[..., : grad.shape[-2]].diagonal(dim1=-2, dim2=-1).zero_()
        return grad, None


@register("reformer", family="clustered", paper="2001.04451",
          complexity="O(n·N·c·d + n·N log N)", causal=True)
class ReformerAttention(AttentionCore):
    """Reformer LSH attention: shared q = k, keys L2-normalised, n hash rounds.

    Per round, h(x) = argmax([xR; −xR]) with a random R of N/c/2 columns (N/c
    buckets, rounded up to even), tokens sorted by (bucket, position) and cut into
    chunks of c = bucket_size; a chunk attends to itself and the previous chunk.
    A token sees itself with logit −5e4 (only when nothing else is visible). The
    rounds are combined with weights softmax over rounds of each round's
    logsumexp. R is drawn from a local generator seeded with ``seed`` (fixed per
    number of buckets, so runs repeat exactly); all rounds run as one batch (on CPU,
    a few at a time once their scores outgrow the workspace, see in_head_groups).
    Pairs met in several rounds are not de-duplicated (the paper's default).
    Hashing into N/c buckets costs n·N·(N/c)·d FLOPs, quadratic but small against
    the attention's 8·n·N·c·d while N ≪ 8·c² (32768 at c = 64); flops() counts it.

    ``n_buckets`` (None: chunks of ``bucket_size``) fixes the number of buckets
    instead, as Long Range Arena's released code does (n_buckets = 10,
    lra_benchmarks/models/reformer/reformer_attention.py): chunks of c = ⌈N/n_buckets⌉
    tokens, so the attention costs n·N·(2N/n_buckets)·d, quadratic in N.

    Parameters:
        bucket_size: c: chunk length (N/c hash buckets)
        n_hashes: n: hash rounds
        seed: seed of the random rotations R
        n_buckets: a fixed number of buckets instead of chunks of bucket_size (None: bucket_size)
    """

    decode_refusal = "cannot decode: a new token's hash bucket changes the sorted chunks earlier tokens attended in"

    approximates_softmax = True
    linear_in_values = True

    shared_qk = True

    def __init__(self, heads: int, head_dim: int, seq_len: int, causal: bool = False,
                 bucket_size: int = 64, n_hashes: int = 4, seed: int = 0,
                 n_buckets: int | None = None) -> None:
        super().__init__(heads, head_dim, seq_len, causal)
        self.bucket_size = check_int("reformer bucket_size", bucket_size)
        if n_buckets is not None and (check_int("reformer n_buckets", n_buckets, 2) % 2):
            raise ValueError(f"reformer n_buckets must be even (argmax over [xR; −xR]), got {n_buckets}")
        self.n_buckets = n_buckets
        self.n_hashes = check_int("reformer n_hashes", n_hashes)
        self.seed = check_int("reformer seed", seed, None)
        self._rotations: dict[tuple, torch.Tensor] = {}

    def exact_logits(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Full shared-QK attention, what LSH approximates: keys are the normalised
        queries, a token's own logit is SELF_LOGIT."""
        scores = torch.matmul(q, F.normalize(k, dim=-1).transpose(-1, -2)) * self.scale
        n = scores.shape[-1]
        return scores.masked_fill(torch.eye(n, dtype=torch.bool, device=q.device), SELF_LOGIT)

    def chunk(self, n: int) -> int:
        """Chunk length c at n tokens: bucket_size, or ⌈n / n_buckets⌉ with n_buckets."""
        return self.bucket_size if self.n_buckets is None else -(-n // self.n_buckets)

    def _layout(self, n: int) -> tuple[int, int, int]:
        """(chunks, padded length, buckets) for a sequence of n tokens."""
        c = self.chunk(n)
        chunks = -(-n // c)
        return chunks, chunks * c, self.n_buckets or max(2, chunks + chunks % 2)

    def rotations(self, n_buckets: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """R of shape (d, n_hashes · n_buckets/2), the same for every call with this seed."""
        key = (n_buckets, device, dtype)
        if key not in self._rotations:
            gen = torch.Generator().manual_seed(self.seed)
            r = torch.randn(self.head_dim, self.n_hashes * (n_buckets // 2), generator=gen,
                            dtype=torch.float64)
            self._rotations[key] = r.to(device=device, dtype=dtype)
        return self._rotations[key]

    def buckets(self, k: torch.Tensor, n_buckets: int) -> torch.Tensor:
        """(B, H, N, d) -> bucket ids (B, H, n_hashes, N)."""
        b, h, n, _ = k.shape
        half = n_buckets // 2
        proj = torch.matmul(k, self.rotations(n_buckets, k.device, k.dtype)).view(b, h, n, self.n_hashes, half)
        # argmax over [xR; −xR] without building the concatenation
        hi, hi_idx = proj.max(dim=-1)
        lo, lo_idx = proj.min(dim=-1)
        return torch.where(hi >= -lo, hi_idx, lo_idx + half).transpose(-1, -2).contiguous()

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        width = self.n_hashes * 2 * self.chunk(q.shape[-2])  # keys scored per query, over all rounds
        return in_head_groups(lambda q, k, v, _: self._heads(q, k, v), q, k, v, width)

    def _heads(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # k is q (shared_qk); hashing and keys use it normalised, queries keep their norm.
        b, h, n, d = q.shape
        c, rounds = self.chunk(n), self.n_hashes
        chunks, npad, n_buckets = self._layout(n)
        keys = F.normalize(k, dim=-1)
        with torch.no_grad():
            pos = torch.arange(npad, device=q.device)
            bucket = F.pad(self.buckets(keys, n_buckets), (0, npad - n), value=n_buckets)  # padding last
            order = (bucket * npad + pos).argsort(dim=-1)  # (B, H, r, Np): positions in sorted order
            q_rows = _flat_rows(order, npad)  # rows of the flattened (B·H·Np, d) tensors
            kv_rows = q_rows.view(b, h, rounds, chunks, c)
            qpos = kpos = order.view(b, h, rounds, chunks, c)
            if chunks > 1:
                kv_rows, kpos = _with_previous(kv_rows, 3), _with_previous(kpos, 3)
        sources = (pad_seq(q * self.scale, npad), pad_seq(keys, npad), pad_seq(v, npad))
        q_rows = q_rows.view(b, h, rounds, npad)
        # On CPU, rounds whose chunk scores outgrow the workspace are taken a few at a time.
        groups = cpu_slices(rounds, b * h * npad * kv_rows.shape[-1] * q.element_size(), q.device)
        parts = [self._rounds(*sources, q_rows[:, :, g], kv_rows[:, :, g], qpos[:, :, g], kpos[:, :, g], n)
                 for g in groups]
        lse = torch.cat([lse for _, lse in parts], dim=2) if len(parts) > 1 else parts[0][1]
        # Round weights: softmax over rounds of the logsumexp at each original position;
        # then index_add both unsorts and sums the rounds.
        lse_by_pos = lse.new_empty(lse.shape).scatter(-1, order, lse)
        weights = torch.softmax(lse_by_pos, dim=2).gather(-1, order)
        result = q.new_zeros(b * h * npad, d)
        for g, (out, _) in zip(groups, parts, strict=True):
            weighted = (out * weights[:, :, g].unsqueeze(-1).to(out.dtype)).view(-1, d)
            result = result.index_add(0, q_rows[:, :, g].reshape(-1), weighted)
        return result.view(b, h, npad, d)[:, :, :n]

    def _rounds(self, q: torch.Tensor, keys: torch.Tensor, v: torch.Tensor, q_rows: torch.Tensor,
                kv_rows: torch.Tensor, qpos: torch.Tensor, kpos: torch.Tensor,
                n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Chunked attention for some hash rounds: sorted outputs (B, H, r, Np, d) and their
        logsumexp (B, H, r, Np). q pre-scaled and padded to Np; the rows and positions
        index the flattened (B·H·Np, d) tensors, per round, in sorted order."""
        b, h, rounds, npad = q_rows.shape
        d = q.shape[-1]
        sq = _select_rows(q, q_rows.reshape(-1), d)
        sk = _select_rows(keys, kv_rows.reshape(-1), d)
        sv = _select_rows(v, kv_rows.reshape(-1), d)
        shape = (b * h * rounds * qpos.shape[3], -1, d)
        dots = torch.bmm(sq.view(shape), sk.view(shape).transpose(1, 2))  # (B·H·r·chunks, c, c or 2c)
        del sq, sk  # a forward-only pass frees them now (autograd keeps what backward needs)
        hidden = (kpos >= n).unsqueeze(-2) if npad > n else None
        if self.causal:
            future = kpos.unsqueeze(-2) > qpos.unsqueeze(-1)
            hidden = future if hidden is None else hidden | future
        if hidden is not None:
            hidden = hidden.reshape(-1, *hidden.shape[-2:])
        probs, lse = _ChunkSoftmax.apply(dots.to(acc_dtype(dots.dtype)), hidden)
        out = torch.bmm(probs.to(v.dtype), sv.view(shape))
        return out.view(b, h, rounds, npad, d), lse.view(b, h, rounds, npad)

    def flops(self, batch: int, seq_len: int) -> int:
        n, d, c, rounds = seq_len, self.head_dim, self.chunk(seq_len), self.n_hashes
        chunks, npad, n_buckets = self._layout(n)
        width = 2 * c if chunks > 1 else c
        hashing = matmul_flops(n, rounds * (n_buckets // 2), d) + rounds * n * n_buckets
        sorting = rounds * npad * max(1, math.ceil(math.log2(npad)))
        per_round = (npad * d  # scale the queries
                     + matmul_flops(npad, width, d) + matmul_flops(npad, d, width)
                     + softmax_flops(npad * width) + LOGSUMEXP_FLOPS_PER_ELEMENT * npad * width)
        combine = softmax_flops(rounds * npad) + 2 * rounds * npad * d
        per_head = 3 * n * d + hashing + sorting + rounds * per_round + combine
        return batch * self.heads * per_head


@register("routing", family="clustered", paper="2003.05997", complexity="O(N^1.5·d)", causal=True)
class RoutingAttention(AttentionCore):
    """Routing Transformer: k-means routing of L2-normalised q and k to ``clusters``
    centroids (⌈√seq_len⌉ when None), balanced: each cluster takes the w = ⌈N/k⌉
    queries and, separately, the w keys nearest its centroid; attention inside each
    cluster; every query's outputs are scattered back and averaged over the
    clusters it landed in.

    A query in no cluster (or, when causal, seeing no earlier key in any of its
    clusters) gets a zero output. Centroids are a buffer (heads, clusters, d)
    drawn from a generator with a fixed seed, and updated by an exponential moving
    average (decay 0.999) of their assigned normalised q and k, in training mode
    only (``module.eval()`` freezes them). Routing is not differentiated.

    Parameters:
        clusters: k: k-means centroids; None: ⌈√seq_len⌉
    """

    decode_refusal = "cannot decode: its k-means clusters are formed over the whole sequence; a new token moves them"

    approximates_softmax = True
    linear_in_values = True

    decay = 0.999

    def __init__(self, heads: int, head_dim: int, seq_len: int, causal: bool = False,
                 clusters: int | None = None) -> None:
        super().__init__(heads, head_dim, seq_len, causal)
        if clusters is None:
            clusters = ceil_sqrt(seq_len)
        self.clusters = check_int("routing clusters", clusters)
        if clusters > seq_len:
            raise ValueError(f"routing clusters ({clusters}) must not exceed seq_len ({seq_len})")
        gen = torch.Generator().manual_seed(0)
        self.register_buffer("centroids", F.normalize(torch.randn(heads, clusters, head_dim, generator=gen), dim=-1))

    def cluster_size(self, n: int) -> int:
        return min(n, -(-n // self.clusters))

    @torch.no_grad()
    def route(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions of the queries and keys each cluster takes: two (B, H, clusters, w)."""
        w = self.cluster_size(q.shape[-2])
        mu = self.centroids.to(q.dtype)
        qn, kn = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        sim_q = torch.matmul(mu, qn.transpose(-1, -2))  # (B, H, clusters, N)
        sim_k = torch.matmul(mu, kn.transpose(-1, -2))
        if self.training:
            self._update(torch.cat([qn, kn], dim=2), torch.cat([sim_q, sim_k], dim=-1))
        return sim_q.topk(w, dim=-1).indices, sim_k.topk(w, dim=-1).indices

    def _update(self, x: torch.Tensor, sim: torch.Tensor) -> None:
        """One k-means step by EMA: x (B, H, M, d) normalised vectors, sim (B, H, clusters, M)."""
        h, kc, d = self.centroids.shape
        mu = self.centroids.float()  # float32: a 0.001 step vanishes in half precision
        assign = sim.argmax(dim=2).transpose(0, 1).reshape(h, -1)  # nearest centroid of each vector
        x = x.transpose(0, 1).reshape(h, -1, d).float()
        sums = x.new_zeros(h, kc, d).scatter_add_(1, assign.unsqueeze(-1).expand(-1, -1, d), x)
        counts = x.new_zeros(h, kc).scatter_add_(1, assign, x.new_ones(assign.shape)).unsqueeze(-1)
        moved = self.decay * mu + (1 - self.decay) * sums / counts.clamp(min=1)
        self.centroids.copy_(F.normalize(torch.where(counts > 0, moved, mu), dim=-1))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, h, n, d = q.shape
        q_idx, k_idx = self.route(q, k)  # (B, H, clusters, w)
        kc, w = q_idx.shape[-2:]
        q_rows, k_rows = _flat_rows(q_idx, n), _flat_rows(k_idx, n)
        shape = (b * h * kc, w, d)
        cq = _select_rows(q * self.scale, q_rows, d).view(shape)
        ck = _select_rows(k, k_rows, d).view(shape)
        cv = _select_rows(v, k_rows, d).view(shape)
        dots = torch.bmm(cq, ck.transpose(1, 2))  # (B·H·clusters, w, w)
        dots = dots.to(acc_dtype(dots.dtype))
        hits = None
        if self.causal:
            future = (k_idx.unsqueeze(-2) > q_idx.unsqueeze(-1)).view(dots.shape)
            dots.masked_fill_(future, MASKED)
            hits = (~future).any(dim=-1)  # the query sees some key in this cluster
        out = torch.bmm(torch.softmax(dots, dim=-1).to(v.dtype), cv)
        if hits is None:
            hits = out.new_ones(b * h * kc * w)
        else:
            out = out * hits.unsqueeze(-1)
            hits = hits.to(out.dtype).view(-1)
        total = out.new_zeros(b * h * n, d).index_add(0, q_rows, out.view(-1, d))
        count = hits.new_zeros(b * h * n).index_add(0, q_rows, hits)
        return (total / count.clamp(min=1).unsqueeze(-1)).view(b, h, n, d)

    def flops(self, batch: int, seq_len: int) -> int:
        n, d, kc = seq_len, self.head_dim, self.clusters
        w = self.cluster_size(n)
        route = 2 * (3 * n * d + matmul_flops(kc, n, d) + kc * n)  # normalise, similarities, top-w
        attend = kc * (2 * matmul_flops(w, w, d) + w * d + softmax_flops(w * w))
        gather_back = kc * w * d + n * d  # scatter-add, mean
        ema = 2 * (kc * n + n * d) + 6 * kc * d if self.training else 0
        return batch * self.heads * (route + attend + gather_back + ema)


class _SortedBlocks(torch.autograd.Function):
    """Straight-through sort: x (B, H, nb, 2, b, d) holds [own block, sorted block];
    the forward pass returns x unchanged (the hard sort), the backward pass gives
    p (B, H, nb), the sort-matrix entry that chose each sorted block, the gradient
    it has in the soft sort Σ_j P_ij X_j, i.e. <grad, X_j*> over the sorted block."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.p_dtype = p.dtype
        return x.view_as(x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        (x,) = ctx.saved_tensors
        g_p = (grad[:, :, :, 1] * x[:, :, :, 1]).sum(dim=(-1, -2), dtype=ctx.p_dtype)
        return grad, g_p


@register("sinkhorn", family="clustered", paper="2002.11296", complexity="O(N·b·d + (N/b)²·d)", causal=False)
class SinkhornAttention(AttentionCore):
    """Sparse Sinkhorn attention: blocks of b; a sort net (Linear d→d, ReLU,
    Linear d→⌈seq_len/b⌉, shared by the heads) maps each block's mean key to one
    row of an (N/b × N/b) matrix, made doubly stochastic by ``iters`` Sinkhorn
    iterations in log space at ``temperature``. Each query block attends to its
    own block and to its sorted block: keys and values are both taken from the
    block that its row of the sort matrix prefers (hard sort, O(N·d) instead of the
    dense soft sort's O(N²·d/b)); the backward pass gives the chosen P_ij the
    gradient it has in the soft sort Σ_j P_ij X_j (straight-through). No Gumbel noise,
    so the layer is deterministic. Causal Sinkhorn is not implemented.

    Parameters:
        block: b: the block size
        iters: Sinkhorn iterations (in log space)
        temperature: temperature of the sort matrix
    """

    decode_refusal = 'cannot decode: it is not causal (the sorting network reads every block)'

    approximates_softmax = True
    linear_in_values = True

    def __init__(self, heads: int, head_dim: int, seq_len: int, causal: bool = False,
                 block: int = 64, iters: int = 5, temperature: float = 0.75) -> None:
        super().__init__(heads, head_dim, seq_len, causal)
        self.block = check_int("sinkhorn block", block)
        self.iters = check_int("sinkhorn iters", iters)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"sinkhorn temperature must be a positive number, got {temperature!r}")
        self.temperature = float(temperature)
        self.max_blocks = -(-seq_len // block)
        self.sort_net = nn.Sequential(nn.Linear(head_dim, head_dim), nn.ReLU(),
                                      nn.Linear(head_dim, self.max_blocks))

    def sort_matrix(self, k: torch.Tensor) -> torch.Tensor:
        """Keys (B, H, N, d) -> doubly stochastic (B, H, N/b, N/b), in float32 at least."""
        n = k.shape[-2]
        nb = -(-n // self.block)
        if nb > self.max_blocks:
            raise ValueError(f"sinkhorn was built for seq_len {self.seq_len} ({self.max_blocks} blocks), "
                             f"got {n} tokens")
        sums = pad_seq(k, nb * self.block).unflatten(-2, (nb, self.block)).sum(-2)
        sizes = (n - self.block * torch.arange(nb, device=k.device)).clamp(max=self.block)
        summary = sums / sizes.unsqueeze(-1).to(k.dtype)  # mean key of each block, padding excluded
        logits = self.sort_net(summary)[..., :nb]
        log_p = logits.to(acc_dtype(logits.dtype)) / self.temperature
        for _ in range(self.iters):
            log_p = log_p - torch.logsumexp(log_p, dim=-1, keepdim=True)  # rows
            log_p = log_p - torch.logsumexp(log_p, dim=-2, keepdim=True)  # columns
        return log_p.exp()

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, h, n, d = q.shape
        bs = self.block
        p, choice = self.sort_matrix(k).max(dim=-1)  # (B, H, nb): the block each block is sorted to
        nb = choice.shape[-1]
        npad = nb * bs
        # Keys and values of [own block, sorted block] for every query block: (B, H, nb, 2, b, d).
        blocks = torch.stack([torch.arange(nb, device=q.device).expand(b, h, nb), choice], dim=-1)
        rows = _flat_rows(blocks, nb)
        keys = _SortedBlocks.apply(_select_rows(pad_seq(k, npad), rows, bs * d).view(b, h, nb, 2, bs, d), p)
        values = _SortedBlocks.apply(_select_rows(pad_seq(v, npad), rows, bs * d).view(b, h, nb, 2, bs, d), p)
        shape = (b * h * nb, -1, d)
        dots = torch.bmm(pad_seq(q * self.scale, npad).reshape(shape), keys.reshape(shape).transpose(1, 2))
        dots = dots.to(acc_dtype(dots.dtype))  # (B·H·nb, b, 2b)
        if npad > n:
            kpos = blocks.unsqueeze(-1) * bs + torch.arange(bs, device=q.device)
            dots.masked_fill_((kpos >= n).view(-1, 1, 2 * bs), MASKED)
        out = torch.bmm(torch.softmax(dots, dim=-1).to(v.dtype), values.reshape(shape))
        return out.view(b, h, npad, d)[:, :, :n]

    def flops(self, batch: int, seq_len: int) -> int:
        d, bs = self.head_dim, self.block
        nb = -(-seq_len // bs)
        npad = nb * bs
        sort_net = npad * d + matmul_flops(nb, d, d) + nb * d + matmul_flops(nb, self.max_blocks, d)
        # each iteration normalises rows then columns in log space; then exp and the row argmax
        sinkhorn = 2 * self.iters * softmax_flops(nb * nb) + 2 * nb * nb
        attend = (npad * d  # scale the queries
                  + matmul_flops(npad, 2 * bs, d) + matmul_flops(npad, d, 2 * bs) + softmax_flops(npad * 2 * bs))
        return batch * self.heads * (sort_net + sinkhorn + attend)

"""Random-feature kernels: Performer (FAVOR+) and random feature attention (RFA).

Both estimate a softmax-like kernel by an explicit random feature map φ and then
run as linear attention through :func:`attnbench.variants.kernel.kernel_attention`
(the products reordered, O(N·f·d) for f features).

* ``performer``: Choromanski et al., "Rethinking Attention with Performers"
  (arXiv 2009.14794), FAVOR+ positive orthogonal random features,
  φ(x) = m^-1/2 exp(W x' − ‖x'‖²/2), x' = d^-1/4 x, so that
  E[φ(q)·φ(k)] = exp(qᵀk/√d), the softmax kernel.
* ``rfa``: Peng et al., "Random Feature Attention" (arXiv 2103.02143), q and k
  ℓ2-normalised, φ(x) = D^-1/2 [sin(Wx/σ), cos(Wx/σ)] (random Fourier features,
  Rahimi & Recht), E[φ(q)·φ(k)] = exp(−‖q − k‖²/2σ²); optionally the paper's
  gated causal recurrence.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from attnbench.variants.decoding import DecodeState, group_queries, ungroup_queries
from attnbench.variants.kernel import DEFAULT_EPS, kernel_attention, kernel_attention_flops, kernel_state, kernel_step
from attnbench.variants.layer import (
    AttentionCore,
    acc_dtype,
    check_int,
    in_head_groups,
    linear_flops,
    matmul_flops,
    softmax_flops,
    split_projection,
)
from attnbench.variants.registry import register


def orthogonal_gaussian_matrix(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    """W ∈ R^{rows×cols} as in FAVOR+ (arXiv 2009.14794, §4): stacked blocks of cols
    orthonormal rows (Q of the QR decomposition of a Gaussian cols×cols matrix; the
    last block truncated), each row rescaled to the norm of an independent Gaussian
    vector (chi distributed with cols degrees of freedom), so that every row is
    marginally N(0, I) while rows within a block are exactly orthogonal."""
    blocks = []
    for _ in range(-(-rows // cols)):
        gaussian = torch.randn(cols, cols, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(gaussian)
        # Fix the signs (diag(R) > 0) so that Q is Haar-distributed.
        q = q * torch.where(torch.diagonal(r) < 0, -1.0, 1.0)
        blocks.append(q.T)
    w = torch.cat(blocks)[:rows]
    norms = torch.randn(rows, cols, generator=generator, dtype=torch.float64).norm(dim=1)
    return (w * norms[:, None]).to(torch.float32)


@register("performer", family="kernel", paper="2009.14794", complexity="O(N·m·d)", causal=True)
class PerformerAttention(AttentionCore):
    """Performer FAVOR+: positive orthogonal random features φ(x) = m^-1/2 exp(Wx' − ‖x'‖²/2)
    estimating the softmax kernel, then linear attention (causal by chunked prefix sums).

    Stabilisers (exp would overflow or underflow otherwise) are subtracted in the
    exponent and detached; a stabiliser shared by every key a query may see is a
    constant factor of both the numerator and the normaliser, so it cancels:

    * queries: a factor per query cancels, so the stabilised φ(q) is softmax over the
      features of W q' (the max subtracted; ‖q'‖²/2 and m^-1/2 are per-query constants
      too, and so is the softmax's own normalisation, which keeps φ(q) summing to 1).
    * keys, not causal: the max over all keys and features (per batch item and head).
    * keys, causal: a global max would let a later key change earlier outputs (through
      eps, underflow and overflow), so key j is stabilised by the running max M_j over
      keys <= j, and :func:`kernel_attention` works for query i in the frame M_i, weighting
      key j <= i by exp(M_j − M_i) <= 1 (inside a chunk on the c×c block, between chunks on
      the carried state). Output i depends on keys <= i only, for any chunk size.

    ``eps`` is in units of the stabilised features (query features sum to 1, the
    largest key feature is m^-1/2). W is drawn once from ``seed`` with a local
    generator (the global RNG is left alone) and kept as a buffer.

    On CPU, heads run in groups whose (batch × N × m) feature tensors fit the
    workspace budget of :func:`in_head_groups` (page faults on larger blocks made the
    time grow 2.4× from N = 4096 to 8192 instead of 2×).

    Parameters:
        features: m: the random features
        chunk: chunk length of the causal prefix sums
        seed: seed of the random features W
    """

    approximates_softmax = True
    linear_in_values = True
    decode_refusal = None  # a recurrent state [S z] in the frame of the running key max
    kv_heads_refusal = None

    def __init__(self, heads: int, head_dim: int, seq_len: int, causal: bool = False,
                 features: int = 256, chunk: int = 64, seed: int = 0) -> None:
        super().__init__(heads, head_dim, seq_len, causal)
        self.features = check_int("performer features", features)
        self.chunk = check_int("performer chunk", chunk)
        self.seed = check_int("performer seed", seed, None)
        self.eps = DEFAULT_EPS
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", orthogonal_gaussian_matrix(features, head_dim, generator))

    def _projected(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, H, N, d) -> W x' (B, H, N, m), x' = d^-1/4 x."""
        w = self.projection.to(x.dtype) * self.head_dim ** -0.25
        return torch.matmul(x, w.T)

    def _half_sq_norm(self, x: torch.Tensor) -> torch.Tensor:
        """‖x'‖²/2: (B, H, N, 1)."""
        return x.pow(2).sum(-1, keepdim=True) * (0.5 * self.head_dim ** -0.5)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Unstabilised φ(x) = m^-1/2 exp(W x' − ‖x'‖²/2), so that φ(q)·φ(k) is an unbiased
        estimate of exp(qᵀk/√d). Used by tests and for reference, not by forward()."""
        return torch.exp(self._projected(x) - self._half_sq_norm(x) - 0.5 * math.log(self.features))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # Autocast off: the feature map's exponent needs float32, autocast would make
        # its products half precision again.
        with torch.autocast(q.device.type, enabled=False):
            return in_head_groups(lambda q, k, v, _: self.attend_scores(q, k, v), q, k, v, self.features)

    def attend_scores(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        in_dtype, dt = v.dtype, acc_dtype(q.dtype)
        q, k, v = q.to(dt), k.to(dt), v.to(dt)
        log_norm = 0.5 * math.log(self.features)  # the m^-1/2 factor, inside the exp

        # Queries: any positive factor per query cancels, so softmax over the features
        # (max-subtract, exp and a row scale in one fused pass) is a stabilised φ(q).
        phi_q = torch.softmax(self._projected(q), dim=-1)

        proj_k, half_sq = self._projected(k), self._half_sq_norm(k)
        # Per-key max exponent over the features: (B, H, N).
        key_max = (proj_k.detach().amax(-1, keepdim=True) - half_sq.detach()).squeeze(-1)
        if self.causal:
            stab = key_max.cummax(dim=-1).values  # running max: keys <= i only
        else:
            stab = key_max.amax(-1, keepdim=True)  # global max (per batch item and head)
        phi_k = proj_k.sub_(half_sq + (stab.unsqueeze(-1) + log_norm)).exp_()

        out = kernel_attention(phi_q, phi_k, v, causal=self.causal, chunk=self.chunk, eps=self.eps,
                               log_scale=stab if self.causal else None)
        return out.to(in_dtype)

    def _key_exponents(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(W k' − ‖k'‖²/2 − log √m: (B, H, N, m), the max of W k' − ‖k'‖²/2 over the
        features: (B, H, N), the forward's per-key stabiliser)."""
        log_norm = 0.5 * math.log(self.features)
        exponents = self._projected(k) - self._half_sq_norm(k) - log_norm
        return exponents, exponents.detach().amax(-1) + log_norm

    def decode_state(self, k: torch.Tensor, v: torch.Tensor, capacity: int) -> DecodeState:
        """The state after N keys, [S z] in the frame M_N (the running max after the last
        key), with M_N: what query N + 1 reads in frame max(M_N, its own key's max), as
        the chunked form does."""
        dt = acc_dtype(k.dtype)
        with torch.autocast(k.device.type, enabled=False):
            exponents, key_max = self._key_exponents(k.to(dt))
            frame = key_max.amax(-1)  # (B, kv_heads)
            state = kernel_state(torch.exp(exponents - frame[..., None, None]), v.to(dt))
        return DecodeState(length=k.shape[-2], recurrent=(state, frame))

    def step(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             state: DecodeState) -> tuple[torch.Tensor, DecodeState]:
        dt = acc_dtype(q.dtype)
        s, frame = state.recurrent
        with torch.autocast(q.device.type, enabled=False):
            exponents, key_max = self._key_exponents(k.to(dt))
            new_frame = torch.maximum(frame, key_max[..., 0])
            phi_k = torch.exp(exponents - new_frame[..., None, None])
            phi_q = torch.softmax(self._projected(group_queries(q.to(dt), k.shape[1])), dim=-1)
            out, s = kernel_step(phi_q, phi_k, v.to(dt), s, self.eps,
                                 decay=torch.exp(frame - new_frame)[..., None, None])
        return (ungroup_queries(out, q.shape[1]).to(v.dtype),
                DecodeState(length=state.length + 1, recurrent=(s, new_frame)))

    def flops(self, batch: int, seq_len: int) -> int:
        bh, n, d, m = batch * self.heads, seq_len, self.head_dim, self.features
        # Per q and k: projection, squared norm (k), then softmax (q) or max, subtract, exp (k).
        features = 2 * matmul_flops(n, m, d) + 2 * n * d + softmax_flops(n * m) + 3 * n * m
        return bh * features + kernel_attention_flops(bh, n, m, d, self.causal, self.chunk,
                                                       scaled=self.causal)


@register("rfa", family="kernel", paper="2103.02143", complexity="O(N·D·d)", causal=True)
class RandomFeatureAttention(AttentionCore):
    """Random feature attention (RFA): q, k ℓ2-normalised, random Fourier features
    φ(x) = D^-1/2 [sin(Wx/σ), cos(Wx/σ)] estimating exp(−‖q − k‖²/2σ²), then linear
    attention; causal by chunked prefix sums, ``gate`` the paper's gated recurrence.

    W (D×d, standard Gaussian) is drawn once from ``seed`` with a local generator and
    kept as a buffer. The features are not positive, so φ(q)ᵀz is an estimate of a
    positive normaliser, as in the paper (eps is added as for ``linear``).

    ``gate: true`` (causal only, Peng et al. §3.3): S_t = g_t S_{t−1} + (1 − g_t) φ(k_t) v_tᵀ
    and likewise z_t, with g_t = sigmoid(w_h·x_t + b_h) per head from the layer input x
    (a learned dim → heads projection). Unrolled, key j reaches query i ≥ j with the
    weight (1 − g_j) exp(G_i − G_j), G the running sum of log g_t: the chunked kernel
    attention with features φ(k_j)(1 − g_j) and the frames −G (``log_scale``), every
    factor ≤ 1, no N×D×d state. The gate needs x, so the gated layer runs through
    :meth:`whole_layer` (projections, gates, core, output projection).

    In float32 at least with autocast off (the sums over N); on CPU heads run in
    groups whose (batch × N × 2D) features fit the workspace (:func:`in_head_groups`).

    Parameters:
        features: D: random Fourier features (2D feature values)
        sigma: σ: the kernel's bandwidth
        gate: the paper's gated causal recurrence (causal only)
        chunk: chunk length of the causal prefix sums
        seed: seed of the random features W
    """

    approximates_softmax = True
    linear_in_values = True
    decode_refusal = None  # a recurrent state [S z] (gated: decayed by each token's gate)
    kv_heads_refusal = None

    def __init__(self, heads: int, head_dim: int, seq_len: int, causal: bool = False,
                 features: int = 128, sigma: float = 1.0, gate: bool = False, chunk: int = 64,
                 seed: int = 0) -> None:
        super().__init__(heads, head_dim, seq_len, causal)
        self.features = check_int("rfa features", features)
        if (not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or not math.isfinite(sigma)
                or sigma <= 0):
            raise ValueError(f"rfa sigma must be a positive number, got {sigma!r}")
        if not isinstance(gate, bool):
            raise ValueError(f"rfa gate must be true or false, got {gate!r}")
        if gate and not causal:
            raise ValueError("rfa gate is the paper's causal recurrence: it needs causal: true")
        self.sigma = float(sigma)
        self.gate = gate
        self.chunk = check_int("rfa chunk", chunk)
        self.seed = check_int("rfa seed", seed, None)
        self.eps = DEFAULT_EPS
        generator = torch.Generator().manual_seed(seed)
        w = torch.randn(features, head_dim, generator=generator, dtype=torch.float64)
        self.register_buffer("projection", w.to(torch.float32))
        self.gate_proj = nn.Linear(heads * head_dim, heads) if gate else None
        if gate:  # one gate per query head: its state cannot be shared
            self.kv_heads_refusal = "with gate: true keeps one gated state per query head"

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x / ‖x‖) = D^-1/2 [sin(Wx/σ), cos(Wx/σ)]: (…, d) -> (…, 2D)."""
        w = self.projection.to(x.dtype) * (1.0 / self.sigma)
        proj = torch.matmul(F.normalize(x, dim=-1), w.T)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1).mul_(self.features ** -0.5)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                gate_logits: torch.Tensor | None = None) -> torch.Tensor:
        """q, k, v (B, H, N, d); ``gate_logits`` (B, H, N), w_h·x_t + b_h, for the gated form."""
        if self.gate and gate_logits is None:
            raise ValueError("gated rfa reads its gates from the layer input: call the layer, not its core")
        d = v.shape[-1]
        with torch.autocast(q.device.type, enabled=False):  # features and sums over N in float32
            if gate_logits is not None:  # ride along with v through the head groups
                v = torch.cat([v, gate_logits.unsqueeze(-1).to(v.dtype)], dim=-1)
            return in_head_groups(lambda q, k, v, _: self.attend_scores(q, k, v, d), q, k, v, 2 * self.features)

    def attend_scores(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, d: int) -> torch.Tensor:
        in_dtype, dt = q.dtype, acc_dtype(q.dtype)
        phi_q, phi_k = self.feature_map(q.to(dt)), self.feature_map(k.to(dt))
        v = v.to(dt)
        if v.shape[-1] == d:
            out = kernel_attention(phi_q, phi_k, v, causal=self.causal, chunk=self.chunk, eps=self.eps)
        else:
            v, logits = v.split([d, 1], dim=-1)
            logits = logits.squeeze(-1)
            frames = -F.logsigmoid(logits).cumsum(-1)  # −G_t, non-decreasing
            phi_k = phi_k * torch.sigmoid(-logits).unsqueeze(-1)  # φ(k_j)(1 − g_j)
            out = kernel_attention(phi_q, phi_k, v, causal=True, chunk=self.chunk, eps=self.eps,
                                   log_scale=frames)
        return out.to(in_dtype)

    def whole_layer(self, x: torch.Tensor, qkv: nn.Linear, out: nn.Linear) -> torch.Tensor | None:
        """The gated layer (its gates come from x); None otherwise: the standard layer."""
        if self.gate_proj is None:
            return None
        q, k, v = split_projection(qkv(x), 3, self.heads)
        result = self(q, k, v, gate_logits=self.gate_proj(x).transpose(1, 2))
        b, h, n, d = result.shape
        return out(result.transpose(1, 2).reshape(b, n, h * d))

    def decode_state(self, k: torch.Tensor, v: torch.Tensor, capacity: int,
                     gate_logits: torch.Tensor | None = None) -> DecodeState:
        """The state after N keys: Σ_j φ(k_j)ᵀ[v_j 1], or with the gate
        Σ_j (1 − g_j) Π_{j<t≤N} g_t φ(k_j)ᵀ[v_j 1]."""
        dt = acc_dtype(k.dtype)
        with torch.autocast(k.device.type, enabled=False):
            phi_k, v = self.feature_map(k.to(dt)), v.to(dt)
            if gate_logits is not None:
                logits = gate_logits.to(dt)
                frames = -F.logsigmoid(logits).cumsum(-1)  # −G_t, non-decreasing
                weight = torch.sigmoid(-logits) * torch.exp(frames - frames[..., -1:])  # (1 − g_j)·Π g_t ≤ 1
                phi_k = phi_k * weight.unsqueeze(-1)
            state = kernel_state(phi_k, v)
        return DecodeState(length=k.shape[-2], recurrent=(state,))

    def step(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: DecodeState,
             gate_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, DecodeState]:
        dt = acc_dtype(q.dtype)
        with torch.autocast(q.device.type, enabled=False):
            phi_q = self.feature_map(group_queries(q.to(dt), k.shape[1]))
            phi_k, decay = self.feature_map(k.to(dt)), 1.0
            if gate_logits is not None:  # (B, H, 1): S ← g S + (1 − g) φ(k)ᵀ[v 1]
                logits = gate_logits.to(dt).unsqueeze(-1)
                decay, phi_k = torch.sigmoid(logits), phi_k * torch.sigmoid(-logits)
            out, s = kernel_step(phi_q, phi_k, v.to(dt), state.recurrent[0], self.eps, decay=decay)
        return ungroup_queries(out, q.shape[1]).to(v.dtype), DecodeState(length=state.length + 1, recurrent=(s,))

    def layer_input(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the prefill and step read from the layer input x (B, N, dim): the gates."""
        return {} if self.gate_proj is None else {"gate_logits": self.gate_proj(x).transpose(1, 2)}

    def flops(self, batch: int, seq_len: int) -> int:
        bh, n, d, m = batch * self.heads, seq_len, self.head_dim, self.features
        # Per q and k: normalise (square, sum, divide), W x/σ, sin and cos, scale.
        features = 2 * (3 * n * d + matmul_flops(n, m, d) + 2 * n * m + 2 * n * m)
        total = bh * features + kernel_attention_flops(bh, n, 2 * m, d, self.causal, self.chunk,
                                                        scaled=self.gate)
        if self.gate:  # gate logits; logsigmoid, cumsum, sigmoid; φ(k)(1 − g)
            total += linear_flops(batch * n, self.heads * d, self.heads) + bh * (3 * n + 2 * n * m)
        return total

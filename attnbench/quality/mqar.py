"""Multi-query associative recall (MQAR): what a mechanism can still learn.

The task of the Zoology study (Arora et al., arXiv 2312.04927; the generator
follows HazyResearch/zoology ``zoology/data/multiquery_ar.py``). A sequence
opens with ``pairs`` key-value pairs (keys from the lower half of the
vocabulary, values from the upper half, distinct within a sequence); the rest
holds each key once more, as a query, at an even offset whose distance from
the context follows Zoology's power law (``power_a`` = 0.01: mostly near the
start), and random tokens everywhere else. The label at a query's position is
its key's value; every other position is -100 (ignored). Generated here,
seeded, no download.

The model is Zoology's: a token embedding plus a learned absolute position
embedding (for every mixer alike: a previous-token step is how attention builds
the induction it needs, and the convolutions and attention-free mixers do not
mind it), then ``layers`` pre-norm blocks x + mixer(LN(x)), x + MLP(LN(x))
where the mixer is the variant's layer (``attnbench.build``), a final norm and
an LM head. It trains with AdamW (linear warm-up, cosine decay) on fresh
batches for a fixed number of steps, then is scored on held-out sequences drawn
from another seed.

Causal where the variant supports it. A variant that refuses causal runs
non-causal, which is not cheating here: labels are never inputs, and after the
context a query's value only reappears by chance among the random filler
(``tests/quality/test_mqar.py`` checks it), so looking ahead shows nothing.

A run whose loss turns NaN or infinite stops there and is recorded
``diverged``, not as accuracy 0.

The default sizes (``MQARConfig``) are chosen for a 2-core CPU: vocabulary 64,
N = 32, 4 pairs, width 64 with 2 heads, 400 steps of 64 fresh sequences at
lr 3e-3. Softmax attention then passes 95% held-out accuracy (the induction it
needs forms after about 300 steps), while linear attention and the
convolutions stay far below: Zoology's gap, at a size that trains in seconds.
Zoology's own runs (vocabulary 8192, N up to 512, 100k sequences per epoch) are
out of a CPU's reach.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attnbench.variants import build, variant_info

IGNORE = -100

#: progress(step, loss, accuracy on the current batch)
Progress = Callable[[int, float, float], None]


@dataclass(frozen=True)
class MQARConfig:
    """Sizes and budget of one MQAR measurement (every variant runs at exactly these)."""

    vocab: int = 64
    seq_len: int = 32
    pairs: int = 4
    dim: int = 64
    heads: int = 2
    layers: int = 2
    steps: int = 400
    batch: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.1
    warmup: int = 30
    eval_sequences: int = 512
    power_a: float = 0.01

    def __post_init__(self) -> None:
        if self.seq_len % 2:
            raise ValueError(f"mqar seq_len must be even, got {self.seq_len}")
        if 4 * self.pairs > self.seq_len:
            raise ValueError(f"mqar needs 4·pairs <= seq_len (context and queries), got pairs "
                             f"{self.pairs}, seq_len {self.seq_len}")
        if self.vocab // 2 - 1 < self.pairs:
            raise ValueError(f"mqar vocab ({self.vocab}) must hold {self.pairs} distinct keys "
                             "(1 .. vocab/2 - 1) and as many values")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MQARResult:
    """One training run: ``status`` ok | diverged | error; accuracy only when ok."""

    variant: str
    params: dict[str, Any]
    seed: int
    causal: bool
    status: str
    accuracy: float | None
    final_loss: float | None
    steps_done: int
    train_s: float  # wall time of training and scoring
    cpu_s: float  # CPU time of this process over the same span (less sensitive to load)
    config: MQARConfig
    error: str = ""
    label: str = ""
    curve: tuple[tuple[int, float, float], ...] = field(default=())  # (step, loss, batch accuracy)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: a NaN or infinite loss (a diverged run) becomes its text."""
        d = asdict(self)
        d["curve"] = [[step, _finite(loss), acc] for step, loss, acc in self.curve]
        d["final_loss"] = _finite(self.final_loss)
        d["label"] = self.label or self.variant
        return d


def _finite(x: float | None) -> float | str | None:
    return x if x is None or math.isfinite(x) else str(x)


def mqar_batch(batch: int, seq_len: int, vocab: int, pairs: int, generator: torch.Generator,
               power_a: float = 0.01, random_non_queries: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` MQAR sequences: inputs (batch, seq_len) and labels (same, -100 where unqueried)."""
    key_vocab = vocab // 2
    context = 2 * pairs
    # Distinct keys in [1, vocab/2) and values in [vocab/2, vocab) per sequence.
    keys = torch.rand(batch, key_vocab - 1, generator=generator).argsort(dim=1)[:, :pairs] + 1
    values = torch.rand(batch, vocab - key_vocab, generator=generator).argsort(dim=1)[:, :pairs] + key_vocab
    inputs = torch.zeros(batch, seq_len, dtype=torch.long)
    inputs[:, 0:context:2] = keys
    inputs[:, 1:context:2] = values
    # Query slots: even offsets after the context, distinct, power-law in the gap.
    space = (seq_len - context) // 2
    weights = power_a * torch.arange(1, space + 1, dtype=torch.float64) ** (power_a - 1)
    gaps = torch.multinomial(weights.expand(batch, space), pairs, replacement=False, generator=generator)
    positions = context + 2 * gaps
    inputs.scatter_(1, positions, keys)
    labels = torch.full((batch, seq_len), IGNORE, dtype=torch.long)
    labels.scatter_(1, positions, values)
    if random_non_queries:
        filler = torch.randint(vocab, (batch, seq_len), generator=generator)
        inputs = torch.where(inputs == 0, filler, inputs)
    return inputs, labels


class MQARModel(nn.Module):
    """Embedding (+ learned positions), ``layers`` blocks of [mixer + MLP], LM head."""

    def __init__(self, variant: str, config: MQARConfig, causal: bool, params: dict[str, Any]) -> None:
        super().__init__()
        c = config
        self.embed = nn.Embedding(c.vocab, c.dim)
        self.position = nn.Embedding(c.seq_len, c.dim)
        with torch.no_grad():  # sinusoidal start: a shift by one is then a rotation
            self.position.weight.copy_(sinusoids(c.seq_len, c.dim))
        self.mixers = nn.ModuleList(build(variant, dim=c.dim, heads=c.heads, seq_len=c.seq_len,
                                          causal=causal, **params) for _ in range(c.layers))
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(c.dim, 4 * c.dim), nn.GELU(),
                                                nn.Linear(4 * c.dim, c.dim)) for _ in range(c.layers))
        self.norms = nn.ModuleList(nn.LayerNorm(c.dim) for _ in range(2 * c.layers + 1))
        self.head = nn.Linear(c.dim, c.vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.position.weight[: tokens.shape[1]]
        for i, (mixer, mlp) in enumerate(zip(self.mixers, self.mlps, strict=True)):
            x = x + mixer(self.norms[2 * i](x))
            x = x + mlp(self.norms[2 * i + 1](x))
        return self.head(self.norms[-1](x))


def sinusoids(n: int, dim: int) -> torch.Tensor:
    """The Transformer's sinusoidal position codes, (n, dim)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    out = torch.zeros(n, dim)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq)
    return out


def _loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
    loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
    asked = labels != IGNORE
    correct = (logits.argmax(-1) == labels) & asked
    return loss, correct.sum().item() / max(1, asked.sum().item())


def evaluate(model: nn.Module, config: MQARConfig, seed: int) -> tuple[float, float]:
    """(loss, accuracy) on ``config.eval_sequences`` held-out sequences drawn from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    inputs, labels = mqar_batch(config.eval_sequences, config.seq_len, config.vocab, config.pairs,
                                gen, config.power_a)
    model.eval()
    losses, correct, asked = [], 0, 0
    with torch.no_grad():
        for chunk in range(0, len(inputs), 128):
            x, y = inputs[chunk:chunk + 128], labels[chunk:chunk + 128]
            logits = model(x)
            loss, acc = _loss_and_accuracy(logits, y)
            n = (y != IGNORE).sum().item()
            losses.append(loss.item() * n)
            correct += acc * n
            asked += n
    return sum(losses) / max(1, asked), correct / max(1, asked)


#: held-out sequences come from seed + this, never from a training seed.
EVAL_SEED_OFFSET = 1_000_003


def train_mqar(variant: str, config: MQARConfig | None = None, seed: int = 0,
               params: dict[str, Any] | None = None, progress: Progress | None = None,
               log_every: int = 50, label: str = "") -> MQARResult:
    """Train the MQAR model of ``variant`` for ``config.steps`` steps from ``seed`` and score
    it on held-out sequences. Exceptions of the variant become status ``error``."""
    config = config or MQARConfig()
    params = dict(params or {})
    causal = variant_info(variant).causal
    start, cpu_start = time.perf_counter(), time.process_time()
    curve: list[tuple[int, float, float]] = []

    def result(status: str, accuracy: float | None, loss: float | None, steps: int,
               error: str = "") -> MQARResult:
        return MQARResult(variant=variant, params=params, seed=seed, causal=causal, status=status,
                          accuracy=accuracy, final_loss=loss, steps_done=steps,
                          train_s=time.perf_counter() - start, cpu_s=time.process_time() - cpu_start,
                          config=config, error=error,
                          label=label, curve=tuple(curve))

    torch.manual_seed(seed)
    try:
        model = MQARModel(variant, config, causal, params)
    except (ValueError, TypeError) as exc:
        return result("error", None, None, 0, str(exc))
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, config))
    gen = torch.Generator().manual_seed(seed)
    loss_value = math.nan
    for step in range(1, config.steps + 1):
        model.train()
        inputs, labels = mqar_batch(config.batch, config.seq_len, config.vocab, config.pairs, gen,
                                    config.power_a)
        try:
            loss, acc = _loss_and_accuracy(model(inputs), labels)
        except RuntimeError as exc:
            return result("error", None, None, step - 1, str(exc))
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            curve.append((step, loss_value, acc))
            return result("diverged", None, loss_value, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        if step % log_every == 0 or step == config.steps:
            curve.append((step, loss_value, acc))
            if progress is not None:
                progress(step, loss_value, acc)
    eval_loss, accuracy = evaluate(model, config, seed + EVAL_SEED_OFFSET)
    if not math.isfinite(eval_loss):
        return result("diverged", None, eval_loss, config.steps)
    return result("ok", accuracy, loss_value, config.steps)


def _lr_factor(step: int, config: MQARConfig) -> float:
    """Linear warm-up to 1, then cosine decay to 0.1 at the last step."""
    if step < config.warmup:
        return (step + 1) / config.warmup
    frac = (step - config.warmup) / max(1, config.steps - config.warmup)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, frac)))

"""Measure one case: build the layer, then per pass measure peak memory (one
untimed run) and time it (warm-up + samples). Runs in a worker process
(``child.py``), or in the sweep's process with ``--in-process``; reports
through typed messages (``messages.py``).

Passes:
* forward: ``layer(x)`` under ``torch.inference_mode()``;
* backward: the graph of one forward is built once and retained; each sample
  clears the gradients (untimed) and times ``y.backward(grad, retain_graph=True)``;
* forward_backward: a training step of the layer, forward then backward of a
  fixed random upstream gradient, gradients cleared between samples (untimed).
* prefill: ``layer.prefill(x, N + decode_steps)`` under inference mode: the causal
  forward that also fills the cache or state (attnbench.variants.decoding);
* decode: one prefill, untimed; then each sample runs ``decode_steps`` one-token
  steps from (a fork of) its state, and the sample is their time per step.
x requires grad in the backward passes, as for any layer inside a network.
"""

from __future__ import annotations

import gc
import inspect
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from attnbench.bench.worker import memory, timing
from attnbench.bench.worker.checks import TRUSTED_ORIGINS, LayerCheckError, check_decode, check_layer
from attnbench.bench.worker.flops import PASS_FLOPS_FACTOR, forward_flops
from attnbench.bench.worker.messages import Emit, Failure, Meta, PassResult
from attnbench.errors import AttnbenchError
from attnbench.model import MIB, SDPA_KERNELS, SERVING_PASSES, Case, Status, kv_heads_of, resolve_device
from attnbench.variants import build, variant_info
from attnbench.variants.decoding import refusal_of
from attnbench.variants.layer import AttentionLayer


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of one of ``model.DTYPES`` (the names are torch's own)."""
    return getattr(torch, name)


class CaseSkipped(Exception):
    """The case cannot run here (no CUDA, unsupported combination)."""


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text.lower()
                                              or "DefaultCPUAllocator: can't allocate" in text)


# What torch says when a pinned SDPA backend cannot run this case.
_NO_KERNEL = ("No viable backend for scaled_dot_product_attention", "No available kernel")


def classify(exc: BaseException) -> Status:
    if isinstance(exc, CaseSkipped | NotImplementedError) or any(text in str(exc) for text in _NO_KERNEL):
        return Status.SKIPPED  # this combination cannot run here: not a failure of the variant
    return Status.OOM if is_oom(exc) else Status.ERROR


# Fused attention ops as the dispatcher sees them -> the SDPA backend's name.
_SDPA_OPS = {op: kernel.name for kernel in SDPA_KERNELS for op in kernel.ops}


def sdpa_backends_used(layer: torch.nn.Module, x: torch.Tensor,
                       call: Callable[[torch.Tensor], object] | None = None) -> list[str]:
    """Which SDPA kernels one forward of ``layer`` (or ``call(x)``) actually ran ("math"
    when the layer is an sdpa variant and no fused kernel appeared: math decomposes)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Ops(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.names: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            self.names.add(func.__name__.split(".")[0])
            return func(*args, **(kwargs or {}))

    # Not inference_mode: without the autograd key the mode would see the
    # composite sdpa op before it picks its kernel.
    with torch.no_grad(), _Ops() as ops:
        (call or layer)(x)
    used = sorted({backend for op, backend in _SDPA_OPS.items() if op in ops.names})
    if not used and _is_sdpa(layer):
        used = ["math"]
    return used


def _is_sdpa(layer: torch.nn.Module) -> bool:
    return isinstance(layer, AttentionLayer) and layer.uses_fused_sdpa


def _prepare(case: Case, layer: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor) -> dict[str, Any]:
    """Untimed work before the passes: torch.compile's compilation (timed apart,
    so it never lands in a sample or the memory run) and the SDPA kernels used."""
    info: dict[str, Any] = {}
    if case.compile:
        t0 = time.perf_counter()
        with torch.inference_mode():
            layer(x)
        if any(p in ("backward", "forward_backward") for p in case.passes):
            layer(x.detach().requires_grad_()).backward(grad)
            layer.zero_grad(set_to_none=True)
        info["compile_s"] = time.perf_counter() - t0
    if _is_sdpa(layer):
        call = None
        # decode alone: the step's kernel, from a short prompt (a whole prompt's forward would cost seconds)
        if all(p == "decode" for p in case.passes) and x.shape[1] > 1:
            def call(t: torch.Tensor) -> object:
                prompt = t[:, :-1][:, :64]
                return layer.step(t[:, -1:], layer.prefill(prompt, prompt.shape[1] + 1, output=False)[1])
        info["sdpa_backend"] = ",".join(sdpa_backends_used(layer, x, call)) or None
    return info


def short_error(exc: BaseException) -> str:
    """The first line of the error; prefixed with the exception's type (RuntimeError: ...)
    unless it is attnbench's own (CaseSkipped, a variant's parameter error): those speak for themselves."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    own = isinstance(exc, CaseSkipped | AttnbenchError) and first
    return (first if own else f"{type(exc).__name__}: {first}")[:500]


def torch_device(name: str) -> torch.device:
    """The device a case names, ``auto`` resolved; CaseSkipped when it is not here."""
    name = resolve_device(name)
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CaseSkipped("CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CaseSkipped(f"{name} does not exist (this machine has {torch.cuda.device_count()} GPUs)")
    return device


def _clear_grads(layer: torch.nn.Module, x: torch.Tensor) -> None:
    layer.zero_grad(set_to_none=True)
    x.grad = None


def _pass_functions(name: str, layer: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor,
                    device: torch.device) -> tuple[Callable[[], object], Callable[[], float]]:
    """(region for the memory run, one timed sample) of a pass."""
    if name == "forward":
        def region() -> object:
            with torch.inference_mode():
                return layer(x)

        return region, lambda: timing.timed(region, device)

    if name == "backward":
        y = layer(x)  # built once and retained: only the backward is measured

        def region() -> object:
            y.backward(grad, retain_graph=True)
            return None
    else:  # forward_backward: one training step
        def region() -> object:
            layer(x).backward(grad)
            return None

    def memory_region() -> object:
        _clear_grads(layer, x)
        return region()

    def sample_once() -> float:
        _clear_grads(layer, x)  # untimed
        return timing.timed(region, device)

    return memory_region, sample_once


def _serving_functions(name: str, built: BuiltCase, result: PassResult | None
                       ) -> tuple[Callable[[], object], Callable[[], float]]:
    """(memory region, one timed sample) of prefill or decode; the cache or state's
    size (and, for decode, the least bytes a step moves) go into ``result``."""
    layer, x, device, case = built.layer, built.x, built.device, built.case
    refusal = refusal_of(layer)
    if refusal is not None:
        raise CaseSkipped(f"{case.label} {refusal}" if not refusal.startswith(case.label) else refusal)
    capacity = case.seq_len + case.decode_steps  # the room a server leaves for the answer

    def prefill() -> tuple[torch.Tensor, Any]:
        with torch.inference_mode():
            out, state = layer.prefill(x, capacity)
        if result is not None and result.cache_mib is None:  # from the first call: the size never changes
            result.cache_mib = _state_bytes(state) / MIB
        return out, state

    if name == "prefill":
        return prefill, lambda: timing.timed(prefill, device)

    with torch.inference_mode():  # the state alone where the layer can skip the forward's output: a
        # quadratic forward need not fit for the cache it leaves
        if "output" in inspect.signature(layer.prefill).parameters:
            start = layer.prefill(x, capacity, output=False)[1]
        else:
            start = layer.prefill(x, capacity)[1]
    generator = torch.Generator(device="cpu").manual_seed(case.seed + 2)
    tokens = torch.randn(case.batch, case.decode_steps, case.dim, generator=generator).to(device, x.dtype)

    def steps(state: Any) -> None:
        with torch.inference_mode():
            for t in range(case.decode_steps):
                _, state = layer.step(tokens[:, t:t + 1], state)

    if result is not None:
        result.cache_mib = _state_bytes(start) / MIB
        weights = sum(t.numel() * t.element_size() for t in (*layer.parameters(), *layer.buffers()))
        traffic = getattr(start, "step_traffic_bytes", None)
        traffic = _state_bytes(start) if traffic is None else traffic
        result.step_bytes = traffic + weights + 2 * tokens[:, :1].numel() * tokens.element_size()
    fork = getattr(start, "fork", lambda: start)  # a state of one's own: shared (steps must not write it)

    def sample_once() -> float:
        state = fork()  # untimed: a ring is copied, a KV cache or recurrent state shared
        return timing.timed(lambda: steps(state), device) / case.decode_steps

    return lambda: steps(fork()), sample_once


def _state_bytes(state: Any) -> int:
    """A DecodeState's ``nbytes``; for a state of a layer's own making, its tensors' bytes."""
    nbytes = getattr(state, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    tensors = [t for t in (state.values() if isinstance(state, dict) else state if isinstance(state, tuple | list)
                           else [state]) if isinstance(t, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def build_layer(case: Case, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(case.seed)
    layer = build(case.variant, dim=case.dim, heads=case.heads, seq_len=case.seq_len, causal=case.causal,
                  **kv_heads_of(case), **case.params)
    layer = layer.to(device=device, dtype=torch_dtype(case.dtype))
    if case.compile:
        layer = torch.compile(layer)
    return layer


@dataclass
class BuiltCase:
    """A case ready to measure: its layer and inputs on the device."""

    case: Case
    device: torch.device
    layer: torch.nn.Module
    x: torch.Tensor
    grad: torch.Tensor  # the fixed upstream gradient of the backward passes
    flops: int | None
    flops_source: str | None


def start_case(case: Case, emit: Emit) -> BuiltCase | None:
    """Build ``case``'s layer and inputs; report ``Meta`` through ``emit``, or a
    ``Failure`` (then None) when the case cannot even start."""
    started = time.perf_counter()
    try:
        device = torch_device(case.device)
        info = variant_info(case.variant)
        layer = build_layer(case, device)
        generator = torch.Generator(device="cpu").manual_seed(case.seed)
        x = torch.randn(case.batch, case.seq_len, case.dim, generator=generator).to(device, torch_dtype(case.dtype))
        grad = (torch.randn(case.batch, case.seq_len, case.dim, generator=generator).to(device, torch_dtype(case.dtype))
                if {"backward", "forward_backward"} & set(case.passes) else x[:, :0])  # only backward reads it
        if info.origin not in TRUSTED_ORIGINS:  # shape, dtype, device, causal: the fix, before timing
            check_layer(case, layer, x)
            if set(case.passes) & set(SERVING_PASSES) and refusal_of(layer) is None:
                check_decode(case, layer)
        flops, flops_source = forward_flops(case, layer, x)
        prepared = _prepare(case, layer, x, grad)
    except LayerCheckError as exc:
        emit(Failure(status=Status.ERROR, error=str(exc)))
        return None
    except Exception as exc:  # noqa: BLE001 - every failure becomes a record
        emit(Failure(status=classify(exc), error=short_error(exc), traceback=traceback.format_exc()))
        return None
    emit(Meta(family=info.family, param_count=sum(p.numel() for p in layer.parameters()),
              threads=torch.get_num_threads(),
              device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              build_s=time.perf_counter() - started, prepared=prepared))
    return BuiltCase(case, device, layer, x, grad, flops, flops_source)


def new_result(built: BuiltCase, pass_name: str) -> PassResult:
    """An empty result of one pass, with its FLOPs."""
    result = PassResult(pass_name=pass_name)
    factor = PASS_FLOPS_FACTOR.get(pass_name)
    if built.flops is not None and factor is not None:
        result.flops, result.flops_source = built.flops * factor, built.flops_source
    return result


def pass_functions(built: BuiltCase, pass_name: str, result: PassResult | None = None
                   ) -> tuple[Callable[[], object], Callable[[], float]]:
    """(region for the memory run, one timed sample) of a pass; the backward
    pass builds its retained graph here, decode its prefill's state (and says the
    state's size in ``result``). Call under ``torch.enable_grad()``."""
    built.x.requires_grad_(pass_name in ("backward", "forward_backward"))
    if pass_name in SERVING_PASSES:
        return _serving_functions(pass_name, built, result)
    return _pass_functions(pass_name, built.layer, built.x, built.grad, built.device)


def measure_memory(result: PassResult, memory_region: Callable[[], object], device: torch.device) -> None:
    reading = memory.measure_peak(memory_region, device)
    result.peak_mem_mib, result.peak_reserved_mib = reading.peak_mib, reading.reserved_mib
    result.memory_measured = True


def record_failure(result: PassResult, exc: BaseException) -> None:
    """``exc`` as the pass's status and error (with a traceback for an error)."""
    result.status, result.error = classify(exc), short_error(exc)
    if result.status == Status.ERROR:
        result.traceback = traceback.format_exc()


def release(built: BuiltCase) -> None:
    """Drop what a pass left (gradients; its graph once its functions are
    dropped) before the next pass."""
    _clear_grads(built.layer, built.x)
    gc.collect()
    if built.device.type == "cuda":
        torch.cuda.empty_cache()


def run_case(case: Case, emit: Emit) -> None:
    """Measure ``case``; report through ``emit(message)``: ``Meta`` once the
    layer is built, a ``PassResult`` after each pass, a ``Failure`` if the case
    cannot even start."""
    built = start_case(case, emit)
    if built is None:
        return
    for pass_name in case.passes:
        result = new_result(built, pass_name)
        try:
            with torch.enable_grad():
                memory_region, sample_once = pass_functions(built, pass_name, result)
                if case.round == 0:  # peak memory repeats exactly: measured on the first visit only
                    measure_memory(result, memory_region, built.device)
                result.samples_ms = timing.sample(sample_once, case.timing)
        except Exception as exc:  # noqa: BLE001
            record_failure(result, exc)
        finally:
            memory_region = sample_once = None  # drop the retained graph before the next pass
            release(built)
        emit(result)

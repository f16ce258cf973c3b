"""Variants from outside attnbench: import paths, plugins, and the checks that
make a broken custom layer fail with the fix to make instead of a traceback.

Three ways in:

* an import path in a suite, ``- name: mypkg.attention:MyAttention``: the module
  is imported (the current directory is searched first, as with ``python -m``)
  and the attribute, an ``nn.Module`` class or a factory function, is
  registered under that exact name with origin "import path";
* an entry point in the group ``attnbench.variants`` of an installed package:
  either a module (or decorated class) whose ``@attnbench.register`` calls
  register variants, or a class/factory registered under the entry point's
  name; origin "plugin";
* ``@attnbench.register("name", family=..., flops=...)`` in the user's own code
  (origin "user").

A layer class or factory is called as ``target(dim=, heads=, seq_len=, causal=,
**params)``; an ``AttentionCore`` subclass as ``target(heads=, head_dim=,
seq_len=, causal=, **params)`` and wrapped in the standard projections. Its
``params`` and their defaults are read from the signature. A class attribute
``supports_causal = False`` declares that the layer has no causal mode (suites
that ask for one are rejected when they are loaded).

Before any timing, the worker checks every variant that is not built in (nor
a test fixture, origin "test") with :func:`check_layer`: one tensor out, of
the input's shape, dtype and device, and, for a causal case, outputs at
earlier positions unchanged when the last token changes. A failure is an
``error`` record for that case whose message says what to fix; the other
variants still run. An import path that does not import is rejected when the
suite is loaded (exit 2, naming the file, line and key, with the fix).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from attnbench.variants.layer import AttentionCore
from attnbench.variants.registry import (
    _CORE_ARGS,
    _LAYER_ARGS,
    _VARIANTS,
    _Entry,
    _entry,
    did_you_mean,
    register,
)

IMPORT_PATH_ORIGIN = "import path"
# Variants the worker does not check before timing: attnbench's own, and the
# test suite's fixtures (which fail on purpose inside the timed passes).
TRUSTED_ORIGINS = ("built-in", "test")
PLUGIN_ORIGIN = "plugin"
EXAMPLE = "examples.my_attention:MyAttention"

# Largest change (relative to the outputs' magnitude) at positions before the
# perturbed last token that still counts as "unchanged", per dtype.
CAUSAL_RTOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}


class LayerCheckError(ValueError):
    """A custom layer does not behave as attnbench needs; the message says the fix."""


# --- import paths ----------------------------------------------------------------

def split_import_path(name: str) -> tuple[str, str]:
    """'pkg.module:Attr' -> ('pkg.module', 'Attr'), or ValueError saying how to write it."""
    module_name, _, attr = name.partition(":")
    if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
        dotted = module_name.removesuffix(".py").replace("\\", "/").strip("/").replace("/", ".")
        raise ValueError(f"variant {name!r}: write the module as a dotted import path, not a file path: "
                         f"'{dotted}:{attr or 'ClassName'}' (run attnbench from the directory that contains "
                         f"{dotted.split('.')[0]}/)")
    parts_ok = all(p.isidentifier() for p in module_name.split(".")) and attr and all(
        p.isidentifier() for p in attr.split("."))
    if not parts_ok:
        raise ValueError(f"variant {name!r} is not an import path: write 'package.module:ClassOrFactory', "
                         f"e.g. '{EXAMPLE}'")
    return module_name, attr


def _ensure_cwd_on_path() -> None:
    """Search the current directory first, as ``python -m`` does, so that
    ``examples.my_attention:MyAttention`` resolves from the project root in the
    CLI and in spawned workers (which inherit the parent's sys.path) alike."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _user_frame(exc: BaseException) -> str:
    """' (file.py line N)' of the innermost frame outside importlib."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "importlib" not in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    return f" ({_short_path(f.filename)} line {f.lineno})"


def _short_path(path: str | None) -> str:
    if not path:
        return "?"
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def _import_module(name: str, module_name: str) -> Any:
    _ensure_cwd_on_path()
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if not missing or missing == module_name or module_name.startswith(missing + "."):
            top = module_name.split(".")[0]
            raise ValueError(
                f"variant {name!r}: cannot import module {module_name!r} (no module named {missing or top!r}). "
                f"Run attnbench from the directory that contains {top}/ (the current directory, {os.getcwd()}, "
                "is searched first), install the package (pip install -e .), or add its parent directory to "
                "PYTHONPATH") from None
        raise ValueError(f"variant {name!r}: module {module_name!r} imports {missing!r}{_user_frame(exc)}, "
                         f"which is not installed: install it in this environment") from None
    except SyntaxError as exc:
        raise ValueError(f"variant {name!r}: syntax error in {_short_path(exc.filename)} line {exc.lineno}: "
                         f"{exc.msg}. Fix the module so that `python -c 'import {module_name}'` works") from None
    except Exception as exc:  # noqa: BLE001 - any error at import time is the module's to fix
        raise ValueError(f"variant {name!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
                         f"{_user_frame(exc)}. Fix the module so that `python -c 'import {module_name}'` "
                         "works") from None


def _get_attribute(name: str, module: Any, module_name: str, attr: str) -> Any:
    obj = module
    for i, part in enumerate(attr.split(".")):
        if not hasattr(obj, part):
            where = module_name + "".join("." + p for p in attr.split(".")[:i])
            public = sorted(n for n in dir(obj) if not n.startswith("_")
                            and (inspect.isclass(getattr(obj, n, None)) or inspect.isfunction(getattr(obj, n, None))))
            file = getattr(module, "__file__", None)
            shown = f" ({_short_path(file)})" if file and i == 0 else ""
            raise ValueError(f"variant {name!r}: {where!r}{shown} has no attribute {part!r}."
                             f"{did_you_mean(part, public)} Its classes and functions: "
                             f"{', '.join(public) or 'none'}. The name after ':' is case-sensitive")
        obj = getattr(obj, part)
    return obj


def _check_signature(name: str, target: Callable[..., Any], is_core: bool) -> None:
    """The target must accept the arguments attnbench passes it."""
    fixed = _CORE_ARGS if is_core else _LAYER_ARGS
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):  # a builtin or C extension: nothing to read
        return
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    missing = [a for a in fixed if a not in params or params[a].kind == params[a].POSITIONAL_ONLY]
    if missing:
        shown = getattr(target, "__qualname__", repr(target))
        call = ", ".join(f"{a}=..." for a in fixed)
        raise ValueError(f"variant {name!r}: {shown} must accept the keyword arguments {', '.join(fixed)} "
                         f"(missing: {', '.join(missing)}); attnbench builds it as {shown}({call}, **params)")


def register_object(name: str, obj: Any, origin: str) -> _Entry:
    """Register a class or factory ``obj`` under ``name`` (replacing any entry)."""
    if isinstance(obj, nn.Module):
        raise ValueError(f"variant {name!r} is an nn.Module instance ({type(obj).__name__}); name its class "
                         "or a factory function that builds a new layer from (dim, heads, seq_len, causal, "
                         "**params)")
    if inspect.isclass(obj):
        if not issubclass(obj, nn.Module):
            raise ValueError(f"variant {name!r}: {obj.__qualname__} is a class but not a torch.nn.Module; "
                             "subclass nn.Module (or attnbench.variants.AttentionLayer / AttentionCore)")
    elif not callable(obj):
        raise ValueError(f"variant {name!r} is a {type(obj).__name__}, not an nn.Module class or a factory "
                         "function; point the name after ':' at the class")
    existing = next((e for e in _VARIANTS.values() if e.target is obj), None)
    if existing is not None:  # decorated with @attnbench.register: keep its metadata
        info = dataclasses.replace(existing.info, name=name, origin=origin)
        _VARIANTS[name] = dataclasses.replace(existing, info=info)
        return _VARIANTS[name]
    is_core = inspect.isclass(obj) and issubclass(obj, AttentionCore)
    _check_signature(name, obj, is_core)
    register(name, family="custom", causal=bool(getattr(obj, "supports_causal", True)), origin=origin,
             replace=True)(obj)
    return _VARIANTS[name]


def register_import_path(name: str) -> _Entry:
    """Import ``module:attr`` and register it under ``name``; ValueError with the fix otherwise."""
    if name in _VARIANTS:
        return _VARIANTS[name]
    module_name, attr = split_import_path(name)
    module = _import_module(name, module_name)
    obj = _get_attribute(name, module, module_name, attr)
    return register_object(name, obj, IMPORT_PATH_ORIGIN)


def register_plugin(ep: Any) -> None:
    """Load one entry point of the group ``attnbench.variants``; its variants get origin "plugin"."""
    before = set(_VARIANTS)
    obj = ep.load()
    new = [n for n in _VARIANTS if n not in before]
    new += [n for n, e in _VARIANTS.items() if e.target is obj and n not in new]
    if not new and not inspect.ismodule(obj):
        register_object(ep.name, obj, PLUGIN_ORIGIN)
        return
    for n in new:
        entry = _VARIANTS[n]
        _VARIANTS[n] = dataclasses.replace(entry, info=dataclasses.replace(entry.info, origin=PLUGIN_ORIGIN))


# --- checks before timing ------------------------------------------------------------

def display_name(variant: str) -> str:
    """What messages call the variant: its class or function name."""
    try:
        target = _entry(variant).target
    except ValueError:
        return variant
    return getattr(target, "__name__", variant)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _check_output(shown: str, y: Any, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        if isinstance(y, tuple | list) and y and isinstance(y[0], torch.Tensor):
            raise LayerCheckError(f"{shown} returned a {type(y).__name__} of {len(y)}, expected one tensor: "
                                  "the layer must return only the output (batch, seq_len, dim), e.g. "
                                  "`return out`, not `return out, weights`")
        raise LayerCheckError(f"{shown} returned {type(y).__name__}, expected a tensor of shape "
                              f"{tuple(x.shape)}: the layer must map (batch, seq_len, dim) to the same shape")
    if tuple(y.shape) != tuple(x.shape):
        raise LayerCheckError(f"{shown} returned shape {tuple(y.shape)}, expected {tuple(x.shape)}: "
                              "the layer must map (batch, seq_len, dim) to the same shape")
    if y.dtype != x.dtype:
        raise LayerCheckError(f"{shown} returned dtype {_dtype_name(y.dtype)}, expected {_dtype_name(x.dtype)}: "
                              "compute in the input's dtype (the layer is cast with .to(dtype); create tensors "
                              "with dtype=x.dtype and register constant tensors as buffers)")
    if y.device != x.device:
        raise LayerCheckError(f"{shown} returned a tensor on {y.device}, expected {x.device}: create tensors "
                              "on x.device and register constant tensors as buffers so that .to(device) "
                              "moves them")
    return y


def check_layer(case: Any, layer: nn.Module, x: torch.Tensor) -> None:
    """Raise LayerCheckError unless ``layer(x)`` is one tensor of x's shape,
    dtype and device and, for a causal case, the outputs before the last
    position do not move when the last token does. Runs in eval mode, without
    gradients, with the same random seed for both forwards (layers that draw
    random projections per call compare like with like)."""
    shown = display_name(case.variant)
    was_training = layer.training
    layer.eval()
    try:
        with torch.no_grad():
            torch.manual_seed(case.seed)
            y = _check_output(shown, layer(x), x)
            if not case.causal or x.shape[1] < 2:
                return
            generator = torch.Generator(device="cpu").manual_seed(case.seed + 1)
            x2 = x.clone()
            # A large, fresh last token: any attention to it moves the earlier outputs visibly.
            x2[:, -1] = 10 * torch.randn(x.shape[0], x.shape[2], generator=generator).to(x.device, x.dtype)
            torch.manual_seed(case.seed)
            y2 = _check_output(shown, layer(x2), x2)
            before, after = y[:, :-1].double(), y2[:, :-1].double()
            change = (after - before).abs().nan_to_num(nan=float("inf")).max().item()
            scale = max(before.abs().nan_to_num(nan=0.0, posinf=0.0).max().item(), 1e-6)
            if change > CAUSAL_RTOL.get(x.dtype, 1e-4) * scale:
                raise LayerCheckError(
                    f"{shown} ignores causal: with causal=True, changing the last token changed the outputs at "
                    f"earlier positions (by up to {change / scale:.2g} of their magnitude). Mask the scores so "
                    "that position i attends only to positions j <= i when causal is set, or declare that the "
                    "layer has no causal mode (supports_causal = False, or causal=False in @attnbench.register)")
    finally:
        layer.train(was_training)


# --- FLOPs --------------------------------------------------------------------------

def _call_flops(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """Call a registered flops function with the arguments it names."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(**kwargs)
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return fn(**kwargs)


def count_flops(layer: nn.Module, x: torch.Tensor) -> int | None:
    """FLOPs of one forward as torch.utils.flop_counter counts them (matrix
    products and attention kernels only), or None when it counts nothing or fails."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            layer(x)
        total = int(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - counting is best effort; the passes report real failures
        return None
    return total if total > 0 else None


def forward_flops(case: Any, layer: nn.Module, x: torch.Tensor) -> tuple[int | None, str | None]:
    """(FLOPs of one forward, source): the layer's ``flops(batch, seq_len)``, else
    the function given to ``register(flops=...)`` ("analytic"); else
    torch.utils.flop_counter's count of one untimed forward ("flop_counter");
    else (None, None): the CSV leaves flops empty rather than write 0."""
    entry = _entry(case.variant)
    shown = getattr(entry.target, "__name__", case.variant)
    method = getattr(layer, "flops", None)
    if callable(method):
        try:
            return int(method(case.batch, case.seq_len)), "analytic"
        except NotImplementedError:
            pass
        except Exception as exc:  # noqa: BLE001
            raise LayerCheckError(f"{shown}.flops({case.batch}, {case.seq_len}) raised {type(exc).__name__}: "
                                  f"{exc}. flops(batch, seq_len) must return the FLOPs of one forward as an "
                                  "int") from None
    if entry.flops is not None:
        params = {**entry.info.defaults, **case.params}
        try:
            value = _call_flops(entry.flops, batch=case.batch, seq_len=case.seq_len, dim=case.dim,
                                heads=case.heads, causal=case.causal, **params)
            return int(value), "analytic"
        except Exception as exc:  # noqa: BLE001
            raise LayerCheckError(f"the flops function of {case.variant!r} raised {type(exc).__name__}: {exc}. "
                                  "It must be flops(batch, seq_len, dim, heads, **params) -> int") from None
    counted = count_flops(layer, x)
    return (counted, "flop_counter") if counted is not None else (None, None)

"""Finding and building variants: the registry's queries that may load
something first, plugins, and variants named by import path.

The registry (``registry.py``) only stores entries. This module resolves a
name to an entry (loading the installed plugins once, importing an import
path ``package.module:Attr`` on first use) and builds layers from entries.

Three ways in for variants from outside attnbench:

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
that ask for one are rejected when they are loaded). An import path that does
not import is rejected when the suite is loaded (exit 2, naming the file, line
and key, with the fix).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import sys
import traceback
import types
import typing
import warnings
from collections.abc import Callable
from typing import Any

from torch import nn

from attnbench.errors import VariantError, did_you_mean
from attnbench.variants import registry
from attnbench.variants.layer import AttentionCore, AttentionLayer, ProjectedAttention, check_dims
from attnbench.variants.registry import CORE_ARGS, LAYER_ARGS, Entry, VariantInfo, register

IMPORT_PATH_ORIGIN = "import path"
PLUGIN_ORIGIN = "plugin"
EXAMPLE = "examples.my_attention:MyAttention"
_plugins_loaded = False


# --- resolving names ------------------------------------------------------------------

def load_plugins() -> None:
    """Register variants that installed packages declare under the entry-point
    group ``attnbench.variants`` (once per process)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="attnbench.variants"):
        try:
            register_plugin(ep)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the tool
            warnings.warn(f"attnbench plugin {ep.name!r} ({ep.value}) failed to load: {exc}",
                          stacklevel=2)


def resolve(name: str) -> Entry:
    """The entry of variant ``name``, loading plugins or importing an import path
    first when it is not registered yet; VariantError naming the known ones otherwise."""
    variants = registry.registered()
    if name not in variants:
        load_plugins()
    if name not in variants and ":" in name:
        register_import_path(name)
    try:
        return variants[name]
    except KeyError:
        names = sorted(variants)
        raise VariantError(f"unknown variant {name!r}.{did_you_mean(name, names)} "
                           f"Known variants: {', '.join(names)}") from None


def variant_names() -> list[str]:
    """Every registered variant, in registration order."""
    load_plugins()
    return list(registry.registered())


def variant_info(name: str) -> VariantInfo:
    return resolve(name).info


def unknown_parameter(name: str, param: str, known: list[str]) -> str | None:
    """The message for a parameter ``param`` that variant ``name`` does not take
    (its parameters are ``known``), or None when it takes it."""
    if param in known:
        return None
    return (f"variant {name!r} has no parameter {param!r}.{did_you_mean(param, known)} "
            f"Its parameters: {', '.join(known) or 'none'}")


def check_params(name: str, params: dict[str, Any]) -> None:
    """Raise VariantError for a parameter the variant does not take."""
    known = list(resolve(name).info.defaults)
    for key in params:
        message = unknown_parameter(name, str(key), known)
        if message:
            raise VariantError(message)


# --- parameter values, from the constructor's type hints ------------------------------

@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One parameter of a variant as its signature declares it."""

    name: str
    default: Any
    hint: Any  # the evaluated type hint, or None when there is none (or it cannot be evaluated)

    @property
    def choices(self) -> tuple[Any, ...]:
        """The values of a ``Literal[...]`` hint (also inside ``Optional``); () otherwise."""
        return tuple(a for h in _alternatives(self.hint) if typing.get_origin(h) is typing.Literal
                     for a in typing.get_args(h))

    @property
    def type_text(self) -> str:
        """The hint as a user reads it: ``int``, ``int or None``, ``one of 'a', 'b'``."""
        if self.hint is None:
            return ""
        parts = []
        for h in _alternatives(self.hint):
            if typing.get_origin(h) is typing.Literal:
                parts.append("one of " + ", ".join(repr(a) for a in typing.get_args(h)))
            else:
                parts.append("None" if h is type(None) else getattr(h, "__name__", str(h)))
        return " or ".join(parts)


def _alternatives(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,) if hint is not None else ()


def parameter_specs(name: str) -> list[ParamSpec]:
    """The parameters of variant ``name`` with their defaults and type hints."""
    entry = resolve(name)
    target = entry.target.__init__ if inspect.isclass(entry.target) else entry.target
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - a custom variant's hints may not evaluate: then nothing is checked
        hints = {}
    return [ParamSpec(p, default, hints.get(p)) for p, default in entry.info.defaults.items()]


_SIMPLE_TYPES = {bool: "a boolean (true or false)", int: "an int", float: "a number", str: "a string"}


def _matches(value: Any, hint: Any) -> bool | None:
    """Whether ``value`` fits ``hint``; None when the hint is not one we check."""
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is typing.Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(hint))  # 1 is not True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return None


def parameter_problem(name: str, param: str, value: Any) -> str | None:
    """What is wrong with ``value`` for parameter ``param`` of variant ``name``
    (its type or, for a ``Literal`` hint, its choices), or None."""
    spec = next((s for s in parameter_specs(name) if s.name == param), None)
    if spec is None or spec.hint is None:
        return None
    verdicts = [_matches(value, h) for h in _alternatives(spec.hint)]
    if any(v is None for v in verdicts) or any(verdicts):
        return None
    if spec.choices:
        hint = did_you_mean(value, [str(c) for c in spec.choices]) if isinstance(value, str) else ""
        return f"must be {spec.type_text}, got {value!r}" + (f".{hint}" if hint else "")
    wanted = " or ".join(_SIMPLE_TYPES.get(h, "None" if h is type(None) else getattr(h, "__name__", str(h)))
                         for h in _alternatives(spec.hint))
    got = f"{value!r} (a string: write it without quotes)" if isinstance(value, str) else repr(value)
    return f"must be {wanted}, got {got}"


def build(name: str, dim: int = 512, heads: int = 8, seq_len: int = 1024,
          causal: bool = False, kv_heads: int | None = None, **params: Any) -> nn.Module:
    """Build the layer of variant ``name``: x (batch, seq_len, dim) -> same shape.
    ``kv_heads`` (default ``heads``): key/value heads, for the mechanisms that share them."""
    entry = resolve(name)
    check_params(name, params)
    if causal and not entry.info.causal:
        raise VariantError(f"variant {name!r} does not support causal attention")
    head_dim = check_dims(dim, heads, seq_len)
    if entry.is_core:
        core = entry.target(heads=heads, head_dim=head_dim, seq_len=seq_len, causal=causal, **params)
        return ProjectedAttention(core, dim=dim, heads=heads, seq_len=seq_len, causal=causal, kv_heads=kv_heads)
    if kv_heads is not None and kv_heads != heads:
        if "kv_heads" in inspect.signature(entry.target).parameters:  # a layer of its own that takes them
            params = {"kv_heads": kv_heads, **params}
        else:
            reason = inspect.getattr_static(entry.target, "kv_heads_refusal", None) or "takes no kv_heads"
            raise VariantError(f"variant {name!r}: kv_heads {kv_heads} < heads {heads}: this mechanism {reason}")
    return entry.target(dim=dim, heads=heads, seq_len=seq_len, causal=causal, **params)


def declares_causal(target: Any) -> bool:
    """Whether a custom class or factory has a causal mode: the ``supports_causal``
    flag of attnbench's base classes, which a plain ``nn.Module`` class may declare
    the same way (the documented contract for layers from outside); factories and
    classes that declare nothing are taken to have one (the causal check before
    timing tells the truth)."""
    if inspect.isclass(target) and issubclass(target, AttentionLayer | AttentionCore):
        return bool(target.supports_causal)
    return bool(inspect.getattr_static(target, "supports_causal", True))


# --- import paths ---------------------------------------------------------------------

def split_import_path(name: str) -> tuple[str, str]:
    """'pkg.module:Attr' -> ('pkg.module', 'Attr'), or ValueError saying how to write it."""
    module_name, _, attr = name.partition(":")
    if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
        dotted = module_name.removesuffix(".py").replace("\\", "/").strip("/").replace("/", ".")
        raise VariantError(f"variant {name!r}: write the module as a dotted import path, not a file path: "
                         f"'{dotted}:{attr or 'ClassName'}' (run attnbench from the directory that contains "
                         f"{dotted.split('.')[0]}/)")
    parts_ok = all(p.isidentifier() for p in module_name.split(".")) and attr and all(
        p.isidentifier() for p in attr.split("."))
    if not parts_ok:
        raise VariantError(f"variant {name!r} is not an import path: write 'package.module:ClassOrFactory', "
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
            raise VariantError(
                f"variant {name!r}: cannot import module {module_name!r} (no module named {missing or top!r}). "
                f"Run attnbench from the directory that contains {top}/ (the current directory, {os.getcwd()}, "
                "is searched first), install the package (pip install -e .), or add its parent directory to "
                "PYTHONPATH") from None
        raise VariantError(f"variant {name!r}: module {module_name!r} imports {missing!r}{_user_frame(exc)}, "
                         f"which is not installed: install it in this environment") from None
    except SyntaxError as exc:
        raise VariantError(f"variant {name!r}: syntax error in {_short_path(exc.filename)} line {exc.lineno}: "
                         f"{exc.msg}. Fix the module so that `python -c 'import {module_name}'` works") from None
    except Exception as exc:  # noqa: BLE001 - any error at import time is the module's to fix
        raise VariantError(f"variant {name!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
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
            raise VariantError(f"variant {name!r}: {where!r}{shown} has no attribute {part!r}."
                             f"{did_you_mean(part, public)} Its classes and functions: "
                             f"{', '.join(public) or 'none'}. The name after ':' is case-sensitive")
        obj = getattr(obj, part)
    return obj


def _check_signature(name: str, target: Callable[..., Any], is_core: bool) -> None:
    """The target must accept the arguments attnbench passes it."""
    fixed = CORE_ARGS if is_core else LAYER_ARGS
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
        raise VariantError(f"variant {name!r}: {shown} must accept the keyword arguments {', '.join(fixed)} "
                         f"(missing: {', '.join(missing)}); attnbench builds it as {shown}({call}, **params)")


def register_object(name: str, obj: Any, origin: str) -> Entry:
    """Register a class or factory ``obj`` under ``name`` (replacing any entry)."""
    if isinstance(obj, nn.Module):
        raise VariantError(f"variant {name!r} is an nn.Module instance ({type(obj).__name__}); name its class "
                         "or a factory function that builds a new layer from (dim, heads, seq_len, causal, "
                         "**params)")
    if inspect.isclass(obj):
        if not issubclass(obj, nn.Module):
            raise VariantError(f"variant {name!r}: {obj.__qualname__} is a class but not a torch.nn.Module; "
                             "subclass nn.Module (or attnbench.variants.AttentionLayer / AttentionCore)")
    elif not callable(obj):
        raise VariantError(f"variant {name!r} is a {type(obj).__name__}, not an nn.Module class or a factory "
                         "function; point the name after ':' at the class")
    existing = next((e for e in registry.registered().values() if e.target is obj), None)
    if existing is not None:  # decorated with @attnbench.register: keep its metadata
        info = dataclasses.replace(existing.info, name=name, origin=origin)
        return registry.put(name, dataclasses.replace(existing, info=info))
    is_core = registry.is_core_class(obj)
    _check_signature(name, obj, is_core)
    register(name, family="custom", causal=declares_causal(obj), origin=origin, replace=True)(obj)
    return registry.registered()[name]


def register_import_path(name: str) -> Entry:
    """Import ``module:attr`` and register it under ``name``; ValueError with the fix otherwise."""
    if name in registry.registered():
        return registry.registered()[name]
    module_name, attr = split_import_path(name)
    module = _import_module(name, module_name)
    obj = _get_attribute(name, module, module_name, attr)
    return register_object(name, obj, IMPORT_PATH_ORIGIN)


def register_plugin(ep: Any) -> None:
    """Load one entry point of the group ``attnbench.variants``; its variants get origin "plugin"."""
    variants = registry.registered()
    before = set(variants)
    obj = ep.load()
    new = [n for n in variants if n not in before]
    new += [n for n, e in variants.items() if e.target is obj and n not in new]
    if not new and not inspect.ismodule(obj):
        register_object(ep.name, obj, PLUGIN_ORIGIN)
        return
    for n in new:
        entry = variants[n]
        registry.put(n, dataclasses.replace(entry, info=dataclasses.replace(entry.info, origin=PLUGIN_ORIGIN)))



# --- names in messages -------------------------------------------------------------

def display_name(variant: str) -> str:
    """What messages call the variant: its class or function name."""
    try:
        target = resolve(variant).target
    except VariantError:
        return variant
    return getattr(target, "__name__", variant)

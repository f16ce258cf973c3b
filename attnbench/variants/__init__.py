"""Every built-in variant, one module per family, registered on import."""

from __future__ import annotations

import importlib

from attnbench.variants.layer import AttentionCore, AttentionLayer, ProjectedAttention
from attnbench.variants.registry import (
    VariantInfo,
    build,
    register,
    unregister,
    variant_info,
    variant_names,
)

__all__ = ["AttentionCore", "AttentionLayer", "ProjectedAttention", "VariantInfo", "build",
           "register", "unregister", "variant_info", "variant_names", "load_plugins"]

# One module per family; import order is the order of `attnbench list`.
FAMILY_MODULES = ("exact", "sparse", "pooling", "clustered", "lowrank", "kernel", "random_features",
                  "synthesizer", "fastformer", "aft", "conv", "mixers", "flex")
for _module in FAMILY_MODULES:
    importlib.import_module(f"attnbench.variants.{_module}")

_plugins_loaded = False


def load_plugins() -> None:
    """Register variants that installed packages declare under the entry-point
    group ``attnbench.variants`` (once per process)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    from attnbench.variants.custom import register_plugin

    for ep in entry_points(group="attnbench.variants"):
        try:
            register_plugin(ep)
        except Exception as exc:  # a broken plugin must not break the tool
            import warnings

            warnings.warn(f"attnbench plugin {ep.name!r} ({ep.value}) failed to load: {exc}",
                          stacklevel=2)

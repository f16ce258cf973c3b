"""Every built-in variant, one module per family, registered on import.

Inside the package the dependencies point one way: ``layer`` (base classes,
FLOPs helpers) <- ``registry`` (the table, ``register``) <- the family modules
and ``factory`` (resolving names, plugins, import paths, building) <- this
module, which imports the families and offers the public queries.
"""

from __future__ import annotations

import importlib

from attnbench.variants.factory import build, load_plugins, variant_info, variant_names
from attnbench.variants.layer import AttentionCore, AttentionLayer, ProjectedAttention
from attnbench.variants.registry import VariantInfo, register, unregister

__all__ = ["AttentionCore", "AttentionLayer", "ProjectedAttention", "VariantInfo", "build",
           "register", "unregister", "variant_info", "variant_names", "load_plugins"]

# One module per family; import order is the order of `attnbench list`.
FAMILY_MODULES = ("exact", "sparse", "clustered", "lowrank", "kernel", "synthesizer",
                  "fastformer", "aft", "conv", "flex")
for _module in FAMILY_MODULES:
    importlib.import_module(f"attnbench.variants.{_module}")

"""attnbench: measure what self-attention mechanisms cost.

The public API (``build``, ``variant_info``, ``variant_names``, ``register``,
``VariantInfo``) comes from ``attnbench.variants``, imported on first use:
importing attnbench (as the command line does first) does not import torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["VariantInfo", "build", "register", "variant_info", "variant_names", "__version__"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from attnbench import variants

        return getattr(variants, name)
    raise AttributeError(f"module 'attnbench' has no attribute {name!r}")

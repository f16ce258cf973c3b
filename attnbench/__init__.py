"""attnbench: measure what self-attention mechanisms cost."""

from __future__ import annotations

from attnbench.variants import (
    VariantInfo,
    build,
    register,
    variant_info,
    variant_names,
)

__version__ = "0.1.0"

__all__ = ["VariantInfo", "build", "register", "variant_info", "variant_names", "__version__"]

"""Synthesizer: attention weights synthesised without query-key products (arXiv 2005.00743)."""

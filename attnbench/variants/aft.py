"""Attention Free Transformer (arXiv 2105.14103): full, simple and local modes."""

"""Sparse patterns: local (blocked sliding window), strided (Sparse Transformer), longformer, bigbird."""

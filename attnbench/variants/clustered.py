"""Clustering and learnable patterns: reformer (LSH), routing (k-means), sinkhorn (sorted blocks)."""

"""Convolutional alternatives to attention: lightweight and dynamic convolution (arXiv 1901.10430)."""

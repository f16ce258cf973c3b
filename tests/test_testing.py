"""attnbench.testing, the checks the variant tests rely on: the no-N×N check sees
a square matrix where there is one."""

import torch

import attnbench


def test_softmax_does_build_the_square_matrix():
    # The no-N×N check can fail: it sees softmax's N×N matrix.
    from attnbench.testing import large_square_tensors

    layer = attnbench.build("softmax", dim=32, heads=2, seq_len=256)
    assert large_square_tensors(lambda: layer(torch.randn(1, 256, 32)), 256)

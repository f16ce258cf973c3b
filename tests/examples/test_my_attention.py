"""The worked example (examples/my_attention.py, examples/my_suite.yaml): the layer
is grouped-query attention with exact FLOPs, and the suite runs end to end."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT


def test_the_example_layer_is_grouped_query_attention_with_exact_flops():
    from torch.utils.flop_counter import FlopCounterMode

    from attnbench.testing import dense_attention
    from examples.my_attention import MyAttention

    for kv_heads in (1, 2):
        for causal in (False, True):
            layer = MyAttention(64, 4, 32, causal=causal, kv_heads=kv_heads).double()
            x = torch.randn(2, 32, 64, dtype=torch.float64)
            q = layer.q(x).view(2, 32, 4, 16).transpose(1, 2)
            k, v = layer.kv(x).view(2, 32, 2, kv_heads, 16).permute(2, 0, 3, 1, 4)
            k, v = (t.repeat_interleave(4 // kv_heads, dim=1) for t in (k, v))
            allowed = torch.ones(32, 32, dtype=torch.bool).tril() if causal else None
            expected = layer.out(dense_attention(q, k, v, allowed).transpose(1, 2).reshape(2, 32, 64))
            torch.testing.assert_close(layer(x), expected)
            with FlopCounterMode(display=False) as counter:
                layer(x)
            softmax = 5 * 2 * 4 * 32 * 32
            assert layer.flops(2, 32) == counter.get_total_flops() + softmax


@pytest.mark.slow
def test_the_example_suite_runs_end_to_end_in_a_spawned_worker(tmp_path: Path):
    """As a user would: from the repository root, through the console entry point
    (python -I: the current directory is not on sys.path unless attnbench adds it)."""
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-I", "-c", "import sys; from attnbench.cli.app import app; sys.argv[0] = 'attnbench'; app()",
         "run", "examples/my_suite.yaml", "--quick", "--out", str(out), "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = out.iterdir()
    rows = list(csv.DictReader(open(run_dir / "results.csv")))
    assert {r["label"] for r in rows} == {"softmax", "sdpa", "linformer", "mqa", "gqa-2"}
    assert {r["status"] for r in rows} == {"ok"}
    mine = [r for r in rows if r["label"] in ("mqa", "gqa-2")]
    assert {r["variant"] for r in mine} == {"examples.my_attention:MyAttention"}
    assert {r["family"] for r in mine} == {"custom"} and {r["flops_source"] for r in mine} == {"analytic"}
    assert all(int(r["flops"]) > 0 and float(r["median_ms"]) > 0 for r in mine)
    meta = json.loads((run_dir / "run.json").read_text())
    assert {"gpus", "sdpa_backends", "cpu_model", "torch_threads", "warnings"} <= set(meta["environment"])
    assert "mqa" in proc.stdout

"""The checks a worker makes on a layer before timing it
(attnbench.bench.worker.checks): a broken custom layer fails its case with the fix
and no traceback; correct ones pass, causal or not."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import attnbench
import attnbench.variants
from attnbench.bench.worker.checks import check_layer
from attnbench.suite.load import parse
from tests.helpers import CUSTOM_LAYERS, CUSTOM_SUITE, passes_of, write_module

# Tiny tensors: one thread is faster and steadier on a shared machine (conftest).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(("attr", "causal", "message"), [
    ("HalfWidth", False, "HalfWidth returned shape (1, 16, 16), expected (1, 16, 32): the layer must map "
                         "(batch, seq_len, dim) to the same shape"),
    ("WrongDtype", False, "WrongDtype returned dtype float16, expected float32: compute in the input's dtype"),
    ("WrongDevice", False, "WrongDevice returned a tensor on meta, expected cpu: create tensors on x.device"),
    ("ReturnsTuple", False, "ReturnsTuple returned a tuple of 2, expected one tensor"),
    ("IgnoresCausal", True, "IgnoresCausal ignores causal: with causal=True, changing the last token changed "
                            "the outputs at earlier positions"),
])
def test_a_broken_custom_layer_fails_its_case_with_the_fix_and_no_traceback(workdir: Path, attr: str,
                                                                            causal: bool, message: str):
    write_module(workdir, "userpkg.attention", CUSTOM_LAYERS)
    suite = CUSTOM_SUITE.format(causal=str(causal).lower(), variants=f"  - userpkg.attention:{attr}\n")
    (messages,) = passes_of(suite).values()
    assert messages == [("fail", {"status": "error", "error": messages[0][1]["error"]})]
    assert messages[0][1]["error"].startswith(message)


@pytest.mark.slow
def test_correct_custom_layers_pass_the_checks_causal_or_not(workdir: Path):
    write_module(workdir, "userpkg.attention", CUSTOM_LAYERS)
    for causal in ("true", "false"):
        suite = CUSTOM_SUITE.format(causal=causal, variants="  - userpkg.attention:Attention\n"
                                                     "  - userpkg.attention:make_attention\n")
        for messages in passes_of(suite).values():
            statuses = [p["status"] for kind, p in messages if kind == "pass"]
            assert statuses == ["ok", "ok"], messages


def test_check_layer_restores_training_mode_and_skips_causal_for_one_token(workdir: Path):
    write_module(workdir, "userpkg.attention", CUSTOM_LAYERS)
    (case,) = parse(CUSTOM_SUITE.format(causal="true", variants="  - userpkg.attention:IgnoresCausal\n")
                    .replace("seq_lens: [16]", "seq_lens: [1]")).cases()
    layer = attnbench.build(case.variant, dim=32, heads=2, seq_len=1, causal=True)
    check_layer(case, layer, torch.randn(1, 1, 32))  # one token: nothing to leak
    assert layer.training

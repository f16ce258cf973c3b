"""Building variants (attnbench.variants.factory): custom variants by import path,
plugins, a class decorated with register; unknown names and parameters are
ValueErrors that suggest the close name."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import attnbench
import attnbench.variants
from attnbench.cli.app import app
from attnbench.errors import SuiteError
from attnbench.suite.load import parse
from attnbench.variants import factory
from attnbench.variants.registry import registered
from tests.helpers import BUILTIN, CUSTOM_LAYERS, CUSTOM_SUITE, write, write_module

runner = CliRunner()
N, DIM, HEADS = 128, 32, 2  # the sizes of tests/variants/test_layer.py

# Tiny tensors: one thread is faster and steadier on a shared machine (conftest).
pytestmark = pytest.mark.usefixtures("one_thread")


# --- import paths ------------------------------------------------------------------

def test_import_path_registers_class_and_factory_with_params_from_the_signature(workdir: Path):
    write_module(workdir, "userpkg.attention", CUSTOM_LAYERS)
    info = attnbench.variant_info("userpkg.attention:Attention")
    assert (info.origin, info.family, info.causal) == ("import path", "custom", True)
    assert info.defaults == {"scale": 1.0}
    layer = attnbench.build("userpkg.attention:Attention", dim=32, heads=2, seq_len=16, causal=True, scale=0.5)
    assert layer.scale == 0.5 and layer(torch.randn(2, 16, 32)).shape == (2, 16, 32)
    factory = attnbench.variant_info("userpkg.attention:make_attention")
    assert factory.defaults == {"scale": 2.0} and factory.origin == "import path"
    assert attnbench.build("userpkg.attention:make_attention", dim=16, heads=2, seq_len=8).scale == 2.0
    assert attnbench.variant_info("userpkg.attention:NoCausalMode").causal is False


def test_import_path_of_an_attention_core_is_wrapped_in_projections(workdir: Path):
    write_module(workdir, "usercore", """
        from attnbench.variants.layer import AttentionCore

        class Doubling(AttentionCore):
            def __init__(self, heads, head_dim, seq_len, causal=False, factor=2.0):
                super().__init__(heads, head_dim, seq_len, causal)
                self.factor = factor

            def forward(self, q, k, v):
                return v * self.factor

            def flops(self, batch, seq_len):
                return batch * self.heads * seq_len * self.head_dim
    """)
    layer = attnbench.build("usercore:Doubling", dim=32, heads=4, seq_len=8)
    assert layer.core.factor == 2.0 and layer(torch.randn(1, 8, 32)).shape == (1, 8, 32)


@pytest.mark.parametrize(("name", "expected"), [
    ("nosuchpkg.attention:Layer", ["cannot import module 'nosuchpkg.attention'", "Run attnbench from the directory "
                                   "that contains nosuchpkg/", "PYTHONPATH"]),
    ("userpkg.attention:Atention", ["has no attribute 'Atention'", "Did you mean 'Attention'?"]),
    ("userpkg.attention:CONSTANT", ["is a int, not an nn.Module class or a factory function"]),
    ("userpkg.attention:INSTANCE", ["is an nn.Module instance (Attention); name its class"]),
    ("userpkg.attention:NotAModule", ["NotAModule is a class but not a torch.nn.Module"]),
    ("userpkg.attention:NoCausalArg", ["must accept the keyword arguments dim, heads, seq_len, causal",
                                       "(missing: causal)"]),
    ("userpkg/attention.py:Attention", ["write the module as a dotted import path", "'userpkg.attention:Attention'"]),
    ("userpkg.broken:Layer", ["syntax error in userpkg/broken.py line 3"]),
    ("userpkg.raises:Layer", ["importing 'userpkg.raises' raised NameError", "raises.py line 2"]),
    ("userpkg.needs:Layer", ["imports 'a_package_that_is_not_installed'", "which is not installed"]),
])
def test_import_path_failures_say_what_to_fix(workdir: Path, name: str, expected: list[str]):
    write_module(workdir, "userpkg.attention", CUSTOM_LAYERS)
    write_module(workdir, "userpkg.broken", "import torch\n\ndef oops(:\n    pass\n")
    write_module(workdir, "userpkg.raises", "import torch\nundefined_name + 1\n")
    write_module(workdir, "userpkg.needs", "import a_package_that_is_not_installed\n")
    with pytest.raises(ValueError) as info:
        attnbench.variant_info(name)
    for text in expected:
        assert text in str(info.value)
    assert name not in registered()


def test_a_suite_naming_a_broken_import_path_is_rejected_at_its_line(workdir: Path):
    suite = CUSTOM_SUITE.format(causal="false", variants="  - softmax\n  - name: nosuchpkg.attention:Layer\n")
    with pytest.raises(SuiteError) as info:
        parse(suite, "my.yaml")
    assert info.value.line == 6 and info.value.key == "variants[1].name"
    assert "cannot import module 'nosuchpkg.attention'" in str(info.value)
    result = runner.invoke(app, ["validate", str(write(workdir / "s.yaml", suite))])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_a_class_decorated_with_register_keeps_its_metadata_under_its_import_path(workdir: Path):
    write_module(workdir, "decorated", """
        import attnbench
        from torch import nn

        @attnbench.register("decorated-attn", family="custom", paper="2401.00001", complexity="O(N·d)",
                            causal=False, flops=lambda batch, seq_len, dim: 7 * batch * seq_len * dim)
        class Layer(nn.Module):
            def __init__(self, dim, heads, seq_len, causal=False):
                super().__init__()

            def forward(self, x):
                return x
    """)
    info = attnbench.variant_info("decorated:Layer")
    assert (info.origin, info.paper, info.causal) == ("import path", "2401.00001", False)
    assert attnbench.variant_info("decorated-attn").origin == "user"
    assert registered()["decorated:Layer"].flops is registered()["decorated-attn"].flops


# --- plugins ------------------------------------------------------------------------

def test_entry_point_plugins_get_origin_plugin_and_a_broken_one_only_warns(workdir: Path,
                                                                           monkeypatch: pytest.MonkeyPatch):
    write_module(workdir, "userpkg.attention", CUSTOM_LAYERS)
    write_module(workdir, "pluginmod", """
        import attnbench
        from userpkg.attention import Attention

        @attnbench.register("plugin-decorated", family="custom", causal=True)
        class Registered(Attention):
            pass
    """)
    monkeypatch.syspath_prepend(str(workdir))
    group = "attnbench.variants"
    eps = [importlib.metadata.EntryPoint("plugin-class", "userpkg.attention:Attention", group),
           importlib.metadata.EntryPoint("plugin-module", "pluginmod", group),
           importlib.metadata.EntryPoint("plugin-broken", "nosuchplugin:Layer", group)]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: [e for e in eps if e.group == group])
    monkeypatch.setattr(factory, "_plugins_loaded", False)
    with pytest.warns(UserWarning, match="plugin 'plugin-broken'"):
        names = attnbench.variant_names()
    assert {"plugin-class", "plugin-decorated"} <= set(names)
    assert attnbench.variant_info("plugin-class").origin == "plugin"
    assert attnbench.variant_info("plugin-decorated").origin == "plugin"
    attnbench.variant_info("userpkg.attention:make_attention")
    listed = json.loads(runner.invoke(app, ["list", "--json"]).stdout)
    origins = {v["name"]: v["origin"] for v in listed["variants"]}
    assert origins["softmax"] == "built-in" and origins["plugin-class"] == "plugin"
    assert origins["userpkg.attention:make_attention"] == "import path"
    table = runner.invoke(app, ["list"], terminal_width=250).stdout
    assert "origin" in table and "plugin" in table and "import path" in table


@pytest.mark.parametrize("name", BUILTIN)
def test_unknown_parameter_is_a_value_error_naming_the_known_ones(name):
    with pytest.raises(ValueError, match="has no parameter 'no_such_param'"):
        attnbench.build(name, dim=DIM, heads=HEADS, seq_len=N, no_such_param=1)


def test_unknown_variant_suggests_the_close_name():
    with pytest.raises(ValueError, match="Did you mean 'linformer'"):
        attnbench.build("linformr")

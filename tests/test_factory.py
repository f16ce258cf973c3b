"""Custom variants: import paths, plugins, register(flops=...), the checks the
worker makes before timing, and the worked example run end to end."""

from __future__ import annotations

import csv
import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import attnbench
import attnbench.variants
from attnbench.bench.worker.checks import check_layer
from attnbench.bench.worker.measure import run_case
from attnbench.cli.app import app
from attnbench.errors import SuiteError
from attnbench.store.results import records_frame, write_csv
from attnbench.suite.load import parse
from attnbench.variants import factory
from attnbench.variants.registry import registered, unregister

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

SUITE = """\
name: custom
defaults: {{batch: 1, dim: 32, causal: {causal}, passes: [forward, forward_backward]}}
grid: {{seq_lens: [16], heads: [2]}}
variants:
{variants}
timing: {{warmup: 0, min_time_s: 0.001, max_reps: 2, min_reps: 1}}
"""

# Layers a user might write, right and wrong. ``Attention`` is plain softmax
# attention that honours ``causal``; the others break one rule each.
LAYERS = '''
import torch
from torch import nn


class Attention(nn.Module):
    """Softmax attention written by hand."""

    def __init__(self, dim, heads, seq_len, causal=False, scale=1.0):
        super().__init__()
        self.heads, self.causal, self.scale = heads, causal, scale
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        s = q @ k.transpose(-1, -2) * self.scale * (d // self.heads) ** -0.5
        if self.causal:
            s = s.masked_fill(torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
        return (s.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)


def make_attention(dim, heads, seq_len, causal=False, scale=2.0):
    return Attention(dim, heads, seq_len, causal, scale)


class IgnoresCausal(Attention):
    def __init__(self, dim, heads, seq_len, causal=False):
        super().__init__(dim, heads, seq_len, causal)
        self.causal = False


class HalfWidth(nn.Module):
    def __init__(self, dim, heads, seq_len, causal=False):
        super().__init__()
        self.proj = nn.Linear(dim, dim // 2)

    def forward(self, x):
        return self.proj(x)


class WrongDtype(nn.Module):
    def __init__(self, dim, heads, seq_len, causal=False):
        super().__init__()

    def forward(self, x):
        return x.to(torch.float16)


class WrongDevice(nn.Module):
    def __init__(self, dim, heads, seq_len, causal=False):
        super().__init__()

    def forward(self, x):
        return torch.empty(x.shape, dtype=x.dtype, device="meta")


class ReturnsTuple(Attention):
    def forward(self, x):
        return super().forward(x), None


class NoCausalArg(nn.Module):
    def __init__(self, dim, heads, seq_len):
        super().__init__()


class NotAModule:
    pass


class NoCausalMode(Attention):
    supports_causal = False


INSTANCE = Attention(8, 2, 4)
CONSTANT = 3
'''


# Tiny tensors: one thread is faster and steadier on a shared machine (conftest).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh current directory on which modules are written; sys.path, the
    modules imported from it and the variants registered are undone after."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    before = set(registered())
    yield tmp_path
    for name in set(registered()) - before:
        unregister(name)
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", "") or "").startswith(str(tmp_path)):
            del sys.modules[name]


def write_module(root: Path, name: str, text: str) -> None:
    path = root / (name.replace(".", "/") + ".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    importlib.invalidate_caches()


def passes_of(suite_text: str) -> dict[str, list[tuple[str, dict]]]:
    """Run every case of a suite in this process: label -> messages."""
    out: dict[str, list[tuple[str, dict]]] = {}
    for case in parse(suite_text).cases():
        messages: list[tuple[str, dict]] = []
        run_case(case, lambda message, m=messages: m.append((message.kind.value, message.payload())))
        out[case.label] = messages
    return out


# --- import paths ------------------------------------------------------------------

def test_import_path_registers_class_and_factory_with_params_from_the_signature(workdir: Path):
    write_module(workdir, "userpkg.attention", LAYERS)
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
    write_module(workdir, "userpkg.attention", LAYERS)
    write_module(workdir, "userpkg.broken", "import torch\n\ndef oops(:\n    pass\n")
    write_module(workdir, "userpkg.raises", "import torch\nundefined_name + 1\n")
    write_module(workdir, "userpkg.needs", "import a_package_that_is_not_installed\n")
    with pytest.raises(ValueError) as info:
        attnbench.variant_info(name)
    for text in expected:
        assert text in str(info.value)
    assert name not in registered()


def test_a_suite_naming_a_broken_import_path_is_rejected_at_its_line(workdir: Path):
    suite = SUITE.format(causal="false", variants="  - softmax\n  - name: nosuchpkg.attention:Layer\n")
    with pytest.raises(SuiteError) as info:
        parse(suite, "my.yaml")
    assert info.value.line == 6 and info.value.key == "variants[1].name"
    assert "cannot import module 'nosuchpkg.attention'" in str(info.value)
    result = runner.invoke(app, ["validate", str(_write(workdir / "s.yaml", suite))])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_list_imports_the_paths_it_is_given(workdir: Path):
    write_module(workdir, "userpkg.attention", LAYERS)
    result = runner.invoke(app, ["list", "userpkg.attention:Attention", "--json"])
    assert result.exit_code == 0, result.output
    (mine,) = [v for v in json.loads(result.stdout)["variants"] if v["name"] == "userpkg.attention:Attention"]
    assert (mine["origin"], mine["family"], mine["defaults"]) == ("import path", "custom", {"scale": 1.0})
    result = runner.invoke(app, ["list", "userpkg.attention:Atention"])
    assert result.exit_code == 2 and "Did you mean 'Attention'?" in result.stderr


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
    write_module(workdir, "userpkg.attention", LAYERS)
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


# --- FLOPs ---------------------------------------------------------------------------

class _Linear(nn.Module):
    """A layer without a flops method: one dim×dim matrix product."""

    def __init__(self, dim: int, heads: int, seq_len: int, causal: bool = False, width: int = 1) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim, bias=False)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class _Scale(nn.Module):
    """Element-wise only: nothing the flop counter counts."""

    def __init__(self, dim: int, heads: int, seq_len: int, causal: bool = False) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w


@pytest.fixture
def flops_variants():
    attnbench.register("t-flops-fn", family="custom",
                       flops=lambda batch, seq_len, dim, width: 11 * batch * seq_len * dim * width)(_Linear)
    attnbench.register("t-flop-counter", family="custom")(_Linear)
    attnbench.register("t-no-flops", family="custom")(_Scale)
    yield
    for name in ("t-flops-fn", "t-flop-counter", "t-no-flops"):
        unregister(name)


def test_flops_come_from_register_else_the_flop_counter_else_stay_empty(flops_variants, tmp_path: Path):
    variants = ("  - name: t-flops-fn\n    params: {width: 3}\n  - t-flop-counter\n  - t-no-flops\n")
    suite = SUITE.format(causal="false", variants=variants)
    results = passes_of(suite)
    passes = {label: [p for kind, p in m if kind == "pass"] for label, m in results.items()}
    fn = {p["pass"]: (p["flops"], p["flops_source"]) for p in passes["t-flops-fn"]}
    assert fn == {"forward": (11 * 16 * 32 * 3, "analytic"), "forward_backward": (3 * 11 * 16 * 32 * 3, "analytic")}
    counted = {p["pass"]: (p["flops"], p["flops_source"]) for p in passes["t-flop-counter"]}
    assert counted["forward"] == (2 * 16 * 32 * 32, "flop_counter")
    assert counted["forward_backward"] == (3 * 2 * 16 * 32 * 32, "flop_counter")
    assert {(p["flops"], p["flops_source"]) for p in passes["t-no-flops"]} == {(None, None)}
    assert all(p["status"] == "ok" for ps in passes.values() for p in ps)
    # In the CSV the uncounted variant's flops are empty, never 0.
    records = []
    for case in parse(suite).cases():
        record = {"schema": 1, "case_id": case.case_id, "case": case.to_dict(), "status": "ok",
                  "passes": [p for kind, p in results[case.label] if kind == "pass"]}
        records.append(record)
    write_csv(records_frame(records, "r"), tmp_path / "r.csv")
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    by_label = {(r["label"], r["pass"]): r for r in rows}
    assert by_label[("t-no-flops", "forward")]["flops"] == "" and by_label[("t-no-flops", "forward")]["tflops"] == ""
    assert by_label[("t-no-flops", "forward")]["flops_source"] == ""
    assert by_label[("t-flop-counter", "forward")]["flops_source"] == "flop_counter"
    assert by_label[("t-flops-fn", "forward")]["flops"] == str(11 * 16 * 32 * 3)


def test_register_rejects_a_flops_that_is_not_a_function():
    with pytest.raises(ValueError, match="flops must be a function"):
        attnbench.register("t-bad-flops", family="custom", flops=3)(_Linear)
    assert "t-bad-flops" not in registered()


# --- checks before timing -------------------------------------------------------------

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
    write_module(workdir, "userpkg.attention", LAYERS)
    suite = SUITE.format(causal=str(causal).lower(), variants=f"  - userpkg.attention:{attr}\n")
    (messages,) = passes_of(suite).values()
    assert messages == [("fail", {"status": "error", "error": messages[0][1]["error"]})]
    assert messages[0][1]["error"].startswith(message)


def test_correct_custom_layers_pass_the_checks_causal_or_not(workdir: Path):
    write_module(workdir, "userpkg.attention", LAYERS)
    for causal in ("true", "false"):
        suite = SUITE.format(causal=causal, variants="  - userpkg.attention:Attention\n"
                                                     "  - userpkg.attention:make_attention\n")
        for messages in passes_of(suite).values():
            statuses = [p["status"] for kind, p in messages if kind == "pass"]
            assert statuses == ["ok", "ok"], messages


def test_check_layer_restores_training_mode_and_skips_causal_for_one_token(workdir: Path):
    write_module(workdir, "userpkg.attention", LAYERS)
    (case,) = parse(SUITE.format(causal="true", variants="  - userpkg.attention:IgnoresCausal\n")
                    .replace("seq_lens: [16]", "seq_lens: [1]")).cases()
    layer = attnbench.build(case.variant, dim=32, heads=2, seq_len=1, causal=True)
    check_layer(case, layer, torch.randn(1, 1, 32))  # one token: nothing to leak
    assert layer.training


def test_other_variants_still_run_when_a_custom_one_is_broken(workdir: Path):
    write_module(workdir, "userpkg.attention", LAYERS)
    suite = _write(workdir / "mixed.yaml", SUITE.format(
        causal="true", variants="  - softmax\n  - userpkg.attention:IgnoresCausal\n  - userpkg.attention:Attention\n"))
    result = runner.invoke(app, ["run", str(suite), "--out", str(workdir / "res"), "--in-process", "-q"])
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    (run_dir,) = (workdir / "res").iterdir()
    rows = list(csv.DictReader(open(run_dir / "results.csv")))
    status = {(r["label"], r["pass"]): (r["status"], r["error"]) for r in rows}
    assert status[("softmax", "forward")] == ("ok", "")
    assert status[("userpkg.attention:Attention", "forward_backward")] == ("ok", "")
    bad, error = status[("userpkg.attention:IgnoresCausal", "forward")]
    assert bad == "error" and error.startswith("IgnoresCausal ignores causal")
    records = [json.loads(line) for line in (run_dir / "cases.jsonl").read_text().splitlines()]
    assert all("traceback" not in r for r in records)
    assert {r["family"] for r in records} == {"exact", "custom"}


# --- the worked example ----------------------------------------------------------------

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


def test_the_example_suite_runs_end_to_end_in_a_spawned_worker(tmp_path: Path):
    """As a user would: from the repository root, through the console entry point
    (python -I: the current directory is not on sys.path unless attnbench adds it)."""
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-I", "-c", "import sys; from attnbench.cli.app import app; sys.argv[0] = 'attnbench'; app()",
         "run", "examples/my_suite.yaml", "--quick", "--out", str(out), "-q"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
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


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path

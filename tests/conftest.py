import os
import shutil
import sys

import psutil
import pytest
import torch

from tests.helpers import lra_run, recorded_run

# FlexAttention variants: the unfused reference path, so that every registry-wide
# test does not pay a torch.compile; tests/variants/test_flex.py checks the compiled one.
os.environ.setdefault("ATTNBENCH_FLEX_EAGER", "1")
# A Ray cluster a test starts listens on loopback only (Ray reads this when it
# is imported; on Linux it otherwise binds every interface).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_inherited_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same console width whoever runs the tests: pytest-xdist exports its
    terminal's COLUMNS to its workers, and a test that wants a width sets it."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module of tiny-tensor tests: a second thread
    only adds synchronisation, and on a busy shared machine waiting for it
    dominates the run time. The setting is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def faulty_variants():
    """The test variants that fail on purpose (tests/fixtures/faulty_variants.py),
    registered for one test module."""
    import faulty_variants

    faulty_variants.register_all()
    yield faulty_variants
    faulty_variants.unregister_all()


# --- recorded runs (tests/fixtures/runs), one copy per test module -------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """softmax, sdpa, linformer and fastformer at N 64 and 128, three rounds."""
    return recorded_run("tiny", tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def honest_run(tmp_path_factory):
    """softmax and sdpa at N 64 and 128, forward and forward_backward."""
    return recorded_run("honest", tmp_path_factory.mktemp("honest"))


@pytest.fixture(scope="module")
def json_run(tmp_path_factory):
    """softmax, sdpa and t-json-broken (every case an error) at N 16 and 32."""
    return recorded_run("json", tmp_path_factory.mktemp("json"))


@pytest.fixture(scope="module")
def lra_run_dir(tmp_path_factory):
    """A synthetic run shaped like LRA's Table 2 (tests.helpers.lra_run)."""
    return lra_run(tmp_path_factory.mktemp("report") / "run-lra")


# --- shards of one sweep, run once for the session -----------------------------------------------

@pytest.fixture(scope="session")
def sharded(tmp_path_factory):
    """A tiny suite (three variants, four N, two heads, two rounds) run whole and in
    three shards, in process: (folder, suite file, the whole run's summary, the parts)."""
    from attnbench.bench.rundir import RunOptions
    from attnbench.bench.shard import Shard
    from attnbench.bench.sweep import run_suite
    from attnbench.suite import load as suite_mod
    from tests.helpers import SHARDED_SUITE, write_suite

    def run(suite_path, out, shard=None):
        summary = run_suite(suite_mod.load(suite_path),
                            RunOptions(out_dir=out, quiet=True, in_process=True, shard=shard))
        assert summary.exit_code == 0
        return summary

    tmp = tmp_path_factory.mktemp("sharded")
    suite_path = write_suite(tmp / "tiny.yaml", **SHARDED_SUITE)
    whole = run(suite_path, tmp / "whole")
    parts = [run(suite_path, tmp / "parts", Shard(k, 3)).run_dir for k in (1, 2, 3)]
    return tmp, suite_path, whole, parts


@pytest.fixture
def parts_copy(sharded, tmp_path):
    """The shards' run directories copied for one test: (suite file, whole run, parts)."""
    _, suite_path, whole, parts = sharded
    copies = []
    for part in parts:
        shutil.copytree(part, tmp_path / part.name)
        copies.append(tmp_path / part.name)
    return suite_path, whole, copies


# --- the machine and the current directory ---------------------------------------------------------

@pytest.fixture
def quiet_machine(monkeypatch: pytest.MonkeyPatch):
    """A machine with nothing to warn about: 'performance' governor, idle, 8 cores used by 8 threads."""
    from attnbench.bench import environment as env_mod

    monkeypatch.setattr(env_mod, "governors", lambda: ["performance"])
    monkeypatch.setattr(env_mod.os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 8)
    monkeypatch.setattr(env_mod.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    monkeypatch.delenv("CUDA_LAUNCH_BLOCKING", raising=False)


@pytest.fixture
def workdir(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """A fresh current directory on which modules are written; sys.path, the
    modules imported from it and the variants registered are undone after."""
    from attnbench.variants.registry import registered, unregister

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    before = set(registered())
    yield tmp_path
    for name in set(registered()) - before:
        unregister(name)
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", "") or "").startswith(str(tmp_path)):
            del sys.modules[name]

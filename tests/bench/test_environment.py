"""What the machine offers and the warnings about noisy timings
(attnbench.bench.environment), on simulated machines."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from attnbench.bench import environment as env_mod
from attnbench.bench.environment import governors
from tests.helpers import ENVIRONMENT_KEYS


def test_governors_read_from_sysfs(tmp_path: Path):
    for cpu, gov in ((0, "performance"), (1, "schedutil")):
        folder = tmp_path / f"cpu{cpu}" / "cpufreq"
        folder.mkdir(parents=True)
        (folder / "scaling_governor").write_text(gov + "\n")
    (tmp_path / "cpufreq").mkdir()  # not a cpu folder
    assert governors(tmp_path) == ["performance", "schedutil"]
    assert governors(tmp_path / "missing") == []


def test_collect_environment_has_every_documented_field_and_is_json(quiet_machine):
    data = env_mod.collect_environment()
    assert ENVIRONMENT_KEYS <= set(data)
    assert data["python"].count(".") == 2 and data["torch"] == torch.__version__
    assert data["sdpa_backends"]["math"] is True and set(data["sdpa_backends"]) >= {"flash", "efficient", "cudnn"}
    assert data["torch_threads"] == 8 and data["cpu_cores_logical"] == 8
    assert data["warnings"] == []
    json.loads(json.dumps(data))


@pytest.mark.parametrize(("change", "expected"), [
    ({"gpu_processes": 2}, "2 other process(es) are using the GPU"),
    ({"cpu_governors": ["powersave"]}, "CPU frequency governor is powersave, not 'performance'"),
    ({"torch_threads": 1}, "torch uses 1 thread(s) of 8 cores"),
    ({"torch_threads": 16}, "torch uses 16 threads but this process may run on only 8 CPU(s)"),
    ({"load_average": [7.5, 7.0, 6.0]}, "the machine is busy (load average 7.5 on 8 logical cores)"),
    ({"cuda_launch_blocking": "1"}, "CUDA_LAUNCH_BLOCKING is set"),
])
def test_each_source_of_noise_is_warned_about(change: dict, expected: str):
    base = {"gpu_processes": 0, "cpu_governors": ["performance"], "torch_threads": 8, "cpu_cores_physical": 8,
            "cpu_cores_logical": 8, "cpu_affinity": 8, "load_average": [0.1, 0.1, 0.1], "cuda_launch_blocking": None}
    assert env_mod.environment_warnings(base) == []
    (warning,) = env_mod.environment_warnings({**base, **change})
    assert warning.startswith(expected)


def test_collect_environment_warns_about_a_simulated_noisy_machine(monkeypatch: pytest.MonkeyPatch, quiet_machine):
    monkeypatch.setattr(env_mod, "governors", lambda: ["ondemand", "performance"])
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(env_mod, "_gpus", lambda torch: [])
    monkeypatch.setattr(env_mod, "_sdpa_backends", lambda torch: {"math": True})
    monkeypatch.setattr(env_mod, "_gpu_processes", lambda: 3)
    warnings = env_mod.collect_environment()["warnings"]
    assert any("3 other process(es) are using the GPU" in w for w in warnings)
    assert any("governor is ondemand" in w for w in warnings)
    assert any("torch uses 1 thread(s) of 8 cores" in w for w in warnings)


def test_gpu_processes_counts_the_others_only(monkeypatch: pytest.MonkeyPatch):
    listing = f"{os.getpid()}\n4242\n4343\n"
    monkeypatch.setattr(env_mod.subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=listing, stderr=""))
    assert env_mod._gpu_processes() == 2

    def missing(*a, **k):
        raise FileNotFoundError("nvidia-smi")

    monkeypatch.setattr(env_mod.subprocess, "run", missing)
    assert env_mod._gpu_processes() is None


@pytest.mark.parametrize(("capability", "flash", "efficient"), [((9, 0), True, True), ((7, 5), False, True)])
def test_gpu_fields_and_sdpa_backends_on_a_simulated_gpu(monkeypatch: pytest.MonkeyPatch, capability, flash,
                                                         efficient):
    props = SimpleNamespace(name="NVIDIA H100 80GB HBM3", total_memory=80 * 2**30, multi_processor_count=132,
                            major=capability[0], minor=capability[1])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setattr(torch.backends.cuda, "is_flash_attention_available", lambda: True)
    (gpu,) = env_mod._gpus(torch)
    assert gpu == {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_gib": 80.0, "multiprocessors": 132,
                   "capability": f"{capability[0]}.{capability[1]}"}
    backends = env_mod._sdpa_backends(torch)
    assert backends["flash"] is flash and backends["efficient"] is efficient
    rows = dict(env_mod.environment_rows({"gpus": [gpu], "sdpa_backends": backends}))
    assert rows["GPU 0"].startswith("NVIDIA H100 80GB HBM3, 80 GiB, 132 multiprocessors")

"""The GPU path's pieces that run anywhere (SDPA backends, compile, flex on
CPU), and the CUDA checks, which skip cleanly without a GPU."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import attnbench
from attnbench.bench.worker.measure import sdpa_backends_used
from attnbench.cli.app import app
from attnbench.store.results import load_run

runner = CliRunner()
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _run(tmp_path: Path, text: str, *extra: str) -> tuple[int, Path]:
    suite = tmp_path / "s.yaml"
    suite.write_text(text)
    result = runner.invoke(app, ["run", str(suite), "--out", str(tmp_path / "r"), "-q", "--in-process", *extra])
    (run_dir,) = (tmp_path / "r").iterdir()
    return result.exit_code, run_dir


def test_sdpa_backend_that_ran_is_recorded():
    x = torch.randn(1, 64, 32)
    assert sdpa_backends_used(attnbench.build("sdpa", dim=32, heads=2, seq_len=64, backend="math"), x) == ["math"]
    if torch.backends.cpu.get_cpu_capability() != "NO AVX":  # the CPU flash kernel needs vector units
        auto = sdpa_backends_used(attnbench.build("sdpa", dim=32, heads=2, seq_len=64), x)
        assert auto in (["flash"], ["math"])


def test_pinned_backend_that_cannot_run_is_skipped_with_the_reason(tmp_path):
    backend = "efficient" if not torch.cuda.is_available() else "cudnn"
    code, run_dir = _run(tmp_path, f"""
grid: {{seq_lens: [64], heads: [2]}}
defaults: {{dim: 32, passes: [forward]}}
timing: {{warmup: 0, max_reps: 2, min_reps: 1}}
variants:
  - {{name: sdpa, label: sdpa-math, params: {{backend: math}}}}
  - {{name: sdpa, label: sdpa-pinned, params: {{backend: {backend}}}}}
""")
    frame = load_run(run_dir).frame().set_index("label")
    assert frame.loc["sdpa-math", "status"] == "ok" and frame.loc["sdpa-math", "sdpa_backend"] == "math"
    if frame.loc["sdpa-pinned", "status"] != "ok":  # a GPU may well run it
        assert frame.loc["sdpa-pinned", "status"] == "skipped"
        assert "backend" in frame.loc["sdpa-pinned", "error"]
        assert code == 0  # skipped is not a failure


def test_compile_time_is_recorded_apart_from_the_samples(tmp_path):
    code, run_dir = _run(tmp_path, """
grid: {seq_lens: [32], heads: [2]}
defaults: {dim: 16, passes: [forward], compile: true}
timing: {warmup: 1, max_reps: 3, min_reps: 2}
variants: [softmax]
""")
    assert code == 0
    (record,) = load_run(run_dir).records
    assert record["compile_s"] > 0
    samples = record["passes"][0]["samples_ms"]
    assert max(samples) < record["compile_s"] * 1e3  # compilation is in no sample


def test_flex_backward_on_cpu_is_skipped_not_failed(tmp_path):
    code, run_dir = _run(tmp_path, """
grid: {seq_lens: [128], heads: [2]}
defaults: {dim: 32, passes: [forward, forward_backward]}
timing: {warmup: 0, max_reps: 2, min_reps: 1}
variants: [{name: flex_local, params: {window: 16}}]
""")
    rows = load_run(run_dir).frame().set_index("pass")
    assert rows.loc["forward", "status"] == "ok"
    assert rows.loc["forward_backward", "status"] == "skipped"
    assert "backward on CPU" in rows.loc["forward_backward", "error"]
    assert code == 0


def test_cuda_cases_are_skipped_cleanly_without_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, run_dir = _run(tmp_path, """
grid: {seq_lens: [64], heads: [2], devices: [cpu, cuda]}
defaults: {dim: 32, passes: [forward]}
timing: {warmup: 0, max_reps: 2, min_reps: 1}
variants: [sdpa]
""")
    frame = load_run(run_dir).frame().set_index("device")
    assert frame.loc["cpu", "status"] == "ok"
    assert frame.loc["cuda", "status"] == "skipped" and "CUDA is not available" in frame.loc["cuda", "error"]
    assert code == 0


# --- on a real GPU ---------------------------------------------------------------

@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_cuda_run_records_allocator_memory_and_events(tmp_path, dtype):
    code, run_dir = _run(tmp_path, f"""
grid: {{seq_lens: [1024, 2048], heads: [8], devices: [cuda]}}
defaults: {{dim: 512, dtype: {dtype}}}
timing: {{warmup: 2, max_reps: 10}}
variants: [softmax, sdpa, local, linear, fastformer, flex_local]
""")
    assert code == 0
    frame = load_run(run_dir).frame()
    assert (frame["status"] == "ok").all()
    soft = frame[(frame["label"] == "softmax") & (frame["seq_len"] == 2048) & (frame["pass"] == "forward")]
    assert soft["peak_mem_mib"].iloc[0] >= 8 * 2048 * 2048 * 2 / 2**20  # the half-precision score matrix
    assert frame["peak_reserved_mib"].notna().all()
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["environment"]["gpus"]


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("name", ["local", "strided", "longformer", "bigbird"])
def test_compiled_flex_on_cuda_equals_eager_forward_and_backward(name, monkeypatch):
    from attnbench.variants import flex

    monkeypatch.delenv("ATTNBENCH_FLEX_EAGER", raising=False)
    flex._compiled_flex.cache_clear()
    params = {"bigbird": {"block": 64, "random_blocks": 2}}.get(name, {"window": 128} if name != "strided" else {})
    eager = attnbench.build(name, dim=256, heads=4, seq_len=2048, **params).cuda()
    flexed = attnbench.build(f"flex_{name}", dim=256, heads=4, seq_len=2048, **params).cuda()
    flexed.load_state_dict(eager.state_dict())
    x = torch.randn(2, 2048, 256, device="cuda", requires_grad=True)
    y_eager, y_flex = eager(x), flexed(x)
    torch.testing.assert_close(y_flex, y_eager, rtol=2e-3, atol=2e-3)
    g = torch.randn_like(y_eager)
    (ge,) = torch.autograd.grad(y_eager, x, g)
    (gf,) = torch.autograd.grad(y_flex, x, g)
    torch.testing.assert_close(gf, ge, rtol=2e-3, atol=2e-3)


class _FakeCuda:
    """Stands in for torch.cuda on a machine without a GPU: records the order of the
    calls the CUDA timing and memory code makes, and returns chosen figures."""

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        fake = self

        class Event:
            def __init__(self, enable_timing=False):
                assert enable_timing, "elapsed_time needs enable_timing=True"
                self.name = "start" if not any(c.startswith("event") for c in fake.calls) else "end"
                fake.calls.append(f"event:{self.name}")

            def record(self):
                fake.calls.append(f"record:{self.name}")

            def elapsed_time(self, other):
                fake.calls.append("elapsed_time")
                return 12.5

        def log(name, value=None):
            def call(*args, **kwargs):
                fake.calls.append(name)
                return value
            return call

        for name, value in [("synchronize", None), ("reset_peak_memory_stats", None),
                            ("memory_allocated", 100 << 20), ("memory_reserved", 200 << 20),
                            ("max_memory_allocated", 164 << 20), ("max_memory_reserved", 264 << 20)]:
            monkeypatch.setattr(torch.cuda, name, log(name, value))
        monkeypatch.setattr(torch.cuda, "Event", Event)


def test_cuda_timing_brackets_the_region_with_events_and_synchronisation(monkeypatch):
    from attnbench.bench.worker.timing import timed

    fake = _FakeCuda(monkeypatch)
    ms = timed(lambda: fake.calls.append("region"), torch.device("cuda"))
    assert ms == 12.5  # the events' time, not the host's clock
    assert fake.calls == ["event:start", "event:end", "synchronize", "record:start", "region",
                          "record:end", "synchronize", "elapsed_time"]


def test_cuda_memory_is_the_allocator_peak_above_the_baseline(monkeypatch):
    from attnbench.bench.worker.memory import measure_peak

    fake = _FakeCuda(monkeypatch)
    reading = measure_peak(lambda: fake.calls.append("region"), torch.device("cuda"))
    assert reading.peak_mib == 64.0 and reading.reserved_mib == 64.0
    # stats reset and baseline read before the pass, peaks read after it has finished
    assert fake.calls == ["synchronize", "reset_peak_memory_stats", "memory_allocated", "memory_reserved",
                          "region", "synchronize", "max_memory_allocated", "max_memory_reserved"]

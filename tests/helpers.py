"""What more than one test file needs: paths, output and suite text, synthetic
records and run directories, the recorded runs, a CLI in a subprocess, worker
units, custom variants written on disk, a fake ``torch.cuda`` and small float64
attention inputs. Test files import from here (and take fixtures from
conftest.py), never from one another."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import attnbench
from attnbench.bench.executors.base import Executor
from attnbench.bench.worker.messages import CaseStarted, Meta, Outcome, PassResult
from attnbench.store.results import CSV_COLUMNS
from attnbench.store.visits import merge_visits
from attnbench.variants.registry import registered

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
#: On sys.path (pyproject: pytest's pythonpath): faulty_variants.py, the test-only variants.
FIXTURES = TESTS / "fixtures"
#: Finished runs recorded once by tests/fixtures/record_runs.py, read by the tests that only need their files.
RECORDED = FIXTURES / "runs"
SUITE_DIR = ROOT / "suites"


# --- text ---------------------------------------------------------------------------------

def flat(output: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return output.replace("\n", "")


def words(text: str) -> str:
    """``text`` with every run of white space one space (wrapping at a space undone)."""
    return " ".join(text.split())


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# --- small suites -------------------------------------------------------------------------

SMALL_DEFAULTS = {"dim": 32, "passes": ["forward"]}
SMALL_GRID = {"seq_lens": [64, 128], "heads": [2]}
SMALL_TIMING = {"warmup": 0, "max_reps": 2, "min_reps": 1, "min_time_s": 0.01}


def _flow(value: Any) -> str:
    """``value`` as YAML on one line (a scalar without the document end marker)."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1 << 20)
    return text.removesuffix("...\n").strip()


def small_suite(name: str = "tiny", *, baseline: str | None = None, published: str | None = None,
                defaults: dict | None = None, grid: dict | None = None, variants: list | tuple = ("softmax",),
                timing: dict | None = None, limits: dict | None = None, quality: dict | None = None,
                quick: dict | None = None) -> str:
    """The text of a small suite: dim 32, N 64 and 128, two heads, the forward
    pass, no warm-up and at most two samples a case, unless a keyword replaces
    a section (a mapping or a list, as written in the suite file; ``timing={}``
    takes the suite's defaults). The layout is fixed, so that a test may name a
    line: name, baseline, published, defaults, grid, then ``variants:`` with one
    variant a line (a mapping's keys one a line under its ``- name:``), timing,
    limits, quality, quick."""
    lines = [f"name: {name}"]
    if baseline is not None:
        lines.append(f"baseline: {baseline}")
    if published is not None:
        lines.append(f"published: {published}")
    lines.append(f"defaults: {_flow(SMALL_DEFAULTS if defaults is None else defaults)}")
    lines.append(f"grid: {_flow(SMALL_GRID if grid is None else grid)}")
    lines.append("variants:")
    for variant in variants:
        if isinstance(variant, str):
            lines.append(f"  - {variant}")
            continue
        first = True
        for key, value in variant.items():
            lines.append(f"{'  - ' if first else '    '}{key}: {_flow(value)}")
            first = False
    timing = SMALL_TIMING if timing is None else timing
    if timing:
        lines.append(f"timing: {_flow(timing)}")
    for key, value in (("limits", limits), ("quality", quality), ("quick", quick)):
        if value is not None:
            lines.append(f"{key}: {_flow(value)}")
    return "\n".join(lines) + "\n"


def write_suite(path: Path, **overrides: Any) -> Path:
    """:func:`small_suite` written to ``path``."""
    path.write_text(small_suite(**overrides))
    return path


#: softmax, sdpa, linformer and fastformer at N 64 and 128, every pass: recorded as runs/tiny.
TINY_SUITE = {"name": "tiny", "baseline": "softmax", "defaults": {"batch": 1, "dim": 32},
              "variants": ["softmax", "sdpa", {"name": "linformer", "params": {"k": 16}}, "fastformer"],
              "timing": {"warmup": 1, "min_time_s": 0.01, "max_reps": 3, "min_reps": 2}}
#: softmax and sdpa at N 64 and 128, forward and forward_backward: recorded as runs/honest.
HONEST_SUITE = {"name": "tiny", "baseline": "softmax",
                "defaults": {"batch": 1, "dim": 32, "passes": ["forward", "forward_backward"]},
                "variants": ["softmax", "sdpa"],
                "timing": {"warmup": 1, "min_time_s": 0.01, "max_reps": 3, "min_reps": 2}}
#: One variant, forward only, the suite's default timing: what `validate` counts and estimates.
ONE_SUITE = {"name": "one", "defaults": {"batch": 1, "dim": 32, "passes": ["forward"]}, "timing": {}}
SWEEP_TIMING = {"rounds": 1, "warmup": 0, "max_reps": 2, "min_reps": 1, "min_time_s": 0.01}
#: Two working variants, forward and backward: a sweep that ends well.
OK_SUITE = {"name": "ok", "defaults": {"dim": 32, "passes": ["forward", "backward"]},
            "variants": ["softmax", "fastformer"], "timing": SWEEP_TIMING}
#: Slow enough to interrupt (about 0.5 s a case, asleep rather than computing): needs the faulty variants.
SLOW_SUITE = {"name": "slow", "grid": {"seq_lens": [16, 32, 48, 64, 80, 96], "heads": [2]},
              "variants": [{"name": "faulty-slow", "params": {"delay_s": 0.12}}],
              "timing": {"warmup": 0, "max_reps": 2, "min_reps": 2, "min_time_s": 0.01}}
#: Three setting groups (N 32, 64, 96) of three variants on the CPU, two rounds: for spreading a sweep.
SPREAD_SUITE = {"defaults": {"dim": 32, "passes": ["forward", "backward"]},
                "grid": {"seq_lens": [32, 64, 96], "heads": [2], "devices": ["cpu"]},
                "variants": ["softmax", "fastformer", {"name": "linformer", "params": {"k": 16}}],
                "timing": {"warmup": 0, "max_reps": 2, "min_reps": 1, "min_time_s": 0.01, "rounds": 2}}
#: 18 cases (three variants, three N, two heads) in four rounds, for the sweep on a fake executor.
ROUNDS_SUITE = small_suite("rounds", defaults={"dim": 32, "passes": ["forward", "backward"]},
                           grid={"seq_lens": [64, 128, 256], "heads": [2, 4]},
                           variants=["softmax", "linear", "fastformer"],
                           timing={"rounds": 4, "warmup": 0, "max_reps": 2, "min_reps": 1, "min_time_s": 0.01})


def rounds_suite(text: str = ROUNDS_SUITE):
    from attnbench.suite.load import parse

    return parse(text, "rounds.yaml")


#: The suite that tests/conftest.py's ``sharded`` runs whole and in three shards.
SHARDED_SUITE = {"defaults": {"dim": 32, "passes": ["forward", "backward"]},
                 "grid": {"seq_lens": [32, 64, 96, 128], "heads": [2, 4]},
                 "variants": ["softmax", "fastformer", {"name": "linformer", "params": {"k": 16}}],
                 "timing": {"warmup": 0, "max_reps": 2, "min_reps": 1, "min_time_s": 0.01, "rounds": 2}}

#: A suite with a ``quality:`` section: both measures, tiny, and a quick variant with approx only.
QUALITY_SUITE = small_suite(
    "q", grid={"seq_lens": [64], "heads": [2]},
    variants=["softmax", {"name": "local", "label": "local-w8", "params": {"window": 8}}, "aft"],
    quality={"approx": {"seq_lens": [64], "regimes": ["gaussian", "peaked"], "seeds": [0], "dim": 32, "heads": 2},
             "mqar": {"seeds": [0, 1], "vocab": 16, "seq_len": 16, "pairs": 2, "dim": 16, "heads": 2, "steps": 4,
                      "batch": 4, "warmup": 1, "eval_sequences": 8, "params": {"local-w8": {"window": 2}}}},
    quick={"quality": {"measures": ["approx"]}})


def write_quality_suite(tmp_path: Path, text: str = QUALITY_SUITE) -> Path:
    path = tmp_path / "q.yaml"
    path.write_text(text)
    return path


# --- synthetic records and run directories --------------------------------------------------

def record(label: str, n: int, passes: dict[str, list[float] | str], heads: int = 2,
           rnd: int | None = None, mem: float | None = 1.0) -> dict:
    """A visit record (``rnd`` None: a run from before rounds); a pass given as
    a string is a failure with that status. ``mem``: the peak memory, which
    a pass measures on its first visit only."""
    case = {"suite": "t", "variant": label, "label": label, "params": {}, "batch": 1, "seq_len": n, "heads": heads,
            "dim": 32, "dtype": "float32", "device": "cpu", "causal": False, "passes": list(passes),
            "compile": False}
    out = []
    for name, value in passes.items():
        if isinstance(value, str):
            out.append({"pass": name, "status": value, "error": value, "samples_ms": []})
        else:
            out.append({"pass": name, "status": "ok", "samples_ms": list(value),
                        "peak_mem_mib": mem if rnd in (0, None) else None})
    status = next((p["status"] for p in out if p["status"] != "ok"), "ok")
    rec = {"schema": 1, "case_id": f"{label}|N={n}|H={heads}|dim=32|B=1|float32|cpu|causal=0", "case": case,
           "passes": out, "status": status, "threads": 1}
    if rnd is not None:
        rec["round"] = rnd
    return rec


def write_run(path: Path, records: list[dict], **meta: Any) -> Path:
    """A results directory holding ``records``: run.json (schema, run id, baseline
    softmax, and ``meta``) and cases.jsonl."""
    path.mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({"schema": 1, "run_id": path.name, "baseline": "softmax", **meta}))
    (path / "cases.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def fake_run(root: Path, name: str, suite: str, status: str, wall_s: float = 0.0) -> Path:
    """A run of ``suite`` (softmax, forward, N 64 and 128) as `attnbench runs` lists
    it: started 2026-12-01 10:00 on a 'Test CPU', each case taking ``wall_s``."""
    records = []
    for n in (64, 128):
        rec = record("softmax", n, {"forward": [1.0, 1.1]})
        rec["case"]["suite"] = suite
        records.append({**rec, "wall_s": wall_s})
    return write_run(root / name, records, suite_name=suite, started_at="2026-12-01T10:00:00+00:00", status=status,
                     cases_done=2, cases_total=2, environment={"cpu_model": "Test CPU"}, baseline=None)


def visit(rng: np.random.Generator, median: float, n: int = 5, sigma: float = 0.02) -> list[float]:
    """The samples of one visit around ``median`` (log-normal spread within the visit)."""
    return [float(x) for x in median * np.exp(rng.normal(0.0, sigma, n))]


def draw(rng, median: float, sigma: float = 0.03, n: int = 12) -> list[float]:
    return [float(x) for x in median * np.exp(rng.normal(0.0, sigma, n))]


ROUNDS = 4


def visits(rng, label: str, n: int, passes: dict[str, float | str], sigma: float = 0.03, rounds: int = ROUNDS,
           samples: int = 5) -> list[dict]:
    """``rounds`` visits of one case: per pass a median (each visit drifts by
    ``sigma`` around it) or a failure status."""
    out = []
    for r in range(rounds):
        drift = float(np.exp(rng.normal(0, sigma)))
        out.append(record(label, n, {p: v if isinstance(v, str) else draw(rng, v * drift, 0.01, samples)
                                     for p, v in passes.items()}, rnd=r))
    return out


def merged(records: list[dict]) -> list[dict]:
    return merge_visits(records)


def compare_rows(a, b):
    """The rows of ``compare_run_visits`` without the common shift."""
    from attnbench.analysis.two_runs import compare_run_visits

    return compare_run_visits(a, b)[0]


def two_variant_run(rng, rounds, slow=1.0, drift=None):
    """softmax and linear at four N, forward only; per-round drift shared by both."""
    drift = drift if drift is not None else np.exp(rng.normal(0, 0.05, rounds))
    out = []
    for r in range(rounds):
        for n in (64, 128, 256, 512):
            for label, base in (("softmax", n / 16), ("linear", n / 64 * slow)):
                samples = list(base * drift[r] * np.exp(rng.normal(0, 0.01, 5)))
                out.append(record(label, n, {"forward": samples}, rnd=r, mem=4.0 * n if label == "softmax" else n))
    return merge_visits(out)


NS = [256, 512, 1024, 2048, 4096]


def frame_of(times: dict[str, list[float]], ns=NS, pass_name="forward_backward", mem=None, heads=4,
             variants=None) -> pd.DataFrame:
    """A tidy results frame: one ok row per label and N (median = the given time)."""
    rows = []
    for label, ts in times.items():
        for n, t in zip(ns, ts, strict=True):
            row = dict.fromkeys(CSV_COLUMNS)
            row.update(label=label, variant=(variants or {}).get(label, label), batch=1, dim=256, dtype="float32",
                       device="cpu", causal=False, heads=heads, seq_len=n, status="ok", median_ms=t,
                       iqr_ms=0.01 * t, noisy=False, samples=5, case_id=f"{label}|N={n}",
                       peak_mem_mib=(mem or {}).get(label, [1.0 * n] * len(ns))[ns.index(n)])
            row["pass"] = pass_name
            rows.append(row)
    return pd.DataFrame(rows, columns=CSV_COLUMNS)


# --- a synthetic run shaped like LRA's Table 2 ------------------------------------------------

LRA_NS = [1024, 2048, 3072, 4096]
# median ms per N: softmax quadratic, linear linear and overtaking softmax near N = 1.5K
LRA_TIMES = {"softmax": lambda n: (n / 1024) ** 2 * 10.0, "linear": lambda n: n / 1024 * 15.0,
             "performer": lambda n: n / 1024 * 5.0, "synthesizer": lambda n: (n / 1024) ** 2 * 12.0}


def lra_record(label: str, n: int, passes: dict[str, dict]) -> dict:
    case = {"suite": "lra", "variant": label, "label": label, "params": {}, "batch": 1, "seq_len": n, "heads": 4,
            "dim": 256, "dtype": "float32", "device": "cpu", "causal": False, "passes": list(passes),
            "compile": False}
    statuses = [p["status"] for p in passes.values()]
    return {"schema": 1, "case_id": f"{label}|N={n}|H=4|dim=256|B=1|float32|cpu|causal=0", "case": case,
            "passes": [{"pass": k, **v} for k, v in passes.items()], "family": "x", "threads": 2,
            "param_count": 1, "device_name": "cpu", "status": "ok" if set(statuses) == {"ok"} else statuses[0],
            "error": None}


def write_lra_run(path: Path, records: list[dict], published: str | None = "lra_table2",
                  baseline: str | None = "softmax") -> Path:
    return write_run(path, records, suite_name="lra", baseline=baseline, published=published, status="finished",
                     environment={"torch": "x", "cpu_model": "test cpu", "torch_threads": 2})


def lra_samples(median: float, spread: float = 0.01) -> list[float]:
    return [median * (1 + spread * k) for k in (-2, -1, 0, 1, 2)]


def lra_run(path: Path) -> Path:
    """softmax, linear, performer and synthesizer at LRA's N (times as LRA_TIMES;
    performer noisy at 2K), bigbird measured at 1K and out of memory at 2K."""
    records = []
    for label, f in LRA_TIMES.items():
        for n in LRA_NS:
            mem = n * n / 1e4 if label in ("softmax", "synthesizer") else n / 100
            noisy = label == "performer" and n == 2048
            records.append(lra_record(label, n, {
                "forward": {"status": "ok", "samples_ms": lra_samples(f(n) / 3, 0.1 if noisy else 0.01),
                            "peak_mem_mib": mem / 2, "flops": 1},
                "forward_backward": {"status": "ok", "samples_ms": lra_samples(f(n)), "peak_mem_mib": mem,
                                     "flops": 3}}))
    records.append(lra_record("bigbird", 1024, {"forward": {"status": "ok", "samples_ms": [3.0, 3.1, 3.2],
                                                            "peak_mem_mib": 5.0},
                                                "forward_backward": {"status": "ok", "samples_ms": [9.0, 9.1, 9.2],
                                                                     "peak_mem_mib": 9.0}}))
    records.append(lra_record("bigbird", 2048, {"forward": {"status": "oom", "error": "out of memory",
                                                            "samples_ms": []},
                                                "forward_backward": {"status": "oom", "samples_ms": []}}))
    return write_lra_run(path, records)


# --- recorded runs ----------------------------------------------------------------------------

def recorded_run(name: str, dest: Path) -> Path:
    """A copy under ``dest`` of the recorded run ``name`` (tests/fixtures/runs/NAME,
    written by tests/fixtures/record_runs.py), named by its run id as when it ran."""
    source = RECORDED / name
    run_id = json.loads((source / "run.json").read_text())["run_id"]
    return Path(shutil.copytree(source, dest / run_id))


# --- the machine ----------------------------------------------------------------------------

#: The fields of the environment `attnbench env` shows and run.json records.
ENVIRONMENT_KEYS = {"python", "torch", "cuda", "cudnn", "gpus", "gpu_processes", "cpu_model", "cpu_cores_physical",
                    "cpu_cores_logical", "cpu_affinity", "torch_threads", "cpu_governors", "memory_total_gib", "os",
                    "sdpa_backends", "warnings", "schema", "attnbench"}


# --- the CLI, in this process and in a subprocess ---------------------------------------------

def invoke(*args: object):
    """``attnbench ARGS`` in this process (CliRunner), each argument as text."""
    from typer.testing import CliRunner

    from attnbench.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def strict_json(text: str) -> dict:
    """json.loads that refuses NaN and Infinity, which are not JSON."""

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in JSON output")

    return json.loads(text, parse_constant=refuse)


#: The CLI in a subprocess, knowing the test variants (a worker imports their module).
CLI_WITH_FAULTS = "import faulty_variants; from attnbench.cli.app import app; app(prog_name='attnbench')"


def start_cli(args: list[str], cwd: Path, **popen: Any) -> subprocess.Popen:
    """``attnbench ARGS`` with the test variants, in a subprocess reading its output."""
    env = {**os.environ, "COLUMNS": "300",
           "PYTHONPATH": os.pathsep.join([str(FIXTURES), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.Popen([sys.executable, "-c", CLI_WITH_FAULTS, *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def wait_for_cases(out: Path, count: int, proc: subprocess.Popen, timeout_s: float = 120) -> Path:
    """The run directory under ``out`` once ``count`` cases are in its cases.jsonl."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = list(out.glob("*/cases.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= count:
            return found[0].parent
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be interrupted: {proc.communicate()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("no cases finished in time")


class _SignalLater(threading.Thread):
    """Sends ``signum`` to this process once ``count`` cases are on disk under
    ``out`` and the next one has started; joined, it sends nothing more (the run
    is over, and the signal would hit the test process itself)."""

    def __init__(self, out: Path, count: int, signum: int) -> None:
        super().__init__()
        self.out, self.count, self.signum = out, count, signum
        self.done = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self.done.is_set():
            found = list(self.out.glob("*/cases.jsonl"))
            if found and len(found[0].read_text().splitlines()) >= self.count:
                break
            time.sleep(0.02)
        if not self.done.wait(0.1):  # into the next case
            os.kill(os.getpid(), self.signum)

    def join(self, timeout: float | None = None) -> None:
        self.done.set()
        super().join(timeout)


def signal_after(out: Path, count: int, signum: int) -> threading.Thread:
    """A thread that sends ``signum`` to this process once ``count`` cases are
    on disk under ``out`` and the next one has started (unless joined first)."""
    thread = _SignalLater(out, count, signum)
    thread.start()
    return thread


# --- a sweep without torch work ----------------------------------------------------------------

class FakeExecutor(Executor):
    """Yields a made-up outcome per case (time proportional to N) and can stop
    the sweep after ``stop_after`` cases, as Ctrl-C would."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.ran: list[tuple[str, int]] = []
        self.stop_after = stop_after
        self.fresh_calls = 0
        self.calibrations = 0

    def fresh(self) -> None:
        self.fresh_calls += 1

    def calibrate(self, device: str, dtype: str) -> dict:
        self.calibrations += 1
        return {"device": device, "dtype": dtype, "matmul_flops": 5e10 * (1 + 0.3 * self.calibrations),
                "bandwidth_bytes_per_s": 1.5e10}

    def run(self, cases):
        for case in cases:
            if self.stop_after is not None and len(self.ran) >= self.stop_after:
                raise KeyboardInterrupt
            yield CaseStarted(case)
            self.ran.append((case.case_id, case.round))
            messages = [Meta(family="x", param_count=1, threads=1, device_name="cpu", build_s=0.0)]
            for name in case.passes:
                ms = case.seq_len / 64 * (1 + 0.01 * case.round)
                messages.append(PassResult(pass_name=name, samples_ms=[ms, ms * 1.01], flops=10**6,
                                           peak_mem_mib=float(case.seq_len), memory_measured=case.round == 0))
            yield Outcome(case=case, messages=messages, started=0.0, wall_s=0.01)

    def close(self, interrupted: bool = False) -> None:
        pass


# --- a unit of cases ------------------------------------------------------------------------

def unit_of(variants: str, timing: str = "{warmup: 1, max_reps: 4, min_reps: 2, min_time_s: 0.001}",
            rounds: int = 1, limits: str = "{case_timeout_s: 30}", passes: str = "[forward, backward]") -> list:
    """The cases of ``variants`` (a YAML list) at N=64, two heads, dim 32, one setting
    group visited ``rounds`` times."""
    from attnbench.suite import load as suite_mod

    text = f"""\
        name: unit
        defaults: {{dim: 32, passes: {passes}}}
        grid: {{seq_lens: [64], heads: [2]}}
        variants: {variants}
        timing: {timing}
        limits: {limits}
        """
    cases = suite_mod.parse(textwrap.dedent(text)).cases()
    return [replace(c, round=r) for r in range(rounds) for c in cases]


# --- custom variants written by a user ----------------------------------------------------------

CUSTOM_SUITE = """\
name: custom
defaults: {{batch: 1, dim: 32, causal: {causal}, passes: [forward, forward_backward]}}
grid: {{seq_lens: [16], heads: [2]}}
variants:
{variants}
timing: {{warmup: 0, min_time_s: 0.001, max_reps: 2, min_reps: 1}}
"""

# Layers a user might write, right and wrong. ``Attention`` is plain softmax
# attention that honours ``causal``; the others break one rule each.
CUSTOM_LAYERS = '''
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


class NoFlopsLinear(torch.nn.Module):
    """A layer without a flops method: one dim×dim matrix product."""

    def __init__(self, dim: int, heads: int, seq_len: int, causal: bool = False, width: int = 1) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(dim, dim, bias=False)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def write_module(root: Path, name: str, text: str) -> None:
    """The module ``name`` (dotted) under ``root``, ready to import."""
    path = root / (name.replace(".", "/") + ".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    importlib.invalidate_caches()


def passes_of(suite_text: str) -> dict[str, list[tuple[str, dict]]]:
    """Run every case of a suite in this process: label -> messages."""
    from attnbench.bench.worker.measure import run_case
    from attnbench.suite.load import parse

    out: dict[str, list[tuple[str, dict]]] = {}
    for case in parse(suite_text).cases():
        messages: list[tuple[str, dict]] = []
        run_case(case, lambda message, m=messages: m.append((message.kind.value, message.payload())))
        out[case.label] = messages
    return out


# --- torch.cuda without a GPU ---------------------------------------------------------------

class FakeCuda:
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


# --- variants: float64 layers and inputs at small N ---------------------------------------------

F64 = torch.float64
#: The built-in variants (no plugin, no import path, no test variant).
BUILTIN = [n for n in attnbench.variant_names() if registered()[n].info.origin == "built-in"]
SMALL_DIM, SMALL_HEADS = 16, 4


def case_ids(cases: list[tuple[str, dict]]) -> list[str]:
    """Test ids of (variant, params) cases: the name and the parameter values."""
    return [f"{name}-{'-'.join(str(v) for v in params.values())}" for name, params in cases]


def f64_layer(name: str, n: int, causal: bool = False, dim: int = SMALL_DIM, heads: int = SMALL_HEADS,
              dtype: torch.dtype = F64, seed: int = 0, **params) -> torch.nn.Module:
    """The layer ``name`` built from ``seed``, in ``dtype`` (float64)."""
    torch.manual_seed(seed)
    return attnbench.build(name, dim=dim, heads=heads, seq_len=n, causal=causal, **params).to(dtype)


def f64_randn(*shape: int, dtype: torch.dtype = F64, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def qkv(b: int = 2, h: int = 3, n: int = 64, d: int = 16, seed: int = 0,
        dtype: torch.dtype = F64) -> tuple[torch.Tensor, ...]:
    """Queries, keys and values (b, h, n, d) drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, h, n, d, generator=g, dtype=dtype) for _ in range(3))


def f64_core(name: str, n: int = 64, heads: int = 3, head_dim: int = 16, causal: bool = False, **params):
    """The attention core of ``name`` (what runs between the projections), in float64."""
    layer = attnbench.build(name, dim=heads * head_dim, heads=heads, seq_len=n, causal=causal, **params)
    return layer.core.to(F64)


def quadratic(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, causal: bool,
              eps: float = 0.0) -> torch.Tensor:
    """The normalised kernel form with the N×N matrix: (A v) / (A 1), A = φ(q) φ(k)ᵀ."""
    a = phi_q @ phi_k.transpose(-1, -2)
    if causal:
        a = a.tril()
    return (a @ v) / (a.sum(-1, keepdim=True) + eps)


# --- variants: the checks a test makes of several variant modules ---------------------------------
# Synthesizer, AFT and the convolutions (float64 layers of SMALL_DIM at small N), then the
# kernel and low-rank variants (linear, performer, nystrom), each check for one case.

def check_gradients_reach_every_parameter(name: str, params: dict, causal: bool) -> None:
    n = 40
    layer = f64_layer(name, n, causal=causal, **params)
    x = f64_randn(2, n, SMALL_DIM).requires_grad_()
    y = layer(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    (y * f64_randn(*y.shape, seed=2)).sum().backward()
    assert torch.isfinite(x.grad).all()
    for pname, p in layer.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname
    if name == "aft" and params["mode"] == "local":
        from attnbench.variants.aft import full_to_band

        # every band entry that points at a real token is used
        inside = full_to_band(torch.ones(n, n, dtype=F64), layer.s, causal) > 0
        assert (layer.w.grad[inside] != 0).all()


def check_causal_output_ignores_the_future(name: str, params: dict) -> None:
    n, t = 40, 17
    layer = f64_layer(name, n, causal=True, **params)
    x = f64_randn(2, n, SMALL_DIM)
    x2 = x.clone()
    x2[:, t + 1:] += 3 * f64_randn(2, n - t - 1, SMALL_DIM, seed=5)
    with torch.no_grad():
        y, y2 = layer(x), layer(x2)
    torch.testing.assert_close(y[:, :t + 1], y2[:, :t + 1], rtol=1e-10, atol=1e-10)
    assert not torch.allclose(y[:, t + 1:], y2[:, t + 1:])
    # the same layer without the mask does look ahead
    layer.causal = False
    if name == "aft" and params["mode"] == "local":
        return  # its band parameter has the causal layout
    with torch.no_grad():
        assert not torch.allclose(layer(x)[:, :t + 1], layer(x2)[:, :t + 1])


def check_no_square_tensor_forward_and_backward(name: str, params: dict, causal: bool) -> None:
    from attnbench.testing import assert_no_square

    n, dim = 1024, 32  # N > 3·dim: no projection weight has two dims >= N
    layer = f64_layer(name, n, causal=causal, dim=dim, heads=2, dtype=torch.float32, **params)
    x = torch.randn(1, n, dim, requires_grad=True)
    assert_no_square(lambda: layer(x).sum().backward(), n)
    assert x.grad is not None


def check_flops_grow_as_claimed(name: str, params: dict, growth: float) -> None:
    n = 2048
    with torch.device("meta"):  # FLOPs need no parameter values
        layer = attnbench.build(name, dim=32, heads=2, seq_len=n, **params)
    ratio = layer.flops(1, 2 * n) / layer.flops(1, n)
    assert ratio == pytest.approx(growth, rel=0.06)
    assert layer.flops(2, n) > layer.flops(1, n) > 0


def check_training_and_inference_paths_agree(name: str, params: dict) -> None:
    """Without gradients the non-causal form skips the row-major copy of v."""
    q, k, v = qkv(n=48)
    c = f64_core(name, n=48, **params)
    with torch.no_grad():
        inference = c(q, k, v)
    training = c(*(t.clone().requires_grad_() for t in (q, k, v)))
    torch.testing.assert_close(training.detach(), inference, rtol=1e-12, atol=1e-13)


def check_kernel_half_precision_is_close_to_float32(name: str, causal: bool, params: dict) -> None:
    q, k, v = (t.float() for t in qkv(n=128))
    c = attnbench.build(name, dim=48, heads=3, seq_len=128, causal=causal, **params).core
    out = c(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), c(q, k, v), rtol=0.05, atol=0.05)


def check_causality(name: str, params: dict) -> None:
    torch.manual_seed(0)
    layer = attnbench.build(name, dim=32, heads=2, seq_len=48, causal=True, **params).to(F64)
    x = torch.randn(1, 48, 32, dtype=F64)
    for t in (0, 5, 20, 47):
        y = layer(x)
        x2 = x.clone()
        x2[:, t + 1:] = 10 * torch.randn_like(x2[:, t + 1:])  # large: would move a global stabiliser
        torch.testing.assert_close(layer(x2)[:, :t + 1], y[:, :t + 1], rtol=1e-12, atol=1e-13)


def check_no_square(name: str, causal: bool, params: dict, n: int) -> None:
    from attnbench.testing import assert_no_square

    torch.manual_seed(0)
    layer = attnbench.build(name, dim=32, heads=2, seq_len=n, causal=causal, **params)
    x = torch.randn(1, n, 32, requires_grad=True)

    def step():
        layer(x).sum().backward()

    assert_no_square(step, n)


def check_flops_grow_linearly(name: str, causal: bool, params: dict) -> None:
    layer = attnbench.build(name, dim=512, heads=8, seq_len=4096, causal=causal, **params)
    # Nyström's m³ pseudo-inverse is a constant: its ratio approaches 2 from below.
    for n in (4096, 8192):
        ratio = layer.core.flops(1, 2 * n) / layer.core.flops(1, n)
        assert 1.85 < ratio <= 2.0 + 1e-9, (n, ratio)
        assert 1.9 < layer.flops(1, 2 * n) / layer.flops(1, n) <= 2.0 + 1e-9
    assert layer.core.flops(2, 4096) == 2 * layer.core.flops(1, 4096)
    softmax = attnbench.build("softmax", dim=512, heads=8, seq_len=4096).core.flops(1, 4096)
    assert layer.core.flops(1, 4096) < softmax / 4  # sub-quadratic at this N


def check_gradients_are_finite_and_reach_every_parameter(name: str, causal: bool, params: dict) -> None:
    torch.manual_seed(0)
    layer = attnbench.build(name, dim=32, heads=2, seq_len=60, causal=causal, **params)
    x = torch.randn(2, 60, 32, requires_grad=True)
    layer(x).pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in layer.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


# --- a run whose every text is hostile (the HTML report's escaping) -------------------------

#: A label that would run a script if a page pasted it in as markup.
HOSTILE_LABEL = "<img src=x onerror=alert(1)>"
HOSTILE_ERROR = "</script><script>alert(2)</script><!--"
HOSTILE_TRACEBACK = 'Traceback:\n  File "<svg onload=alert(3)>", line 1\nValueError: <b>&amp;</b>\u2028'


def hostile_run(path: Path) -> Path:
    """softmax and a variant labelled HOSTILE_LABEL (parameters, suite name,
    machine, command and a failed case's error and traceback hostile too), at N
    64 and 128, forward and forward_backward, four rounds."""
    rng = np.random.default_rng(5)
    records = []
    for label, f in (("softmax", 1.0), (HOSTILE_LABEL, 0.5)):
        for n in (64, 128):
            for rec in visits(rng, label, n, {"forward": f * n / 64, "forward_backward": 3 * f * n / 64}):
                rec["case"]["params"] = {"note": "<script>alert(5)</script>"} if label != "softmax" else {}
                records.append(rec)
    for rnd in range(ROUNDS):
        failed = record("broken", 64, {"forward": "error", "forward_backward": "error"}, rnd=rnd)
        failed["error"] = failed["passes"][0]["error"] = HOSTILE_ERROR
        failed["traceback"] = HOSTILE_TRACEBACK
        records.append(failed)
    return write_run(path, records, suite_name="<b>hostile</b>", command=["attnbench", "run", "<i>x</i>.yaml"],
                     environment={"cpu_model": "<img src=y onerror=alert(4)>", "torch": "2.13.0+cpu"})

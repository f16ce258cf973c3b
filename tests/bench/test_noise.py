"""Noise monitoring (attnbench.bench.noise): other processes' CPU time, load,
threads and governor, with psutil faked."""

from collections import namedtuple

import pytest

from attnbench.bench import noise
from attnbench.bench.noise import NoiseMonitor, noise_warnings

CpuTimes = namedtuple("CpuTimes", "user nice system idle iowait irq softirq steal guest guest_nice")


ProcTimes = namedtuple("ProcTimes", "user system children_user children_system")


class FakeProcess:
    def __init__(self, machine, pid):
        self.machine, self.pid = machine, pid

    def cpu_times(self):
        if self.pid in self.machine.gone:
            raise FakePsutil.Error()
        return ProcTimes(*self.machine.procs[self.pid])

    def children(self, recursive=False):
        return [FakeProcess(self.machine, p) for p in self.machine.procs if p != self.pid]


class FakePsutil:
    """A 2-core machine: our tree is pid 1 (and its workers); the rest is others."""

    class Error(Exception):
        pass

    def __init__(self):
        self.busy = 0.0
        self.procs = {1: (1.0, 0.0, 0.0, 0.0)}
        self.gone = set()

    def cpu_times(self):
        return CpuTimes(user=self.busy, nice=0, system=0, idle=100.0, iowait=1.0, irq=0, softirq=0, steal=0,
                        guest=5.0, guest_nice=0)

    def cpu_count(self, logical=True):
        return 2

    def Process(self, pid):  # noqa: N802 - psutil's name
        return FakeProcess(self, pid)


def test_other_processes_time_is_the_machines_busy_time_minus_our_tree():
    ps, clock = FakePsutil(), iter([0.0, 10.0])
    monitor = NoiseMonitor(ps, loadavg=lambda: (0.2, 0.1, 0.1), clock=lambda: next(clock), pid=1)
    monitor.start()
    # 10 s: our parent 1 CPU-s, a worker 12 CPU-s (it finished: its parent's children time), others 5 CPU-s
    ps.procs[1] = (2.0, 0.0, 12.0, 0.0)
    ps.busy += 1.0 + 12.0 + 5.0
    record = monitor.stop()
    assert record["own_cpu_s"] == pytest.approx(13.0) and record["other_cpu_s"] == pytest.approx(5.0)
    assert record["other_share"] == pytest.approx(5.0 / 20.0) and record["cores"] == 2
    assert record["load_average_start"] == [0.2, 0.1, 0.1]
    warned = noise_warnings(record, threads=2, usable_cores=2)
    assert any("other processes used 25% of the 2 cores" in w for w in warned)


def test_a_quiet_run_has_no_warning_and_a_vanished_worker_is_no_error(monkeypatch, tmp_path):
    monkeypatch.setattr(noise, "governors", lambda: [])
    ps, clock = FakePsutil(), iter([0.0, 10.0])
    ps.procs[2] = (3.0, 0.0, 0.0, 0.0)
    monitor = NoiseMonitor(ps, loadavg=lambda: (0.1, 0.1, 0.1), clock=lambda: next(clock), pid=1)
    monitor.start()
    ps.gone.add(2)  # exited without being reaped yet
    ps.procs[1] = (1.5, 0.0, 0.0, 0.0)
    ps.busy += 0.5 + 0.4
    record = monitor.stop()
    assert record["other_cpu_s"] == pytest.approx(0.4)
    assert noise_warnings({**record, "load_average_end": [2.3, 1, 1], "governors": ["performance"]},
                          threads=2, usable_cores=2) == []
    assert NoiseMonitor(ps, loadavg=lambda: (0, 0, 0)).stop() == {}


def test_load_threads_and_governor_warnings():
    record = {"cores": 2, "load_average_start": [1.5, 1, 1], "load_average_end": [6.0, 2, 1],
              "governors": ["performance", "powersave"]}
    warned = noise_warnings(record, threads=4, usable_cores=2)
    assert len(warned) == 4
    assert any("busy when the run started" in w for w in warned)
    assert any("busy at the end" in w for w in warned)
    assert any("4 threads on 2 usable core" in w for w in warned)
    assert any("powersave" in w and "performance" in w for w in warned)


def test_a_measured_quiet_share_outweighs_the_lagging_load_average():
    # A quiet run started right after another: load 1.5 on 2 cores, others took 0.7% of the cores.
    record = {"cores": 2, "other_share": 0.007, "load_average_start": [1.5, 1.4, 1.6],
              "load_average_end": [1.9, 1.7, 1.6], "governors": []}
    assert noise_warnings(record, threads=2, usable_cores=2) == []
    busy = noise_warnings({**record, "other_share": 0.5, "other_cpu_s": 95.0, "wall_s": 95.0}, threads=2)
    assert len(busy) == 1 and "other processes used 50%" in busy[0]


def test_a_ray_run_is_not_told_that_its_own_ray_workers_were_other_processes():
    from attnbench.bench.noise import run_warnings

    noise = {"cores": 2, "other_share": 0.91, "other_cpu_s": 172.0, "wall_s": 95.0,
             "load_average_start": [1.5, 1, 1], "load_average_end": [3.0, 2, 1], "governors": ["powersave"]}
    local = run_warnings({"noise": noise, "executor": {"kind": "local"}}, [])
    assert any("other processes used 91%" in w for w in local)
    ray = run_warnings({"noise": noise, "executor": {"kind": "ray"}}, [])
    assert not any("other processes" in w or "busy" in w for w in ray)
    assert any("powersave" in w for w in ray)  # what the driver's machine itself says still counts

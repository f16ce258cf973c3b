"""Units in a worker process (attnbench.bench.worker.process) whose cases fail in
every way a case can: each blamed on the right case, the others measured all the
same; a unit killed to stop the sweep runs nothing again."""

from __future__ import annotations

import threading
import time

import pytest

from attnbench.bench.records import finished_record
from attnbench.bench.worker.process import WorkerPool
from tests.helpers import unit_of

pytestmark = pytest.mark.usefixtures("faulty_variants")


@pytest.mark.slow
def test_a_worker_dying_or_hanging_under_a_unit_blames_its_case_and_reruns_the_others():
    pool = WorkerPool(["faulty_variants"])
    try:
        visits = unit_of("[softmax, faulty-abort, {name: faulty-late-abort, params: {calls: 2}}, "
                         "{name: faulty-slow, params: {delay_s: 0.4}}, faulty-oomkill, fastformer]",
                         timing="{warmup: 0, max_reps: 8, min_reps: 8, min_time_s: 0.001}",
                         limits="{case_timeout_s: 2}", rounds=2, passes="[forward]")
        for visit in (visits[:6], visits[6:]):
            outcomes = pool.run_unit(visit)
            got = {o.case.label: finished_record(o) for o in outcomes}
            assert got["softmax"]["status"] == got["fastformer"]["status"] == "ok"
            assert len(got["softmax"]["passes"][0]["samples_ms"]) == 8
            assert got["faulty-abort"]["status"] == "crashed" and "SIGABRT" in got["faulty-abort"]["error"]
            assert got["faulty-late-abort"]["status"] == "crashed"
            assert got["faulty-slow"]["status"] == "timeout" and "case_timeout_s (2 s" in got["faulty-slow"]["error"]
            assert got["faulty-oomkill"]["status"] == "oom"  # run again alone: it is to blame
            assert all(0 < o.wall_s < 10 for o in outcomes)
    finally:
        pool.kill()


@pytest.mark.slow
def test_a_unit_killed_to_stop_the_sweep_runs_nothing_again():
    pool = WorkerPool(["faulty_variants"])
    try:
        visit = unit_of("[softmax, {name: faulty-slow, params: {delay_s: 0.2}}, fastformer]",
                        timing="{warmup: 0, max_reps: 50, min_reps: 50, min_time_s: 0.001}", passes="[forward]")

        def stop() -> None:  # as DeviceExecutor.close(interrupted=True) does
            pool.stopping = True
            pool.process.kill()

        assert finished_record(pool.run(visit[0], 60))["status"] == "ok"  # the worker is up
        timer = threading.Timer(1.5, stop)
        timer.start()
        t0 = time.perf_counter()
        outcomes = pool.run_unit(visit)
        timer.join()
        assert time.perf_counter() - t0 < 10 and pool.started == 1  # no worker started to run the rest again
        assert len(outcomes) == 3
    finally:
        pool.kill()

"""The console script (attnbench.cli.entry): Ctrl-C from the first instant is
one line and exit 130, never a traceback from inside torch's import; a reader
that goes away (| head) is not an error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT

ENTRY = "from attnbench.cli.entry import main; main()"
pytestmark = pytest.mark.slow  # each test starts the command line in a process of its own


@pytest.mark.parametrize("after_s", [0.2, 0.6, 1.2])
def test_ctrl_c_while_torch_is_importing_is_one_line_and_exit_130(after_s: float):
    proc = subprocess.Popen([sys.executable, "-c", ENTRY, "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(after_s)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    if proc.returncode == 0:  # the machine was fast enough to finish first: nothing to judge
        pytest.skip(f"list finished within {after_s} s")
    assert proc.returncode == 130, stderr
    assert stderr == "interrupted\n" and stdout == ""


def test_a_reader_that_goes_away_is_not_an_error():
    # A report longer than the pipe's buffer, so that the command is still writing when the reader leaves.
    proc = subprocess.Popen([sys.executable, "-c", ENTRY, "report", str(ROOT / "results/reference-cpu/overview")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "80"})
    first = proc.stdout.readline()  # as `| head -1` does
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert first.startswith(b"timings")  # the verdict comes first
    assert proc.returncode == 0 and "Error" not in stderr and "Traceback" not in stderr, stderr

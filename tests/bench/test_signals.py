"""Interrupts (attnbench.bench.signals) stay interrupts, even raised inside Ray's
compiled code."""

from __future__ import annotations

import pytest


def test_an_interrupt_inside_ray_code_stays_an_interrupt():
    """Ray's compiled code turns an exception raised by a signal handler into a
    SystemError; the Ray executor hands the sweep the interrupt itself."""
    from attnbench.bench.executors.ray_executor import signals_pass_through
    from attnbench.bench.signals import Interrupted

    def compiled_call_interrupted():
        try:
            raise Interrupted("SIGINT")
        except Interrupted as exc:
            raise SystemError("<cyfunction CoreWorker.wait> returned a result with an exception set") from exc

    with pytest.raises(Interrupted):
        with signals_pass_through():
            compiled_call_interrupted()
    with pytest.raises(SystemError):  # a SystemError of its own stays one
        with signals_pass_through():
            raise SystemError("something else")

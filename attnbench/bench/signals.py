"""Signals during a sweep: SIGINT and SIGTERM stop it between cases, never in
the middle of recording a finished one, and never cut the final writes short."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any


class Interrupted(BaseException):
    """SIGINT or SIGTERM during a sweep. A BaseException, like KeyboardInterrupt,
    so that no ``except Exception`` on the way (a variant's, run_case's) can
    record it as a failed case and go on."""


class SignalGuard:
    """SIGINT and SIGTERM stop the sweep by raising ``Interrupted``, except
    inside ``deferred()`` (recording a finished case: the interrupt is raised
    once it is on disk) and after ``hold()`` (writing the final files: further
    signals are noted and ignored)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.pending: str | None = None
        self._depth = 0
        self._holding = False
        self._previous: dict[int, Any] = {}

    def install(self) -> SignalGuard:
        for s in self.SIGNALS:
            try:
                self._previous[s] = signal.signal(s, self._handler)
            except ValueError:  # not the main thread: Ctrl-C stays KeyboardInterrupt
                pass
        return self

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.pending is None:
            self.pending = signal.Signals(signum).name
        if self._depth == 0 and not self._holding:
            raise Interrupted(self.pending)

    def check(self) -> None:
        if self.pending is not None and not self._holding:
            raise Interrupted(self.pending)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self._depth == 0:
            self.check()

    def hold(self) -> None:
        self._holding = True

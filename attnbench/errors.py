"""The project's own exceptions: the CLI turns each into a message and an exit code."""

from __future__ import annotations


class AttnbenchError(Exception):
    """An error the user can fix; the CLI prints it without a traceback."""

    exit_code = 2


class SuiteError(AttnbenchError):
    """A suite file that does not validate, located by file, line and key."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.key = key
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or "<suite>"
        if self.line is not None:
            where += f":{self.line}"
        if self.key:
            where += f": {self.key}"
        return f"{where}: {self.message}"


class ResultsError(AttnbenchError):
    """A results directory that is missing, unreadable or not an attnbench run."""

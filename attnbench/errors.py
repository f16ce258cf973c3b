"""The project's own exceptions: the CLI turns each into a message and an exit code."""

from __future__ import annotations

import difflib


def did_you_mean(name: str, choices: list[str]) -> str:
    """' Did you mean 'x'?' for the closest of ``choices``, or ''."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


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


class SuiteErrors(SuiteError):
    """Several SuiteErrors of one file, reported together."""

    def __init__(self, errors: list[SuiteError]) -> None:
        # In the file's order (errors without a line last), as the validator found them otherwise.
        self.errors = sorted(errors, key=lambda e: (e.line is None, e.line or 0))
        first = self.errors[0]
        super().__init__(first.message, file=first.file, line=first.line, key=first.key)

    def __str__(self) -> str:
        return f"{self.file or '<suite>'}: {len(self.errors)} errors:\n  " + "\n  ".join(str(e) for e in self.errors)


class ResultsError(AttnbenchError):
    """A results directory that is missing, unreadable or not an attnbench run."""


class VariantError(AttnbenchError, ValueError):
    """An unknown variant, a parameter it does not take, a combination it does
    not support, or a custom variant that cannot be imported. A ValueError too,
    as ``attnbench.build`` has always raised."""


class DataError(AttnbenchError, ValueError):
    """A name that is not in the data it points into: a baseline that is not in
    the run, a published table that is not shipped."""

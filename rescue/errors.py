"""The one error type users see: a one-line message, an optional hint, an exit code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FINDINGS = 1  # analysis found an error-severity problem
EXIT_USAGE = 2  # bad arguments or bad input


class RescueError(Exception):
    """An error the user can act on. The CLI prints it as one line, without a traceback."""

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"

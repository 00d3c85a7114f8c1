"""The one error type users see: a one-line message, an optional hint, an exit code."""

from __future__ import annotations

import re

EXIT_OK = 0
EXIT_FINDINGS = 1  # analysis found an error-severity problem
EXIT_USAGE = 2  # bad arguments or bad input
EXIT_IOERR = 74  # the disk or the system failed us (sysexits' EX_IOERR): EIO, ENOSPC, EROFS
EXIT_INTERNAL = 70  # a bug in rescue (sysexits' EX_SOFTWARE): one line, the traceback with --debug

# C0 controls but tab, DEL, C1 controls: what could break a line or drive the terminal (escape sequences).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text from foreign input (logs, file names) made safe to print on one terminal line."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class RescueError(Exception):
    """An error the user can act on. The CLI prints it as one line, without a traceback."""

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


def os_error(e: OSError, path: object = None) -> RescueError:
    """An OSError as a one-line RescueError naming the file: "PATH: no such file or directory"."""
    reason = e.strerror or str(e)
    reason = reason[:1].lower() + reason[1:]
    where = path if path is not None else e.filename
    return RescueError(f"{where}: {reason}" if where is not None else reason)

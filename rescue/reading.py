"""Reading the files users name and captures hold: bounded in size, never blocked by a FIFO, one-line errors.

Everything `rescue analyze` and `rescue check-image` read goes through read_bytes(), so that a named pipe
with no writer, a directory, /dev/zero or a file that vanished gives a clear error instead of a hang, a
traceback or an exhausted memory.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from rescue.errors import RescueError, os_error


def read_bytes(path: Path, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of the file, and whether it holds more."""
    try:
        # O_NONBLOCK: opening a FIFO nobody writes to would otherwise wait forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise os_error(e, path) from None
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise RescueError(f"{path}: is a directory, a file was expected")
        # Reads block again (a pipe from `<(dmesg)` delivers over time); a FIFO with no writer is at EOF.
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit)
            more = bool(f.read(1))  # probing for one more byte spares a copy of the data
    except OSError as e:
        raise os_error(e, path) from None
    finally:
        os.close(fd)
    return data, more


def load_json(path: Path, limit: int) -> Any:
    """A JSON document from a file; RescueError when it is too big, not JSON, or nested too deeply."""
    data, more = read_bytes(path, limit)
    if more:
        raise RescueError(f"{path}: larger than {limit:,} bytes, not what rescue writes")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." thousands deep
        raise RescueError(f"{path}: not valid JSON") from None

"""Several listeners may write one capture directory (behind a load balancer); recovery must not take a
capture another listener is still receiving for one its killed predecessor left.

Each listener holds a shared flock on DIR/.rescue-listen.lock for as long as it runs. Recovery needs the
lock exclusively: the first listener to start alone recovers; one that starts while others run skips
recovery and says so (their captures in progress look exactly like a dead listener's).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK = ".rescue-listen.lock"


class DirectoryLock:
    def __init__(self, root: Path) -> None:
        self._fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def try_exclusive(self) -> bool:
        """True when no other listener runs on this directory (then hold it until shared())."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def shared(self) -> None:
        """Hold the lock shared for the listener's life (waits while another one recovers)."""
        fcntl.flock(self._fd, fcntl.LOCK_SH)

    def close(self) -> None:
        os.close(self._fd)

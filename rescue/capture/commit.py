"""Group commit: many captures made durable by one syncfs(2) of the capture file system per batch.

An fsync per file (15 tar members, a manifest, the directory) was half of the listener's time in a burst.
Instead, what was written since the last batch (files under their final names, manifests, renames) is
flushed by one syncfs every BATCH_SECONDS, in a thread of its own; each waiter learns afterwards whether
its bytes are on disk (None) or what failed (an OSError: EIO, ENOSPC at writeback, ...).

syncfs reports writeback errors since Linux 5.8; where syncfs itself is missing, os.sync() (which reports
nothing) stands in, and the first use says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

BATCH_SECONDS = 0.02  # a sender waits at most about this long (plus the syncfs) for its clean close

Waiter = Callable[[OSError | None], None]


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_SYNCFS = _load_syncfs()


def syncfs(fd: int) -> None:
    """syncfs(2) on the file system holding fd; OSError on failure."""
    if _SYNCFS is None:
        os.sync()
        return
    if _SYNCFS(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class GroupCommit:
    """A thread that makes everything written below root durable in batches, then tells the waiters."""

    def __init__(self, root: Path) -> None:
        self._fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._waiting: list[Waiter] = []
        self._cond = threading.Condition()
        self._closing = False
        self.batches = 0
        self._thread = threading.Thread(target=self._run, name="rescue-commit", daemon=True)
        self._thread.start()

    def wait_durable(self, waiter: Waiter) -> None:
        """Call waiter (in the commit thread) once what was written before this call is on disk."""
        with self._cond:
            self._waiting.append(waiter)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        os.close(self._fd)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closing:
                    self._cond.wait()
                if not self._waiting and self._closing:
                    return
            time.sleep(BATCH_SECONDS)  # let the batch fill: one syncfs for all who come meanwhile
            with self._cond:
                batch, self._waiting = self._waiting, []
            error: OSError | None = None
            try:
                syncfs(self._fd)
            except OSError as e:
                error = e
            self.batches += 1
            for waiter in batch:
                waiter(error)

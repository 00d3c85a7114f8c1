"""The listener's side of the fleet index: each finished capture becomes a row, written by one thread of its
own (SQLite connections stay in the thread that made them; the event loop never waits on the index).

When a root cause crosses 10, 100 or 1,000 machines, `on_milestone` gets the line to print. An index that
cannot be written is reported once through `on_error` and then left alone: captures are stored whatever
becomes of the index, and `rescue summary --rebuild` recreates it from their manifests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from rescue.capture.manifest import Manifest
from rescue.errors import RescueError
from rescue.summary.index import INDEX, Index, entry_for, rebuild
from rescue.summary.report import milestone_crossed, milestone_line


class Feed:
    def __init__(
        self,
        root: Path,
        loop: asyncio.AbstractEventLoop,
        on_milestone: Callable[[str, int], None],
        on_error: Callable[[str], None],
    ) -> None:
        """on_milestone and on_error are called on the loop."""
        self.root = root
        self.loop = loop
        self._on_milestone, self._on_error = on_milestone, on_error
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rescue-index")
        self._index: Index | None = None
        self._broken = False
        self._closed = False

    def start(self) -> Future[None]:
        """Open the index; build it from the manifests when the directory has none yet."""
        return self._pool.submit(self._open)

    def add(self, capture: Path, manifest: Manifest) -> None:
        if not self._closed:
            self._pool.submit(self._add, capture, manifest)

    def close(self) -> None:
        """Write what is queued, then close the index (in its own thread, as SQLite wants)."""
        self._closed = True
        self._pool.submit(self._close)
        self._pool.shutdown(wait=True)

    def _close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None

    def _open(self) -> None:
        try:
            if not (self.root / INDEX).exists():
                rebuild(self.root)
            self._index = Index(self.root)
        except (RescueError, OSError) as e:
            self._fail(str(e))

    def _add(self, capture: Path, manifest: Manifest) -> None:
        if self._index is None or self._broken:
            return
        try:
            entry = entry_for(str(capture.relative_to(self.root)), manifest)
            before = self._index.machines_in_group(entry.group) if entry.status == "complete" else 0
            self._index.add([entry])
            if entry.status != "complete":
                return
            after = self._index.machines_in_group(entry.group)
            crossed = milestone_crossed(before, after)
            if crossed:
                line = milestone_line(crossed, entry.finding, entry.kernel, entry.generator, entry.fix)
                self.loop.call_soon_threadsafe(self._on_milestone, line, crossed)
        except Exception as e:  # sqlite3 errors, a full disk: the captures themselves are safe
            self._fail(f"{type(e).__name__}: {e}")

    def _fail(self, problem: str) -> None:
        self._broken = True
        self.loop.call_soon_threadsafe(
            self._on_error,
            f"the fleet index {self.root / INDEX} cannot be written ({problem}); captures are still stored: "
            f"`rescue summary {self.root} --rebuild` recreates it",
        )

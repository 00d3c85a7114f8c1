"""From a received stream to a stored, diagnosed capture, without slowing the event loop that receives.

1. The connection's end: its spool file is closed (a finished stream's renamed from .partial), then one
   group commit (capture.commit: one syncfs per batch) makes it durable; only then does the sender get its
   clean close. If the commit fails it gets a reset instead: a sender whose bundle is not kept never sees
   a clean close.
2. Extraction, verification, diagnosis and the manifest run in worker processes (listen.workers,
   listen.finalize), so diagnosis never competes with receiving for the GIL. Only as many jobs as the
   workers can hold are handed over; the rest wait as small Job values while their bytes wait on disk:
   when diagnosis lags, memory does not grow with the backlog.
3. A second group commit covers the extracted files and the manifest; then the capture is announced.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rescue.capture.commit import GroupCommit
from rescue.capture.manifest import Status
from rescue.listen.config import Settings
from rescue.listen.connection import Received
from rescue.listen.finalize import Job, finalize_job
from rescue.listen.workers import WorkerDied, Workers

Durable = Callable[[OSError | None], None]


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


class Pipeline:
    def __init__(
        self,
        root: Path,
        loop: asyncio.AbstractEventLoop,
        on_stored: Callable[[Job, dict[str, Any]], None],
        on_failed: Callable[[Job, BaseException], None],
        on_trouble: Callable[[str], None],
        workers: int = 0,
    ) -> None:
        self.loop = loop
        self.on_stored, self.on_failed = on_stored, on_failed
        self.workers = workers or default_workers()
        self.commit = GroupCommit(root)
        self.queue: deque[Job] = deque()
        self.in_flight = 0
        self.committing = 0
        self._workers = Workers(loop, finalize_job, self.workers, on_trouble)

    # 1. durable spool, then the sender's close -------------------------------------------------------

    def received(self, job: Job, on_durable: Durable | None) -> None:
        """A connection ended; on_durable (if any) learns on the loop when its bytes are on disk."""
        self._busy(+1, "committing")

        def durable(error: OSError | None) -> None:
            self.loop.call_soon_threadsafe(self._spool_durable, job, on_durable, error)

        self.commit.wait_durable(durable)

    def _spool_durable(self, job: Job, on_durable: Durable | None, error: OSError | None) -> None:
        try:
            if on_durable is not None:
                on_durable(error)
            if error is not None:
                self.on_failed(job, error)
                return
            self.queue.append(job)
            self._pump()
        finally:  # counted until handled: drain() must not return while a step is still pending
            self._busy(-1, "committing")

    # 2. the worker processes ---------------------------------------------------------------------

    def _pump(self) -> None:
        while self.queue and self.in_flight < self._workers.capacity:
            job = self.queue.popleft()
            self._submit(job, retry=True)

    def _submit(self, job: Job, *, retry: bool) -> None:
        self._busy(+1, "in_flight")
        self._workers.submit(job).add_done_callback(lambda fut: self._finalized(job, fut, retry))

    def _finalized(self, job: Job, fut: asyncio.Future[dict[str, Any]], retry: bool) -> None:
        try:
            error = fut.exception()
            if isinstance(error, WorkerDied) and retry:
                self._submit(job, retry=False)  # its worker died (the OOM killer, a signal): once more
            elif error is not None:
                self.on_failed(job, error)
            else:
                self._commit_final(job, fut.result())
        finally:
            self._busy(-1, "in_flight")
        self._pump()

    # 3. the finished capture, durable, announced -------------------------------------------------

    def _commit_final(self, job: Job, manifest: dict[str, Any]) -> None:
        self._busy(+1, "committing")

        def durable(error: OSError | None) -> None:
            self.loop.call_soon_threadsafe(self._final_durable, job, manifest, error)

        self.commit.wait_durable(durable)

    def _final_durable(self, job: Job, manifest: dict[str, Any], error: OSError | None) -> None:
        try:
            if error is not None:
                self.on_failed(job, error)
            else:
                self.on_stored(job, manifest)
        finally:
            self._busy(-1, "committing")

    # lifecycle -----------------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        return len(self.queue) + self.in_flight + self.committing

    def _busy(self, delta: int, counter: str) -> None:
        setattr(self, counter, getattr(self, counter) + delta)

    async def drain(self) -> None:
        """Wait until every received stream is stored and announced."""
        while self.backlog:
            await asyncio.sleep(0.05)

    def close(self) -> None:
        self._workers.close()
        self.commit.close()
        # multiprocessing's helpers (the fork server, the resource tracker) would outlive the listener for
        # a moment, holding its stdout, stderr and directory: stop them now (CPython's own tests do so).
        for helper in (
            multiprocessing.forkserver._forkserver,
            multiprocessing.resource_tracker._resource_tracker,
        ):
            stop = getattr(helper, "_stop", None)
            if stop is not None:
                stop()


def job_for(received: Received, settings: Settings) -> Job:
    """The Job for a received stream: its spool closed (renamed from .partial when the stream ended whole).

    Runs on the event loop: a close and a rename, no fsync (the group commit follows).
    """
    spool, sha256 = None, ""
    sink = received.sink
    if sink is not None:
        if received.status is Status.COMPLETE:
            entry = sink.commit(durable=False)
        else:
            entry = sink.keep_partial(durable=False)
        spool, sha256 = entry.name, entry.sha256
    cap = received.capture
    return Job(
        path=str(cap.path),
        peer=received.peer,
        started=cap.manifest.started,
        kind=str(received.kind),
        status=str(received.status),
        reason=received.reason,
        header={k: v for k, v in received.header.items() if k != "token"},
        body_bytes=received.body_bytes,
        spool=spool,
        spool_sha256=sha256,
        raw_name=received.raw_name,
        max_members=settings.max_members,
        max_bytes=settings.max_bytes,
        legacy_encoding=settings.legacy_encoding,
        header_problems=received.header_problems,
    )

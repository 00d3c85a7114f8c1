"""The worker processes that finalize captures (extraction, verification, diagnosis), outside the event
loop's process so that diagnosis never competes with receiving for the GIL.

Not concurrent.futures.ProcessPoolExecutor: that one starts its processes lazily, inside submit(), at the
moment the listener is busiest. When such a start fails (out of descriptors in a burst) the job is already
queued inside the pool while its future never reaches the caller, and a pool whose fork server died does
not recover: captures stayed unannounced. Here every worker starts with the listener; each is fed through
its own pipe and answers through it to the event loop (no threads); a worker that dies fails only the jobs
it held (WorkerDied: the pipeline tries once more) and is started again when next needed; and when no
worker can be started, a thread of the listener does the job: slower, never lost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import signal
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

PER_WORKER = 2  # jobs handed to one worker at once: the next is ready in its pipe when one ends
TROUBLE_EVERY = 60.0  # seconds between two reports that a worker cannot be started


class WorkerDied(Exception):
    """The worker process holding the job ended before answering (the OOM killer, a signal)."""


def _serve(conn: Connection, fn: Callable[[Any], Any]) -> None:
    """A worker's life: a job from the pipe, its result (or exception) back, until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the listener's to handle: it stops us
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[bool, Any] = (True, fn(job))
        except Exception as error:  # the job's failure is the listener's to report, not the worker's end
            reply = (False, error)
        try:
            conn.send(reply)
        except Exception as error:  # an exception or result that cannot be pickled
            conn.send((False, RuntimeError(f"{type(error).__name__}: {error}")))


class _Worker:
    def __init__(self, ctx: Any, fn: Callable[[Any], Any]) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, fn), daemon=True)
        try:
            self.process.start()
        finally:
            child.close()
        self.held: deque[asyncio.Future[Any]] = deque()


class Workers:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fn: Callable[[Any], Any],
        count: int,
        on_trouble: Callable[[str], None],
    ) -> None:
        self.loop, self.fn, self.count, self.on_trouble = loop, fn, count, on_trouble
        # forkserver: the listener has threads (commit, index); a fork of it could inherit a held lock.
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload([fn.__module__])
        self._workers: list[_Worker] = []
        # Made now: when it is needed, there may be no descriptor left to import what it needs.
        self._fallback = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="finalize")
        self._trouble_said = float("-inf")
        for _ in range(count):
            self._start()

    @property
    def capacity(self) -> int:
        return self.count * PER_WORKER

    def submit(self, job: Any) -> asyncio.Future[Any]:
        """The job's result, from a worker process, or from a thread of the listener when none can run."""
        worker = self._pick()
        if worker is None:
            return self._in_listener(job)
        try:
            worker.conn.send(job)
        except OSError:  # it died while idle: its end is read by _answered; this job goes elsewhere
            self._lost(worker)
            return self.submit(job)
        fut = self.loop.create_future()
        worker.held.append(fut)
        return fut

    def _pick(self) -> _Worker | None:
        """An idle worker, else one started in an empty slot, else the least busy with room."""
        idle = [w for w in self._workers if not w.held]
        if idle:
            return idle[0]
        if len(self._workers) < self.count and (started := self._start()):
            return started
        room = [w for w in self._workers if len(w.held) < PER_WORKER]
        return min(room, key=lambda w: len(w.held), default=None)

    def _start(self) -> _Worker | None:
        try:
            worker = _Worker(self._ctx, self.fn)
        except Exception as error:  # out of descriptors or processes, a fork server gone
            if time.monotonic() - self._trouble_said >= TROUBLE_EVERY:
                self._trouble_said = time.monotonic()
                why = str(error) or type(error).__name__
                self.on_trouble(f"cannot start a worker process ({why}): finalizing in the listener")
            return None
        self.loop.add_reader(worker.conn.fileno(), self._answered, worker)
        self._workers.append(worker)
        return worker

    def _answered(self, worker: _Worker) -> None:
        try:
            ok, value = worker.conn.recv()
        except (EOFError, OSError):
            self._lost(worker)
            return
        except Exception as error:  # an answer that cannot be unpickled here: that job's failure only
            why = f"{type(error).__name__}: {error}"
            ok, value = False, RuntimeError(f"a worker's answer is unreadable ({why})")
        fut = worker.held.popleft()
        if not fut.done():
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def _lost(self, worker: _Worker) -> None:
        """A worker ended: the jobs it held fail with WorkerDied; its slot is filled when next needed."""
        if worker not in self._workers:
            return
        self._workers.remove(worker)
        self.loop.remove_reader(worker.conn.fileno())
        worker.conn.close()
        worker.process.join(timeout=1)  # it has closed its end: it is gone or going
        why = f"worker process {worker.process.pid} ended (exit status {worker.process.exitcode})"
        self.on_trouble(why)
        while worker.held:
            worker.held.popleft().set_exception(WorkerDied(why))

    def _in_listener(self, job: Any) -> asyncio.Future[Any]:
        """No worker could be started: a thread of the listener does the job (slower, never lost)."""
        return asyncio.wrap_future(self._fallback.submit(self.fn, job), loop=self.loop)

    def close(self) -> None:
        """Stop every worker (each ends when its pipe closes) and the fallback thread."""
        for worker in self._workers:
            self.loop.remove_reader(worker.conn.fileno())
            worker.conn.close()
        for worker in self._workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
        self._workers.clear()
        self._fallback.shutdown(wait=True)

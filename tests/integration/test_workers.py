"""The listener's worker processes (rescue.listen.workers), real processes from the fork server: a result
or an exception comes back, a worker that dies costs only its jobs (WorkerDied) and its slot is filled
again, and when no worker can be started (out of descriptors, for real) a thread does the job."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
from typing import Any

from rescue.listen.workers import WorkerDied, Workers


def _refuse_to_load(what: str) -> None:
    raise ValueError(f"{what} cannot be loaded")


class Unloadable:
    """Pickled fine in the worker; loading it back in the listener fails."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _refuse_to_load, ("this answer",)


def work(job: Any) -> Any:
    """What the workers run in these tests (imported by the fork server, so at module level)."""
    if job == "raise":
        raise ValueError("bad job")
    if job == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    if job == "pid":
        return os.getpid()
    if job == "unloadable":
        return Unloadable()
    return job * 2


async def with_workers(count: int, body: Any) -> tuple[Any, list[str]]:
    said: list[str] = []
    workers = Workers(asyncio.get_running_loop(), work, count, said.append)
    try:
        return await body(workers), said
    finally:
        workers.close()


def test_results_and_exceptions_come_back() -> None:
    async def body(w: Workers) -> list[Any]:
        return await asyncio.gather(w.submit(21), w.submit("raise"), w.submit("pid"), return_exceptions=True)

    (answer, error, pid), said = asyncio.run(with_workers(2, body))
    assert answer == 42 and isinstance(error, ValueError) and str(error) == "bad job"
    assert pid != os.getpid() and said == []


def test_an_answer_that_cannot_be_loaded_fails_its_job_only() -> None:
    async def body(w: Workers) -> list[Any]:
        return await asyncio.gather(w.submit("unloadable"), w.submit(21), return_exceptions=True)

    (error, answer), said = asyncio.run(with_workers(1, body))
    assert isinstance(error, RuntimeError) and "this answer cannot be loaded" in str(error)
    assert answer == 42 and said == []


def test_a_dead_worker_fails_its_job_and_is_replaced() -> None:
    async def body(w: Workers) -> tuple[BaseException | None, Any, int]:
        died = w.submit("die")
        error = await asyncio.wait_for(asyncio.gather(died, return_exceptions=True), 30)
        pid = await w.submit("pid")
        return error[0], pid, len(w._workers)

    (error, pid, alive), said = asyncio.run(with_workers(1, body))
    assert isinstance(error, WorkerDied) and "exit status -9" in str(error)
    assert pid != os.getpid() and alive == 1
    assert any("ended (exit status -9)" in s for s in said), said


def test_no_worker_can_start_a_thread_does_the_job() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: list[int] = []

    async def body(w: Workers) -> tuple[Any, Any]:
        await asyncio.wait_for(asyncio.gather(w.submit("die"), return_exceptions=True), 30)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        try:
            while True:  # every descriptor taken: a new worker's pipe cannot be made
                held.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        try:
            return await w.submit(21), await w.submit("pid")
        finally:
            for fd in held:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    (answer, pid), said = asyncio.run(with_workers(1, body))
    assert answer == 42 and pid == os.getpid()  # done in the listener's own process
    assert any("cannot start a worker process" in s and "Too many open files" in s for s in said), said

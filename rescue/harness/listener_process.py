"""A real `rescue listen --json` process, port chosen by the OS, read through its events.

Used by the tests, `make demo`, the benchmarks and the capture recorder alike.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rescue.deadline import Deadline
from rescue.errors import RescueError


class ListenerProcess:
    """A real `rescue listen --json` process, port chosen by the OS, read through its events.

    Used by the tests, `make demo`, the benchmarks and the capture recorder alike.
    """

    def __init__(
        self,
        directory: Path,
        *extra: str,
        bind: str = "127.0.0.1",
        wrap: Sequence[str] = (),
        pass_fds: Sequence[int] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.dir = directory
        argv = [
            *wrap,
            sys.executable,
            "-m",
            "rescue",
            "listen",
            "--bind",
            bind,
            "--port",
            "0",
            "--dir",
            str(directory),
            "--json",
            *extra,
        ]
        # The human side (stderr with --json) goes to a file: a pipe nobody reads could fill up and stall it.
        directory.parent.mkdir(parents=True, exist_ok=True)
        self.stderr_path = directory.parent / f"listener-{id(self)}.stderr"
        self._stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self._stderr, text=True, pass_fds=pass_fds, env=env
        )
        self.events: list[dict[str, Any]] = []  # every event seen so far, in order
        # A thread reads the events: select() on a buffered pipe misses lines that arrived in one read.
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self.port = int(self.wait_for("listening", 20)["port"])
        except RescueError:
            self.stop()
            raise

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            event["received_at"] = time.monotonic()  # for the benchmarks: when the host knew it
            self._queue.put(event)
        self._queue.put(None)

    def next_event(self, timeout: float = 30) -> dict[str, Any]:
        try:
            event = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise RescueError(f"no event from the listener in {timeout:.0f}s; {self.stderr_now()}") from None
        if event is None:
            self._queue.put(None)
            raise RescueError(f"the listener exited ({self.proc.poll()}): {self.stderr_now()}")
        self.events.append(event)
        return event

    def wait_for(self, kind: str, timeout: float = 30) -> dict[str, Any]:
        """The next event of this kind (the others are kept in self.events)."""
        deadline = Deadline(timeout)
        while True:
            event = self.next_event(max(0.01, deadline.remaining))
            if event.get("event") == kind:
                return event

    def captures(self, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        return [self.wait_for("capture", timeout) for _ in range(count)]

    def stderr_now(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self._stderr.close()

    def __enter__(self) -> ListenerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Shared fixtures: real components only (busybox-static, real sockets, a real `rescue listen` process)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

REPO = Path(__file__).resolve().parent.parent
BUSYBOX = shutil.which("busybox", path="/bin:/usr/bin") or "/bin/busybox"


def require(condition: bool, reason: str) -> None:
    """Skip when a real component is missing; in CI (RESCUE_REQUIRE_ALL_TIERS=1) fail instead."""
    if condition:
        return
    if os.environ.get("RESCUE_REQUIRE_ALL_TIERS"):
        pytest.fail(f"required tier cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def busybox() -> str:
    require(Path(BUSYBOX).exists(), "busybox-static is not installed")
    out = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    require("nc" in out and "ash" in out, "this busybox has no nc/ash applet (install busybox-static)")
    return BUSYBOX


class Listener:
    """A real `rescue listen` process on 127.0.0.1 with an OS-chosen port, read through its --json events."""

    live: ClassVar[list[Listener]] = []  # every one started in the current test, stopped when it ends

    def __init__(
        self, directory: Path, *extra: str, bind: str = "127.0.0.1", wrap: list[str] | None = None
    ) -> None:
        self.dir = directory
        argv = [
            *(wrap or []),
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
        # The human-readable side (stderr with --json) goes to a file: a pipe nobody reads could fill up.
        self.stderr_path = directory.parent / f"listener-{id(self)}.stderr"
        self._stderr = self.stderr_path.open("w")
        Listener.live.append(self)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        self.events: list[dict[str, Any]] = []
        # A thread turns stdout lines into events: select() on a buffered pipe would miss buffered lines.
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read_events, daemon=True).start()
        self.port: int = self.wait_for("listening", timeout=20)["port"]

    def _read_events(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(json.loads(line))
        self._queue.put(None)  # the listener exited

    def next_event(self, timeout: float = 30) -> dict[str, Any]:
        try:
            event = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(
                f"no event from the listener in {timeout:.0f}s; stderr: {self.stderr_now()}"
            ) from None
        if event is None:
            self._queue.put(None)
            raise EOFError(f"listener exited ({self.proc.poll()}); stderr: {self.stderr_now()}")
        self.events.append(event)
        return event

    def wait_for(self, kind: str, timeout: float = 30) -> dict[str, Any]:
        """The next event of this kind (events of other kinds are kept in self.events)."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_event(timeout=max(0.01, deadline - time.monotonic()))
            if event["event"] == kind:
                return event

    def captures(self, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        return [self.wait_for("capture", timeout) for _ in range(count)]

    def stderr_now(self) -> str:
        return self.stderr_path.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._stderr.close()


@pytest.fixture(autouse=True)
def _no_listener_outlives_its_test() -> Iterator[None]:
    yield
    while Listener.live:
        Listener.live.pop().stop()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    lst = Listener(tmp_path / "captures")
    try:
        yield lst
    finally:
        lst.stop()


def nc_send(
    busybox: str,
    port: int,
    data: bytes,
    host: str = "127.0.0.1",
    timeout: float = 30,
    wrap: list[str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Send data the way a rescue shell does: busybox nc reading stdin, exiting when the peer closes."""
    return subprocess.run(
        [*(wrap or []), busybox, "nc", host, str(port)], input=data, capture_output=True, timeout=timeout
    )

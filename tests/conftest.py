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
from typing import Any

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

    def __init__(self, directory: Path, *extra: str) -> None:
        self.dir = directory
        argv = [sys.executable, "-m", "rescue", "listen", "--bind", "127.0.0.1", "--port", "0",
                "--dir", str(directory), "--json", *extra]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events: list[dict[str, Any]] = []
        # A thread reads the events: select() on the buffered pipe would miss a line that arrived in the same
        # read as the one before it (a connection event and its capture event often do).
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        first = self.next_event(timeout=20)
        assert first["event"] == "listening", first
        self.port: int = first["port"]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put("")

    def next_event(self, timeout: float = 30) -> dict[str, Any]:
        try:
            line = self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            msg = f"no event from the listener in {timeout}s; stderr: {self.stderr_now()}"
            raise TimeoutError(msg) from None
        if not line:
            self._queue.put("")
            raise EOFError(f"listener exited ({self.proc.poll()}); stderr: {self.stderr_now()}")
        event: dict[str, Any] = json.loads(line)
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
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stderr.read() if self.proc.stderr else ""

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    lst = Listener(tmp_path / "captures")
    try:
        yield lst
    finally:
        lst.stop()

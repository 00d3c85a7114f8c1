"""Shared fixtures: real components only (busybox-static, real sockets, a real `rescue listen` process)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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
        # Read the pipe's fd directly: a buffered readline() can swallow several events at once, and
        # select() would then wait for bytes that already arrived.
        self._pending = b""
        first = self.next_event(timeout=20)
        assert first["event"] == "listening", first
        self.port: int = first["port"]

    def next_event(self, timeout: float = 30) -> dict[str, Any]:
        import selectors

        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise TimeoutError(f"no event from the listener in {timeout}s; stderr: {self.stderr_now()}")
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise EOFError(f"listener exited ({self.proc.poll()}); stderr: {self.stderr_now()}")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
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

"""Shared fixtures: real components only (busybox-static, real sockets, a real `rescue listen` process)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from rescue.deadline import Deadline
from rescue.harness.listener_process import ListenerProcess

REPO = Path(__file__).resolve().parent.parent
BUSYBOX = shutil.which("busybox", path="/bin:/usr/bin") or "/bin/busybox"


def require(condition: bool, reason: str) -> None:
    """Skip when a real component is missing; in CI (RESCUE_REQUIRE_ALL_TIERS=1) fail instead."""
    if condition:
        return
    if os.environ.get("RESCUE_REQUIRE_ALL_TIERS"):
        pytest.fail(f"required tier cannot run: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    """A 127.0.0.1 port nobody listens on (bound, then closed): for a listener to come, or a refusal."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def manifest(event: dict[str, Any]) -> dict[str, Any]:
    """The manifest.json of the capture a `capture` event names."""
    data: dict[str, Any] = json.loads((Path(event["path"]) / "manifest.json").read_text())
    return data


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition under one deadline (for what has no event to wait on)."""
    deadline = Deadline(timeout)
    while not condition():
        if deadline.expired:
            raise TimeoutError(f"{what}: not within {timeout}s")
        time.sleep(0.02)


@pytest.fixture(scope="session")
def busybox() -> str:
    require(Path(BUSYBOX).exists(), "busybox-static is not installed")
    out = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    require("nc" in out and "ash" in out, "this busybox has no nc/ash applet (install busybox-static)")
    return BUSYBOX


class Listener(ListenerProcess):
    """A real `rescue listen` process on 127.0.0.1 with an OS-chosen port, read through its --json events."""

    live: ClassVar[list[Listener]] = []  # every one started in the current test, stopped when it ends

    def __init__(
        self,
        directory: Path,
        *extra: str,
        bind: str = "127.0.0.1",
        wrap: list[str] | None = None,
        pass_fds: tuple[int, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        # stops itself if it fails to start
        super().__init__(directory, *extra, bind=bind, wrap=wrap or (), pass_fds=pass_fds, env=env)
        Listener.live.append(self)


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

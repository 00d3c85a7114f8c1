"""Checks shared by the qemu scenarios: what the listener stored, read back from disk."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from typing import Any

from tests.conftest import Listener, manifest


def assert_stored_intact(event: dict[str, Any]) -> dict[str, Any]:
    """The capture is complete and every file on disk has the sha256 its manifest says."""
    man = manifest(event)
    assert man["status"] == "complete", man
    for f in man["files"]:
        data = (Path(event["path"]) / f["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"], f["name"]
    return man


def text(event: dict[str, Any], name: str) -> str:
    return (Path(event["path"]) / name).read_text(errors="replace")


def assert_nothing_else_arrived(listener: Listener, events_before: int) -> None:
    """Nothing reached the listener since events_before, proven without waiting on a clock.

    Called after qemu has exited, so the guest can no longer connect. A sentinel sent from here must be
    the next connection the listener reports: a guest connection would have been accepted (and reported)
    before it.
    """
    sentinel = b"sentinel: nothing before me\n"
    with socket.create_connection(("127.0.0.1", listener.port), timeout=10) as s:
        s.sendall(sentinel)
        s.shutdown(socket.SHUT_WR)
        while s.recv(4096):
            pass
    event = listener.wait_for("capture")
    others = [e for e in listener.events[events_before:] if e["event"] == "capture" and e is not event]
    assert others == [], others
    assert (Path(event["path"]) / "stream.bin").read_bytes() == sentinel

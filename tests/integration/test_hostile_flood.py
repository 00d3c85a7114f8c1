"""Floods: slowloris and idle connections go first when the listener is full, a real busybox sender
arriving during the flood is stored, and one address cannot take the whole table."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import Listener, nc_send, wait_until
from tests.integration.hostile import DMESG, connect_from, manifest_of, read_all

REFUSED = b"rescue: refused: "


@contextmanager
def silent(lst: Listener, count: int) -> Iterator[list[socket.socket]]:
    """count connections that send nothing, each admitted (its `connection` event seen); closed after."""
    socks = [socket.create_connection(("127.0.0.1", lst.port)) for _ in range(count)]
    try:
        for _ in range(count):
            lst.wait_for("connection")
        yield socks
    finally:
        for s in socks:
            s.close()


@contextmanager
def slowloris(port: int, count: int, every: float = 0.5, rounds: int = 60) -> Iterator[list[socket.socket]]:
    """count connections, each sending one byte of a header line every `every` s (at most `rounds`)."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    stop = threading.Event()

    def trickle() -> None:
        for n in range(rounds):
            for s in socks:
                with contextlib.suppress(OSError):  # evicted: the listener closed it
                    s.send(b"RESCUE/1 name=x"[n % 15 : n % 15 + 1])
            if stop.wait(every):
                return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        yield socks
    finally:
        stop.set()
        thread.join(timeout=10)
        for s in socks:
            s.close()


def past(seconds: float) -> None:
    t0 = time.monotonic()
    wait_until(lambda: time.monotonic() - t0 >= seconds, seconds + 5, f"{seconds}s to pass")


def test_a_real_sender_is_stored_during_a_slowloris(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "c", "--max-connections", "12", "--first-block-timeout", "1")
    with slowloris(lst.port, 12) as socks:
        for _ in range(12):
            lst.wait_for("connection")
        past(1.2)
        sent = nc_send(busybox, lst.port, DMESG)
        assert sent.returncode == 0 and sent.stdout == b""
        # Two captures: the real one, and what the evicted loiterer had sent (kept, incomplete).
        (ev,) = [e for e in lst.captures(2) if e["status"] == "complete"]
        assert (Path(ev["path"]) / "dmesg.txt").read_bytes() == DMESG
        evicted = next(e for e in lst.events if e["event"] == "evicted")
        assert "no header or first block" in evicted["reason"]
        # The loiterer that went was told, and what it had sent is kept.
        told = [s for s in socks if read_all(s, 0.5).startswith(REFUSED + b"evicted")]
        assert len(told) == 1
    kept = [
        manifest_of(p.parent)
        for p in lst.dir.glob("*/*/manifest.json")
        if manifest_of(p.parent)["status"] == "incomplete"
    ]
    assert kept and all(m["reason"].startswith("evicted") for m in kept)


def test_an_idle_flood_makes_room_for_real_senders(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "c", "--max-connections", "50", "--first-block-timeout", "0.5")
    flood = [socket.create_connection(("127.0.0.1", lst.port)) for _ in range(150)]
    try:
        assert lst.wait_for("refused")["count"] == 1  # the table holds 50; the next 99 are counted
        past(0.6)
        for n in range(5):
            sent = nc_send(busybox, lst.port, DMESG + str(n).encode())
            assert sent.returncode == 0 and sent.stdout == b""
        stored = [lst.wait_for("capture") for _ in range(5)]
        assert all(e["status"] == "complete" for e in stored)
        # The evicted idle ones had sent nothing: nothing of them is stored.
        assert len(list(lst.dir.glob("*/*/manifest.json"))) == 5
        lst.proc.terminate()
        lst.wait_for("stopped")
        refused = [e for e in lst.events if e["event"] == "refused"]
        assert sum(e["count"] for e in refused) == 100 and len(refused) == 2  # the flood in two lines
    finally:
        for s in flood:
            s.close()


def test_silent_connections_within_their_budget_are_not_evicted(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "c", "--max-connections", "5", "--first-block-timeout", "60")
    with silent(lst, 5):
        sent = nc_send(busybox, lst.port, DMESG)
        assert sent.stdout == REFUSED + b"too many connections (--max-connections 5)\n"
        assert not any(e["event"] == "evicted" for e in lst.events)


def test_one_address_cannot_take_the_table(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "c", "--max-per-peer", "3", "--first-block-timeout", "60")
    with silent(lst, 3):
        sent = nc_send(busybox, lst.port, DMESG)
        assert sent.stdout == REFUSED + b"too many connections from this address (--max-per-peer 3)\n"
        with connect_from("127.0.0.2", lst.port) as other:  # another peer still gets in
            other.sendall(DMESG)
            other.shutdown(socket.SHUT_WR)
            assert read_all(other) == b""
        ev = lst.wait_for("capture")
        assert ev["peer"] == "127.0.0.2" and ev["status"] == "complete"


def test_a_trickling_sender_goes_when_the_table_is_full(tmp_path: Path, busybox: str) -> None:
    args = ("--max-connections", "2", "--first-block-timeout", "0.5", "--min-rate", "64K")
    lst = Listener(tmp_path / "c", *args)
    slow = [socket.create_connection(("127.0.0.1", lst.port)) for _ in range(2)]
    try:
        for s in slow:
            s.sendall(b"x" * 300)  # a first block: a sender, but a slow one from now on
        wait_until(lambda: len(list(lst.dir.glob("*/*/stream.bin.partial"))) == 2, 10, "two streams")
        past(0.6)
        sent = nc_send(busybox, lst.port, DMESG)
        assert sent.returncode == 0 and sent.stdout == b""
        statuses = sorted(e["status"] for e in lst.captures(2))
        assert statuses == ["complete", "incomplete"]
        evicted = next(e for e in lst.events if e["event"] == "evicted")
        assert "slower than --min-rate" in evicted["reason"]
        told = [s for s in slow if read_all(s, 0.5).startswith(REFUSED + b"evicted: slower")]
        assert len(told) == 1
    finally:
        for s in slow:
            s.close()


def test_refused_senders_are_not_held_without_bound(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "c", "--allow", "10.0.0.0/8")
    socks = [socket.create_connection(("127.0.0.1", lst.port)) for _ in range(400)]
    try:
        # Each is told; the ones past the first 256 are reset at once instead of being read a moment.
        answers = [read_all(s, 5) for s in socks]
        assert all(a == REFUSED + b"address not in --allow\n" for a in answers)
        # Past 256 refusals being read at once, a sender may get the reset before it reads the line:
        # busybox nc then fails (exit 1). Either way it learns it was refused.
        sent = nc_send(busybox, lst.port, DMESG)
        assert sent.stdout.startswith(REFUSED) or (sent.returncode == 1 and b"reset" in sent.stderr)
        assert lst.proc.poll() is None
    finally:
        for s in socks:
            s.close()

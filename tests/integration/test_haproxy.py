"""Several listeners behind HAProxy (TCP mode, PROXY protocol v1 and v2) writing one capture directory."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from rescue.deadline import Deadline
from rescue.errors import RescueError
from rescue.listen.proxy import v1_header
from tests.conftest import Listener, free_port, nc_send, require, wait_until
from tests.loadgen import load_bundles, run_fleet, stream_for

PROXY_SOURCE = "127.0.0.200"  # HAProxy connects to the listeners from here: the one trusted address
DMESG = b"[    0.000000] Linux version 6.1.0 (test)\n[    1.000000] btrfs: Unknown symbol crc32c (err -2)\n"


def listening(port: int) -> bool:
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
            return True
    return False


def haproxy_config(front_v1: int, front_v2: int, backends: list[int]) -> str:
    def servers(option: str) -> str:
        return "".join(
            f"    server l{i} 127.0.0.1:{port} {option} source {PROXY_SOURCE}\n"
            for i, port in enumerate(backends)
        )

    return (
        "global\n    maxconn 4096\n"
        "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 120s\n    timeout server 120s\n"
        f"frontend v1\n    bind 127.0.0.1:{front_v1}\n    default_backend v1\n"
        f"backend v1\n    balance roundrobin\n{servers('send-proxy')}"
        f"frontend v2\n    bind 127.0.0.1:{front_v2}\n    default_backend v2\n"
        f"backend v2\n    balance roundrobin\n{servers('send-proxy-v2')}"
    )


@pytest.fixture
def haproxy_bin() -> str:
    found = shutil.which("haproxy", path="/usr/sbin:/usr/bin:/sbin:/bin")
    require(found is not None, "haproxy is not installed (make deps)")
    assert found is not None
    return found


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[list[Listener]]:
    """Two listeners, one capture directory, PROXY headers believed from PROXY_SOURCE only."""
    extra = ("--proxy-protocol", "--trusted-proxy", f"{PROXY_SOURCE}/32")
    listeners = [Listener(tmp_path / "captures", *extra) for _ in range(2)]
    yield listeners
    for lst in listeners:
        lst.stop()


def wait_captures(listeners: list[Listener], count: int, timeout: float) -> Counter[int]:
    """Read both listeners' events until `count` captures were reported; how many each one stored."""
    deadline, per = Deadline(timeout), Counter[int]()
    while sum(per.values()) < count:
        if deadline.expired:
            raise TimeoutError(f"{sum(per.values())} of {count} captures within {timeout}s")
        for i, lst in enumerate(listeners):
            try:
                if lst.next_event(timeout=0.05).get("event") == "capture":
                    per[i] += 1
            except RescueError:
                continue
    return per


def test_a_thousand_bundles_through_haproxy_v1_and_v2(
    tmp_path: Path, shared: list[Listener], haproxy_bin: str, busybox: str
) -> None:
    front_v1, front_v2 = free_port(), free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(front_v1, front_v2, [lst.port for lst in shared]))
    proxy = subprocess.Popen([haproxy_bin, "-f", str(config), "-db"], stderr=subprocess.PIPE)
    try:
        wait_until(lambda: listening(front_v1) and listening(front_v2), 20, "haproxy listening")
        bundles = load_bundles()
        by_nc = {f"nc-{n:02d}": (front_v1 if n % 2 else front_v2) for n in range(20)}
        for n, (machine, port) in enumerate(by_nc.items()):
            done = nc_send(busybox, port, stream_for(bundles[n % len(bundles)], machine))
            assert done.returncode == 0, done.stderr
        fleet = [
            asyncio.run(
                run_fleet("127.0.0.1", port, 490, concurrency=100, ramp=0.5, link_rate=0, first=first)
            )
            for port, first in ((front_v1, 0), (front_v2, 490))
        ]
        per_listener = wait_captures(shared, 1000, timeout=300)
    finally:
        proxy.terminate()
        proxy.wait(timeout=20)
    for lst in shared:
        lst.stop()  # the index rows are written once the listener has finished its queue
    assert all(n > 100 for n in per_listener.values()) and len(per_listener) == 2  # both took a share

    outcomes = [o for run in fleet for o in run.outcomes]
    assert Counter(o.result for o in outcomes) == {"sent": 980}
    want_peer = {o.machine: o.source for o in outcomes} | dict.fromkeys(by_nc, "127.0.0.1")
    stored: dict[str, list[dict[str, object]]] = {}
    for path in shared[0].dir.glob("*/*/manifest.json"):
        m = json.loads(path.read_text())
        stored.setdefault(m["header"]["machine"], []).append(m)
    assert sorted(stored) == sorted(want_peer)
    assert all(len(ms) == 1 for ms in stored.values())  # each exactly once: no name clashed
    assert {machine: ms[0]["peer"] for machine, ms in stored.items()} == want_peer  # the real sender
    assert all(ms[0]["status"] == "complete" for ms in stored.values())
    assert len(set(want_peer.values())) == 16

    summary = subprocess.run(
        [sys.executable, "-m", "rescue", "summary", str(shared[0].dir), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    doc = json.loads(summary.stdout)
    assert (doc["machines"], doc["captures"], doc["status"]) == (1000, 1000, {"complete": 1000})
    assert sum(g["machines"] for g in doc["groups"]) == 1000


def test_a_proxy_header_from_anyone_else_is_data(shared: list[Listener]) -> None:
    lst = shared[0]
    forged = v1_header("203.0.113.66", "127.0.0.1", 1234, lst.port) + DMESG
    with socket.create_connection(("127.0.0.1", lst.port)) as s:
        s.sendall(forged)
        s.shutdown(socket.SHUT_WR)
        s.recv(1)
    ev = lst.wait_for("capture")
    assert (ev["status"], ev["peer"], ev["files"]) == ("complete", "127.0.0.1", ["stream.bin"])
    assert (Path(ev["path"]) / "stream.bin").read_bytes() == forged


def test_a_trusted_proxy_without_a_header_is_rejected(shared: list[Listener]) -> None:
    lst = shared[0]
    with socket.create_connection(("127.0.0.1", lst.port), source_address=(PROXY_SOURCE, 0)) as s:
        s.sendall(DMESG)
        s.shutdown(socket.SHUT_WR)
        # A rejected stream: the proxy (and its sender) read why, then see the reset.
        assert s.recv(100).startswith(b"rescue: refused: no PROXY protocol header")
        with pytest.raises(ConnectionResetError):
            while s.recv(100):
                pass
    ev = lst.wait_for("capture")
    assert (ev["status"], ev["peer"]) == ("rejected", PROXY_SOURCE)
    assert "PROXY" in ev["reason"]


def test_proxy_protocol_needs_trusted_proxies(tmp_path: Path) -> None:
    with pytest.raises(RescueError, match="--trusted-proxy"):
        Listener(tmp_path / "captures", "--proxy-protocol")

"""Listener throughput and footprint against socat, with busybox nc and socat as senders; and under attack.

Goals (DESIGN/issue 2): busybox nc -> rescue listen >= 95% of busybox nc -> socat-to-file, sha256 included;
socat -> rescue listen >= 75% of socat -> socat-to-file; 200 concurrent busybox nc x 64 KiB all complete
with the listener's peak RSS <= 64 MiB. Under attack : peak RSS under the
worst single sender < 256 MiB, captures/s under a 1,000-connection idle flood with real senders mixed in,
the time a real sender waits during a slowloris.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import select
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rescue.deadline import Deadline
from tests.conftest import BUSYBOX, Listener, free_port, nc_send
from tests.integration.hostile import DMESG, tar_of

SIZE = 512 << 20


def _wait_listening(port: int, deadline: Deadline) -> None:
    """Wait for a LISTEN socket on port without connecting to it (socat -u serves one connection only)."""
    while not deadline.expired:
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.split(":")[1], 16) == port:
                return
        time.sleep(0.01)
    raise TimeoutError(f"nothing listens on port {port}")


def _sender(kind: str, port: int, src: Path) -> list[str]:
    if kind == "busybox":
        return ["sh", "-c", f"{BUSYBOX} nc 127.0.0.1 {port} < {src}"]
    return ["socat", "-u", f"OPEN:{src}", f"TCP:127.0.0.1:{port}"]


def via_socat(kind: str, src: Path, work: Path) -> float:
    """Seconds for SIZE bytes into socat TCP-LISTEN -> file (the reference receiver)."""
    port = free_port()
    out = work / "socat.out"
    recv = subprocess.Popen(["socat", "-u", f"TCP-LISTEN:{port},reuseaddr", f"OPEN:{out},creat,trunc"])
    _wait_listening(port, Deadline(10))
    t0 = time.perf_counter()
    subprocess.run(_sender(kind, port, src), check=True, timeout=300)
    recv.wait(timeout=300)
    elapsed = time.perf_counter() - t0
    assert out.stat().st_size == SIZE, out.stat().st_size
    out.unlink()
    return elapsed


def via_rescue(kind: str, src: Path, work: Path) -> tuple[float, float]:
    """(seconds until the sender exits, seconds until the capture is final).

    The sender exits when the listener closes, which it does once every byte is written and hashed:
    the same point socat reaches when it exits. Then come fsync, rename, the manifest and the analysis.
    """
    lst = Listener(work / "captures")
    try:
        t0 = time.perf_counter()
        subprocess.run(_sender(kind, lst.port, src), check=True, timeout=300)
        received = time.perf_counter() - t0
        ev = lst.wait_for("capture", timeout=300)
        stored = time.perf_counter() - t0
        assert ev["status"] == "complete" and ev["bytes"] == SIZE, ev
    finally:
        lst.stop()
    shutil.rmtree(work / "captures")
    return received, stored


def concurrent_rss(work: Path) -> tuple[int, int]:
    lst = Listener(work / "captures-many", "--max-per-peer", "256")  # all 200 come from 127.0.0.1
    try:
        payloads = [os.urandom(64 * 1024) for _ in range(200)]
        with ThreadPoolExecutor(max_workers=200) as pool:
            list(pool.map(lambda d: nc_send(BUSYBOX, lst.port, d, timeout=120), payloads))
        events = lst.captures(200, timeout=120)
        complete = sum(e["status"] == "complete" for e in events)
        status = Path(f"/proc/{lst.proc.pid}/status").read_text()
        hwm_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    finally:
        lst.stop()
    return complete, hwm_kib


# Under attack ------------------------------------------------------------------------------------------


def worst_single_sender_rss(work: Path) -> tuple[str, float]:
    """(the sender, peak RSS MiB) of the hungriest of the hostile single senders, each on a fresh listener."""
    line = f"{'0' * 64}  {'n' * 60}\n".encode()
    sparse = work / "sparse.img"
    with sparse.open("wb") as f:
        f.truncate(1 << 30)
    senders = {
        "24 MiB SHA256SUMS": tar_of([("SHA256SUMS", line * ((24 << 20) // len(line)))]),
        "3 MiB pax header": _pax_bomb(3 << 20),
        "gzip bomb (64 MiB of zeros)": gzip.compress(tar_of([("z", bytes(64 << 20))]), compresslevel=9),
        "GNU sparse 1 GiB": subprocess.run(
            ["tar", "--sparse", "--format=gnu", "-cf", "-", "-C", str(work), "sparse.img"],
            capture_output=True,
            check=True,
        ).stdout,
        "256 MiB kernel log (analysed)": b"[    1.000000] a kernel line that repeats\n" * ((256 << 20) // 42),
        "10,000 empty members": tar_of([(f"f{n}", b"") for n in range(10_000)]),
    }
    worst = ("", 0.0)
    for name, data in senders.items():
        lst = Listener(work / "captures-rss", "--max-bytes", "256M")
        try:
            nc_send(BUSYBOX, lst.port, data, timeout=300)
            lst.wait_for("capture", timeout=300)
            mib = _hwm_kib(lst.proc.pid) / 1024
        finally:
            lst.stop()
        shutil.rmtree(work / "captures-rss")
        print(f"     {name:30} peak RSS {mib:6.1f} MiB", flush=True)
        worst = max(worst, (name, mib), key=lambda w: w[1])
    sparse.unlink()
    return worst


def flood_captures_per_second(
    work: Path, flood: int, senders: int = 100, reconnect: bool = False
) -> tuple[float, int]:
    """(captures/s, refusals the real senders met and retried) for busybox nc senders from 127.0.0.1
    while `flood` idle connections from 127.0.0.2-9 are held open (and reopened when closed)."""
    lst = Listener(work / "captures-flood")
    socks: list[socket.socket] = []
    stop = threading.Event()

    reconnects = [0]

    def connect() -> socket.socket:
        s = socket.socket()
        s.bind((f"127.0.0.{2 + len(socks) % 8}", 0))
        with contextlib.suppress(OSError):  # refused (reset) at once: reconnected below
            s.connect(("127.0.0.1", lst.port))
        return s

    def hold() -> None:
        while not stop.is_set() and len(socks) < flood:
            socks.append(connect())
        while reconnect and not stop.wait(0.2):  # an attacker reconnects what the listener closed
            readable, _, _ = select.select(socks, [], [], 0)
            for s in readable:
                socks.remove(s)
                s.close()
                socks.append(connect())
                reconnects[0] += 1

    holder = threading.Thread(target=hold, daemon=True)
    refusals = 0
    try:
        if flood:
            holder.start()
            deadline = Deadline(60)
            while len(socks) < flood and not deadline.expired:
                time.sleep(0.05)
        payloads = [os.urandom(64 << 10) for _ in range(senders)]

        def send(data: bytes) -> int:
            for attempt in range(20):  # a refused sender tries again, as the hooks do
                sent = nc_send(BUSYBOX, lst.port, data, timeout=60)
                if sent.returncode == 0 and not sent.stdout:  # else a line said why, or a reset did
                    return attempt
                time.sleep(0.25)
            return 20

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=8) as pool:
            refusals = sum(pool.map(send, payloads))
        lst.captures(senders, timeout=120)
        elapsed = time.perf_counter() - t0
        if flood:
            print(f"     ({len(socks)} flood connections held, {reconnects[0]} reopened after a refusal)")
    finally:
        stop.set()
        if flood:
            holder.join(timeout=10)
        for s in socks:
            s.close()
        lst.stop()
    shutil.rmtree(work / "captures-flood")
    return senders / elapsed, refusals


def slowloris_wait(work: Path, rounds: int = 10) -> list[float]:
    """Seconds a real busybox nc sender waits (retries included) while 256 slowloris connections, one
    byte every 1.5 s each, hold every slot of a default listener."""
    lst = Listener(work / "captures-slow")
    socks = [socket.socket() for _ in range(256)]
    for n, s in enumerate(socks):
        s.bind((f"127.0.0.{2 + n % 2}", 0))
        s.connect(("127.0.0.1", lst.port))
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(1.5):
            for s in socks:
                with contextlib.suppress(OSError):
                    s.send(b"R")

    threading.Thread(target=trickle, daemon=True).start()
    waits = []
    try:
        for n in range(rounds):
            t0 = time.perf_counter()
            for _ in range(60):
                sent = nc_send(BUSYBOX, lst.port, DMESG + str(n).encode(), timeout=60)
                if sent.returncode == 0 and not sent.stdout:
                    break
                time.sleep(0.25)
            waits.append(time.perf_counter() - t0)
            while lst.wait_for("capture", timeout=60)["status"] != "complete":
                pass  # an evicted loiterer's bytes, kept as incomplete
    finally:
        stop.set()
        for s in socks:
            s.close()
        lst.stop()
    shutil.rmtree(work / "captures-slow")
    return waits


def hostile(work: Path) -> None:
    name, mib = worst_single_sender_rss(work)
    print(
        f"   worst single sender: {name}, listener peak RSS {mib:.1f} MiB (goal < 256 MiB) "
        f"{'ok' if mib < 256 else 'MISSED'}",
        flush=True,
    )
    quiet, _ = flood_captures_per_second(work, 0)
    busy, retried = flood_captures_per_second(work, 1000)
    hammer, hammered = flood_captures_per_second(work, 1000, reconnect=True)
    print(
        f"   1,000-connection idle flood: {busy:.1f} captures/s of 64 KiB from 8 busybox senders "
        f"({quiet:.1f}/s without the flood; {retried} refusals retried); with the flood reconnecting "
        f"every connection the listener closes: {hammer:.1f}/s ({hammered} refusals retried)",
        flush=True,
    )
    waits = sorted(slowloris_wait(work))
    print(
        f"   slowloris (256 connections, 1 byte / 1.5 s each): a real sender waits "
        f"median {waits[len(waits) // 2]:.2f} s, worst {waits[-1]:.2f} s (retries included)",
        flush=True,
    )


def _pax_bomb(size: int) -> bytes:
    info = tarfile.TarInfo("x.txt")
    info.pax_headers = {"comment": "c" * size}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b""))
    return buf.getvalue()


def _hwm_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="rescue-bench-", dir=os.environ.get("RESCUE_BENCH_DIR")) as d:
        work = Path(d)
        src = work / "random.bin"
        with src.open("wb") as f:
            for _ in range(SIZE >> 20):
                f.write(os.urandom(1 << 20))
        for kind, goal in (("busybox", 0.95), ("socat", 0.75)):
            ref = min(via_socat(kind, src, work) for _ in range(2))
            ours, stored = min(via_rescue(kind, src, work) for _ in range(2))
            ratio = ref / ours
            print(
                f"   {kind:7} sender, 512 MiB: socat->file {SIZE / ref / 2**20:6.0f} MiB/s, rescue listen "
                f"{SIZE / ours / 2**20:6.0f} MiB/s = {ratio:.0%} of socat (goal >= {goal:.0%}) "
                f"{'ok' if ratio >= goal else 'MISSED'}; "
                f"final on disk (fsync, manifest, analysis) after {stored:.2f} s",
                flush=True,
            )
        complete, hwm = concurrent_rss(work)
        print(
            f"   200 concurrent busybox nc x 64 KiB: {complete}/200 complete, "
            f"listener peak RSS {hwm / 1024:.1f} MiB "
            f"(goal <= 64 MiB) {'ok' if complete == 200 and hwm <= 64 * 1024 else 'MISSED'}",
            flush=True,
        )
        hostile(work)


if __name__ == "__main__":
    main()

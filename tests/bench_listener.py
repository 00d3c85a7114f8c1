"""Listener throughput and footprint against socat, with busybox nc and socat as senders.

Goals (DESIGN/issue 2): busybox nc -> rescue listen >= 95% of busybox nc -> socat-to-file, sha256 included;
socat -> rescue listen >= 75% of socat -> socat-to-file; 200 concurrent busybox nc x 64 KiB all complete
with the listener's peak RSS <= 64 MiB.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rescue.deadline import Deadline
from tests.conftest import BUSYBOX, Listener, free_port, nc_send

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
    lst = Listener(work / "captures-many")
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


if __name__ == "__main__":
    main()

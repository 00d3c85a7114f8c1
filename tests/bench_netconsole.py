"""netconsole: the listener under 100 senders x 100 lines/s, a flood of senders, and the cost to a good boot.

    python -m tests.bench_netconsole [--skip-boot]

- 100 senders (each its own loopback address, its own boot id) send extended netconsole messages at
  100 lines/s each for DURATION seconds to a real `rescue listen`; then a panic line ends each stream.
  Reported: the listener's CPU time per 1,000 lines (utime + stime from /proc), lines lost (0 on loopback).
- 20,000 senders (distinct addresses) each start a 60 KiB fragmented message and never finish it: the
  listener's peak RSS (VmHWM) must stay bounded.
- A good boot under qemu (TCG) of the netconsole test initramfs: the kernel's timestamp of "waiting for root"
  (right after netconsole.sh) with rescue.netconsole=1 and without; and netconsole.sh's early exit on the host
  under busybox when nothing asks for it.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.conftest import BUSYBOX, REPO, Listener

SENDERS = 100
RATE = 100  # lines per second per sender
DURATION = 10.0
FLOOD = 20_000


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def socket_drops(port: int) -> int:
    """Datagrams the kernel dropped for the UDP socket on port (/proc/net/udp's last column)."""
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port:
            return int(fields[-1])
    return -1


def peak_rss_kib(pid: int) -> int:
    m = re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) if m else 0


def sustained(work: Path) -> list[tuple[str, str, str, bool]]:
    lst = Listener(work / "captures", "--netconsole-quiet", "5")
    try:
        socks = []
        for i in range(SENDERS):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((f"127.0.5.{i + 1}", 0))
            socks.append(s)
        dest = ("127.0.0.1", lst.port)
        boots = [f"00000000-0000-4000-8000-{i:012d}" for i in range(SENDERS)]
        for i, s in enumerate(socks):
            s.sendto(f"12,0,1000,-;rescue: boot={boots[i]} machine=bench{i}\n".encode(), dest)
        cpu0 = cpu_seconds(lst.proc.pid)
        rounds = int(DURATION * RATE)
        start = time.perf_counter()
        late = 0.0
        for k in range(1, rounds + 1):
            line = f"6,{k},{1000 + k * 10_000},-;bench line {k}: some driver said something\n".encode()
            for s in socks:
                s.sendto(line, dest)
            wait = start + k / RATE - time.perf_counter()
            if wait > 0:
                time.sleep(wait)  # pacing the senders, not waiting for a result
            else:
                late = max(late, -wait)
        sent_for = time.perf_counter() - start
        cpu_streaming = cpu_seconds(lst.proc.pid) - cpu0
        for s in socks:
            s.sendto(
                f"0,{rounds + 1},{2000 + rounds * 10_000},-;Kernel panic - not syncing: bench\n".encode(),
                dest,
            )
        drops = socket_drops(lst.port)
        events = [lst.wait_for("capture", 60) for _ in range(SENDERS)]
        cpu_end = cpu_seconds(lst.proc.pid) - cpu0 - cpu_streaming
        lines = SENDERS * (rounds + 2)
        lost = sum(e["lost"] for e in events)
        written = sum((Path(e["path"]) / "netconsole.log").read_text().count("\n") for e in events)
        rss = peak_rss_kib(lst.proc.pid)
    finally:
        lst.stop()
    per_k = cpu_streaming / (SENDERS * rounds) * 1000 * 1000
    return [
        (
            f"{SENDERS} senders x {RATE} lines/s for {sent_for:.1f}s",
            f"{lines} lines",
            "sustained",
            late < 0.5,
        ),
        (
            "listener CPU per 1,000 lines while streaming",
            f"{per_k:.1f} ms",
            "< 50 ms (half a core)",
            per_k < 50,
        ),
        (f"then {SENDERS} captures finished and analysed", f"{cpu_end:.1f}s CPU", "measured", True),
        (
            "lines lost on loopback",
            f"{lost} lost, {written} of {lines} written, {drops} dropped by the socket",
            "0",
            lost == 0 and written == lines,
        ),
        ("listener peak RSS", f"{rss / 1024:.0f} MiB", "< 128 MiB", rss < 128 * 1024),
    ]


def flood(work: Path) -> list[tuple[str, str, str, bool]]:
    lst = Listener(work / "flood", "--netconsole-quiet", "5")
    try:
        piece = b"6,7,1000,-,ncfrag=0/61440;" + b"x" * 960
        dest = ("127.0.0.1", lst.port)
        start = time.perf_counter()
        for i in range(FLOOD):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((f"127.{20 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}", 0))
                s.sendto(piece, dest)
        took = time.perf_counter() - start
        rss = peak_rss_kib(lst.proc.pid)
    finally:
        lst.stop()
    name = f"{FLOOD} senders, one unfinished 60 KiB message each ({took:.1f}s)"
    return [(name, f"peak RSS {rss / 1024:.0f} MiB", "< 128 MiB", rss < 128 * 1024)]


def script_exit_cost() -> list[tuple[str, str, str, bool]]:
    """netconsole.sh when nothing asks for it (every boot of an image with the hooks), under busybox."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "proc").mkdir()
        (root / "proc" / "cmdline").write_text("root=/dev/vda ro quiet\n")
        (root / "etc").mkdir()
        (root / "etc" / "rescue.conf").write_text("RESCUE_HOST=192.0.2.1\nRESCUE_PORT=3333\n")
        script = REPO / "hooks" / "collector" / "netconsole.sh"
        env = {"RESCUE_PREFIX": str(root), "PATH": "/usr/bin:/bin"}
        runs = 200
        start = time.perf_counter()
        for _ in range(runs):
            subprocess.run([BUSYBOX, "sh", str(script)], env=env, check=True)
        each = (time.perf_counter() - start) / runs * 1000
    return [("netconsole.sh, not asked for (host, busybox sh)", f"{each:.1f} ms", "< 50 ms", each < 50)]


def boot_cost(work: Path) -> list[tuple[str, str, str, bool]]:
    from rescue.harness.scenarios import Harness
    from rescue.harness.testinitrd import DEFAULT_MODULES, NETCONSOLE_MODULES

    harness = Harness(work / "vm")
    img = harness.initrd("netconsole", modules=(*DEFAULT_MODULES, *NETCONSOLE_MODULES))
    args = ["root=/dev/vda", "rootfstype=btrfs", "rescue.host=10.0.2.2", "rescue.port=9"]
    args.append("rescue.netconsole=1")
    result = harness.boot_to_end(harness.spec(img, *args, disks=[harness.btrfs_root()]), "netconsole-cost")
    log = result.log_path.read_text(errors="replace")
    # netconsole.sh times itself from /proc/uptime: the boot's own noise under TCG stays out of it
    m = re.search(r"rescue: netconsole: armed in (\d+\.\d+)s: .*\(network: (.*)\)", log)
    assert m and result.root_reached, result.log_path
    return [(
        "good boot, qemu TCG: netconsole.sh arming (link up, DHCP, ARP, configfs)",
        f"{m.group(1)}s (network: {m.group(2)})",
        "measured",
        True,
    )]  # fmt: skip


def main() -> list[tuple[str, str, str, bool]]:
    rows: list[tuple[str, str, str, bool]] = []
    with tempfile.TemporaryDirectory(prefix="rescue-bench-nc-") as tmp:
        work = Path(tmp)
        rows += sustained(work)
        rows += flood(work)
        rows += script_exit_cost()
        if "--skip-boot" not in sys.argv:
            rows += boot_cost(work)
    for name, measured, goal, met in rows:
        print(f"   {name}: {measured} (goal {goal}) {'ok' if met else 'MISSED'}", flush=True)
    return rows


if __name__ == "__main__":
    sys.exit(0 if all(met for *_, met in main()) else 1)

"""A burst that runs the listener out of descriptors or disk: loud, and lossless for every sender.

A sender that got a clean close (busybox nc exit 0, the collector says "sent") must find its bundle stored
complete; every other sender must have seen its failure. The senders are the load generator's busybox-nc
behaviour (tests/loadgen.py) replaying the recorded bundles as distinct machines.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from tests.conftest import Listener, require
from tests.loadgen import Run, load_bundles, run_fleet


def stored(root: Path) -> dict[str, tuple[str, Path]]:
    """machine -> (status, directory) of what the listener stored for it."""
    out = {}
    for path in root.glob("*/*/manifest.json"):
        m = json.loads(path.read_text())
        if m.get("header", {}).get("machine"):
            out[m["header"]["machine"]] = (m["status"], path.parent)
    return out


def assert_lossless(run: Run, root: Path) -> dict[str, str]:
    """Every sender that saw a clean close has its bundle kept: a complete capture, or (when the disk
    filled up after its bytes were safe, leaving no room for the final manifest) its whole stream."""
    bodies = {b.name: b.body for b in load_bundles()}
    kept = stored(root)
    for o in run.outcomes:
        if o.result != "sent":
            continue
        status, where = kept.get(o.machine, ("lost", root))
        if status != "complete":
            sizes = [p.stat().st_size for p in where.iterdir() if p.name != "manifest.json"]
            assert status in ("receiving", "incomplete") and len(bodies[o.bundle]) in sizes, (o, sizes)
    return {machine: status for machine, (status, _) in kept.items()}


def fleet(port: int, count: int, concurrency: int) -> Run:
    return asyncio.run(run_fleet("127.0.0.1", port, count, concurrency=concurrency, ramp=0.2, link_rate=0))


def test_the_open_file_limit_is_raised_to_the_hard_limit(tmp_path: Path) -> None:
    lst = Listener(tmp_path / "captures", wrap=["prlimit", "--nofile=256:8192", "--"])
    lst.stop()
    assert "raised the open-file limit from 256 to 8192" in lst.stderr_now()


def test_a_low_hard_limit_admits_fewer_and_says_so(tmp_path: Path) -> None:
    lst = Listener(tmp_path / "captures", wrap=["prlimit", "--nofile=200:200", "--"])
    try:
        limit = next(e for e in lst.events if e["event"] == "error")  # said before "listening"
        # Each connection holds 2 descriptors and half as many refused senders 1 each, beside 64 reserved:
        # the most that fit in 200, exactly.
        most = limit["max_connections"]

        def needs(n: int) -> int:
            return 2 * n + n // 2

        assert limit["open_files"] == 200 and needs(most) <= 200 - 64 < needs(most + 1)
        run = fleet(lst.port, 300, concurrency=300)
        sent = sum(o.result == "sent" for o in run.outcomes)
        lst.captures(sent, timeout=120)
    finally:
        lst.stop()
    kept = assert_lossless(run, lst.dir)
    assert sent >= most and sum(s == "complete" for s in kept.values()) >= sent
    assert "Traceback" not in lst.stderr_now()


def test_a_full_disk_during_a_burst_loses_no_sender_in_silence(tmp_path: Path) -> None:
    # The small disk holds the captures only: the listener's stderr (beside them, in tmp_path) must not
    # fill up with them, or its "disk full" could not be written.
    small = tmp_path / "captures"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(small)], capture_output=True
    )
    require(mounted.returncode == 0, "needs root to mount a small tmpfs")
    try:
        lst = Listener(small, "--min-free", "0")  # the disk is to fill up, not be guarded
        try:
            run = fleet(lst.port, 120, concurrency=60)
            counts = run.counts()
            assert counts["sent"] > 0 and counts["refused"] > 0, counts  # the disk filled up mid-way
        finally:  # a stop finishes every capture already received
            assert lst.stop() == 0, lst.stderr_now()[-3000:]
        assert_lossless(run, lst.dir)
        assert "disk full" in lst.stderr_now() or "No space left on device" in lst.stderr_now()
    finally:
        subprocess.run(["umount", str(small)], check=True)

"""`rescue summary` over what a real `rescue listen` stored from busybox nc senders, recorded bundles each."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

from rescue.summary.index import INDEX
from tests.conftest import Listener, nc_send
from tests.loadgen import load_bundles, stream_for

BUNDLES = {b.name: b for b in load_bundles()}
BTRFS = BUNDLES["mkinitramfs-btrfs-crc32c-missing"]  # initramfs-tools, a real mkinitramfs image
ROOTDEV = BUNDLES["mkinitramfs-root-device-missing"]
BTRFS_DIR = Path(__file__).resolve().parent.parent / "captures" / BTRFS.name


def summary(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rescue", "summary", str(directory), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def summary_json(directory: Path, *args: str) -> dict[str, Any]:
    done = summary(directory, "--json", *args)
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def group(doc: dict[str, Any], finding: str) -> dict[str, Any]:
    found = [g for g in doc["groups"] if g["finding"] == finding]
    assert len(found) == 1, doc["groups"]
    return found[0]


def test_a_fleet_grouped_by_root_cause_with_a_milestone(tmp_path: Path, busybox: str) -> None:
    # 127.0.0.2 counts as a load balancer, so that a stream from it without a PROXY header is a rejected
    # capture (a malformed RESCUE header line is not: only the token decides).
    lst = Listener(tmp_path / "captures", "--proxy-protocol", "--trusted-proxy", "127.0.0.2/32")
    try:
        for n in range(11):
            assert nc_send(busybox, lst.port, stream_for(BTRFS, f"web-{n:02d}")).returncode == 0
        nc_send(busybox, lst.port, stream_for(BTRFS, "web-00"))  # the same machine again: one machine
        for n in range(2):
            nc_send(busybox, lst.port, stream_for(ROOTDEV, f"db-{n}"))
        with socket.create_connection(("127.0.0.1", lst.port), source_address=("127.0.0.2", 0)) as s:
            s.sendall(b"RESCUE/1 machine=bad\n")  # rejected: no PROXY header from a trusted proxy
        with socket.create_connection(("127.0.0.1", lst.port)) as s:  # cut mid-way: incomplete
            s.sendall(stream_for(BTRFS, "cut-1")[:30_000])
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        lst.captures(16, timeout=120)
        seen = [e for e in lst.events if e["event"] == "milestone"]
        milestone = seen[0] if seen else lst.wait_for("milestone", timeout=30)
    finally:
        lst.stop()
    kver = json.loads((BTRFS_DIR / "manifest.json").read_text())["analysis"]["kernel"]
    assert milestone["machines"] == 10
    want = f"10 machines: btrfs-crc32c-missing on {kver} (initramfs-tools); fix: "
    assert milestone["line"].startswith(want)
    assert "libcrc32c" in milestone["line"]
    assert milestone["line"] in lst.stderr_now()

    doc = summary_json(lst.dir)
    assert doc["status"] == {"complete": 14, "incomplete": 1, "rejected": 1}
    btrfs = group(doc, "btrfs-crc32c-missing")
    assert (btrfs["machines"], btrfs["captures"]) == (11, 12)
    assert (btrfs["kernel"], btrfs["generator"]) == (kver, "initramfs-tools")
    assert len(set(btrfs["examples"])) == 3 and all(m.startswith("web-") for m in btrfs["examples"])
    assert "libcrc32c" in btrfs["fix"] and btrfs["first"] <= btrfs["last"]
    assert group(doc, "root-device-missing")["machines"] == 2
    assert doc["groups"][0]["finding"] == "btrfs-crc32c-missing"  # the biggest first

    text = summary(lst.dir).stdout
    assert f"11 machine(s): btrfs-crc32c-missing on {kver} (initramfs-tools)" in text
    assert text.count("fix: echo libcrc32c") == 1  # once per group

    assert summary_json(lst.dir, "--since", "2000-01-01")["captures"] == 16
    assert summary_json(lst.dir, "--since", "2999-01-01T00:00Z")["captures"] == 0


def test_a_damaged_or_missing_index_is_rebuilt_from_the_manifests(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "captures")
    try:
        for n in range(3):
            nc_send(busybox, lst.port, stream_for(ROOTDEV, f"m{n}"))
        lst.captures(3)
    finally:
        lst.stop()
    before = summary_json(lst.dir)
    index = lst.dir / INDEX
    index.write_bytes(b"this is not a database" * 100)
    damaged = summary(lst.dir)
    assert damaged.returncode == 2 and "--rebuild" in damaged.stderr and "Traceback" not in damaged.stderr
    rebuilt = summary(lst.dir, "--rebuild", "--json")
    assert rebuilt.returncode == 0 and "rebuilt" in rebuilt.stderr
    assert json.loads(rebuilt.stdout) == before
    index.unlink()
    assert summary_json(lst.dir) == before  # missing: built on the spot


def test_summary_of_a_directory_that_is_not_there(tmp_path: Path) -> None:
    done = summary(tmp_path / "nope")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "no such capture directory" in done.stderr

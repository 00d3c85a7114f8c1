"""A disk that fills up (real tmpfs mounts): the free-space guard, ENOSPC mid-stream and mid-extraction,
a disk too full for a capture directory, KILL and restart. The manifest on disk never stays `receiving`,
and the bytes reported are the bytes kept."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

from tests.conftest import Listener, nc_send, wait_until
from tests.integration.hostile import DMESG, endless, files_on_disk, fill, manifest_of, tar_of, tmpfs
from tests.integration.test_netconsole import send_udp
from tests.unit.test_netconsole import recorded

REFUSED = b"rescue: refused: "


def no_receiving_manifest(root: Path) -> None:
    for p in root.glob("*/*/manifest.json"):
        assert manifest_of(p.parent)["status"] != "receiving", p
    assert not list(root.glob("*/*/manifest.json.partial"))


def test_min_free_refuses_visibly_and_resumes_by_itself(tmp_path: Path, busybox: str) -> None:
    with tmpfs(tmp_path / "disk", "64m") as disk:
        lst = Listener(disk / "c", "--min-free", "32M")
        hog = fill(disk, leave=16 << 20)
        sent = nc_send(busybox, lst.port, DMESG)
        assert sent.stdout.startswith(REFUSED + b"the listener's disk is nearly full (--min-free 32.0 MiB)")
        assert lst.wait_for("space")["low"] is True
        assert lst.wait_for("refused")["peer"] == "127.0.0.1"
        hog.unlink()
        sent = nc_send(busybox, lst.port, DMESG)
        assert sent.returncode == 0 and sent.stdout == b""
        assert lst.wait_for("space")["low"] is False
        assert lst.wait_for("capture")["status"] == "complete"
        lst.stop()


def test_min_free_keeps_a_capture_in_flight(tmp_path: Path, busybox: str) -> None:
    with tmpfs(tmp_path / "disk", "64m") as disk:
        lst = Listener(disk / "c", "--min-free", "32M", "--max-bytes", "40M")
        sent = endless(lst.port)  # goes under --min-free while it runs, and is kept to --max-bytes
        assert b"max-bytes" in sent.stdout
        ev = lst.wait_for("capture")
        assert ev["status"] == "incomplete" and ev["bytes"] == 40 << 20
        assert nc_send(busybox, lst.port, DMESG).stdout.startswith(REFUSED + b"the listener's disk")
        lst.stop()


def test_disk_full_mid_stream_reports_what_it_kept(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "4m") as disk:
        lst = Listener(disk / "c", "--min-free", "0")
        sent = endless(lst.port)
        assert sent.stdout == REFUSED + b"disk full\n" and sent.returncode == 1
        ev = lst.wait_for("capture")
        assert ev["status"] == "incomplete" and ev["reason"] == "disk full"
        on_disk = files_on_disk(ev["path"])
        m = manifest_of(ev["path"])  # on disk, not only in the event
        assert m["status"] == "incomplete" and m["reason"] == "disk full"
        kept = on_disk["stream.bin.partial"]
        assert ev["bytes"] == kept == m["files"][0]["bytes"] == m["stream"]["bytes"] > 0
        no_receiving_manifest(lst.dir)
        lst.stop()


def test_a_disk_too_full_for_a_capture_is_said_to_the_sender(tmp_path: Path, busybox: str) -> None:
    with tmpfs(tmp_path / "disk", "4m") as disk:
        lst = Listener(disk / "c", "--min-free", "0")
        hog = fill(disk, leave=0)
        sent = nc_send(busybox, lst.port, DMESG)
        assert sent.stdout.startswith(REFUSED + b"cannot store the stream")
        assert "cannot store" in lst.wait_for("error")["error"]
        hog.unlink()
        assert nc_send(busybox, lst.port, DMESG).stdout == b""  # the next one, once there is room
        assert lst.wait_for("capture")["status"] == "complete"
        no_receiving_manifest(lst.dir)
        lst.stop()


def test_disk_full_during_extraction_keeps_the_spool_and_says_so(tmp_path: Path, busybox: str) -> None:
    with tmpfs(tmp_path / "disk", "8m") as disk:
        lst = Listener(disk / "c", "--min-free", "0")
        payload = os.urandom(5 << 20)  # the spool fits, its extraction does not
        data = tar_of([("small.txt", b"small\n"), ("big.bin", payload)])
        assert nc_send(busybox, lst.port, data).returncode == 0
        ev = lst.wait_for("capture")
        assert ev["status"] == "incomplete" and ev["reason"] == "disk full"
        on_disk = files_on_disk(ev["path"])
        assert on_disk["stream.tar.partial"] == len(data)  # every byte that arrived
        m = manifest_of(ev["path"])
        assert m["status"] == "incomplete"
        assert {f["name"]: f["bytes"] for f in m["files"]} == on_disk
        no_receiving_manifest(lst.dir)
        lst.stop()


def test_the_final_manifest_is_written_even_when_the_disk_is_full(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "4m") as disk:
        lst = Listener(disk / "c", "--min-free", "0")
        endless(lst.port)  # fills the disk to the last block
        ev = lst.wait_for("capture")
        # Written over the blocks the `receiving` manifest reserved: its size, compact, padded.
        assert Path(ev["path"], "manifest.json").stat().st_size == 8192
        m = manifest_of(ev["path"])
        assert m["status"] == "incomplete" and m["reason"] == "disk full" and m["files"]
        assert "analysis" not in m
        lst.stop()


def test_kill_after_disk_full_then_restart_leaves_nothing_receiving(tmp_path: Path, busybox: str) -> None:
    with tmpfs(tmp_path / "disk", "4m") as disk:
        lst = Listener(disk / "c", "--min-free", "0")
        endless(lst.port)
        lst.wait_for("capture")
        lst.proc.send_signal(signal.SIGKILL)
        lst.proc.wait(timeout=10)
        for p in disk.glob("c/*/*"):
            for f in p.iterdir():
                if f.suffix == ".partial" and f.name.startswith("stream"):
                    f.unlink()  # room again
        again = Listener(disk / "c", "--min-free", "0")
        assert nc_send(busybox, again.port, DMESG).returncode == 0
        assert again.wait_for("capture")["status"] == "complete"
        no_receiving_manifest(again.dir)
        again.stop()


def test_kill_during_a_transfer_then_restart_marks_it_incomplete(tmp_path: Path) -> None:
    import socket

    lst = Listener(tmp_path / "c")
    with socket.create_connection(("127.0.0.1", lst.port)) as s:
        s.sendall(b"RESCUE/1 machine=web-7 token=none\n" + DMESG * 100)
        wait_until(lambda: any(lst.dir.glob("*/*/dmesg.txt.partial")), 10, "the checkpoint")
        wait_until(lambda: next(lst.dir.glob("*/*/dmesg.txt.partial")).stat().st_size > 0, 10, "bytes")
        lst.proc.send_signal(signal.SIGKILL)
        lst.proc.wait(timeout=10)
    again = Listener(tmp_path / "c")
    (recovered,) = [e for e in again.events if e["event"] == "recovered"]  # said before "listening"
    m = manifest_of(recovered["path"])
    assert m["status"] == "incomplete" and m["files"][0]["bytes"] == len(DMESG * 100)
    # The `receiving` manifest already named the machine (never the token), and so does its directory.
    assert m["header"] == {"machine": "web-7"} and Path(recovered["path"]).parent.name == "web-7"
    again.stop()


def test_netconsole_on_a_full_disk_describes_what_it_kept(tmp_path: Path) -> None:
    datagrams = recorded()
    with tmpfs(tmp_path / "disk", "4m") as disk:
        lst = Listener(disk / "c", "--min-free", "0", "--netconsole-quiet", "2")
        send_udp(lst.port, datagrams[:20])
        path = Path(lst.wait_for("netconsole")["path"])
        log = path / "netconsole.log.partial"
        wait_until(lambda: log.exists() and log.stat().st_size > 0, 10, "the first lines written")
        hog = fill(disk)
        send_udp(lst.port, datagrams[20:])  # the panic among them: it ends the stream
        event = lst.wait_for("capture", 30)
        m = manifest_of(path)  # on disk, not only in the event
        assert m["status"] == event["status"] == "incomplete" and "disk full" in m["reason"], m
        for entry in m["files"]:  # every byte the manifest names is on disk, and only those
            data = (path / entry["name"]).read_bytes()
            assert len(data) == entry["bytes"] and hashlib.sha256(data).hexdigest() == entry["sha256"]
        hog.unlink()
        lst.stop()
        no_receiving_manifest(disk / "c")

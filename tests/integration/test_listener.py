"""`rescue listen` end to end: a real listener process, real sockets, busybox nc and tar as senders."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import signal
import socket
import struct
import subprocess
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Listener, manifest, nc_send, wait_until

DMESG = (
    b"[    0.000000] Linux version 6.1.0-56-cloud-amd64\n"
    b"[    2.345678] btrfs: Unknown symbol crc32c (err -2)\n"
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_of(members: list[tuple[tarfile.TarInfo, bytes]], fmt: int = tarfile.USTAR_FORMAT, **kw: Any) -> bytes:
    """A tar of members of any type (links, devices, hostile names), which replay's tar_bytes never makes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, **kw) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, **attrs: Any) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for k, v in attrs.items():
        setattr(info, k, v)
    return info


def test_raw_dmesg_from_busybox_nc(listener: Listener, busybox: str) -> None:
    sent = nc_send(busybox, listener.port, DMESG)
    assert sent.returncode == 0  # nc exited by itself: the listener closed its side at EOF
    ev = listener.wait_for("capture")
    assert ev["status"] == "complete" and ev["kind"] == "raw" and ev["files"] == ["dmesg.txt"]
    stored = Path(ev["path"]) / "dmesg.txt"
    assert stored.read_bytes() == DMESG
    m = manifest(ev)
    assert m["files"] == [{"name": "dmesg.txt", "bytes": len(DMESG), "sha256": sha(DMESG)}]
    assert m["peer"] == "127.0.0.1" and Path(ev["path"]).parent.name == "127.0.0.1"


def test_garbage_bytes_are_kept_as_a_raw_file(listener: Listener, busybox: str) -> None:
    garbage = os.urandom(300_000)
    assert nc_send(busybox, listener.port, garbage).returncode == 0
    ev = listener.wait_for("capture")
    assert ev["status"] == "complete" and ev["files"] == ["stream.bin"]
    assert (Path(ev["path"]) / "stream.bin").read_bytes() == garbage


def test_empty_connection_leaves_no_capture(listener: Listener, busybox: str) -> None:
    nc_send(busybox, listener.port, b"")
    nc_send(busybox, listener.port, DMESG)
    ev = listener.wait_for("capture")
    assert ev["files"] == ["dmesg.txt"]
    assert len(list(listener.dir.glob("*/*/manifest.json"))) == 1


def test_busybox_tar_bundle_with_header_and_sha256sums(
    listener: Listener, busybox: str, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "proc").mkdir(parents=True)
    (bundle / "dmesg.txt").write_bytes(DMESG)
    (bundle / "proc" / "cmdline").write_text("root=/dev/vda rootfstype=btrfs\n")
    (bundle / "big.bin").write_bytes(os.urandom(3 << 20))
    sums = subprocess.run([busybox, "sha256sum", "dmesg.txt", "proc/cmdline", "big.bin"], cwd=bundle,
                          capture_output=True, check=True).stdout  # fmt: skip
    (bundle / "SHA256SUMS").write_bytes(sums)
    tar = subprocess.run(
        [busybox, "tar", "-c", "-f", "-", "."], cwd=bundle, capture_output=True, check=True
    ).stdout
    kver = platform.release()  # any kernel name will do: this machine's
    header = f"RESCUE/1 name=bundle host=broken-vm kernel={kver} boot=abc\n".encode()
    assert nc_send(busybox, listener.port, header + tar).returncode == 0
    ev = listener.wait_for("capture")
    assert ev["status"] == "complete", ev
    assert ev["kind"] == "header+tar" and ev["sha256sums"] == "verified"
    assert sorted(ev["files"]) == ["SHA256SUMS", "big.bin", "dmesg.txt", "proc/cmdline"]
    m = manifest(ev)
    assert m["header"] == {
        "name": "bundle",
        "host": "broken-vm",
        "kernel": kver,
        "boot": "abc",
    }
    for f in m["files"]:
        assert f["sha256"] == sha((bundle / f["name"]).read_bytes())
        assert (Path(ev["path"]) / f["name"]).read_bytes() == (bundle / f["name"]).read_bytes()
    assert not list(Path(ev["path"]).rglob("*.partial")), "the spool is removed once extracted"


def test_gzipped_tar_and_a_sha256sums_mismatch(listener: Listener, busybox: str) -> None:
    good = b"evidence\n"
    sums = f"{sha(b'something else')}  a.txt\n".encode()
    data = gzip.compress(tar_of([(member("a.txt"), good), (member("SHA256SUMS"), sums)]))
    assert nc_send(busybox, listener.port, data).returncode == 0
    ev = listener.wait_for("capture")
    assert ev["kind"] == "tar.gz" and ev["status"] == "corrupt"  # complete, but not what was sent
    assert ev["sha256sums"] == "mismatch" and ev["headline"].startswith("CORRUPT")
    assert manifest(ev)["sha256sums_problems"] == ["a.txt: sha256 differs"]


def test_header_with_raw_body_uses_the_given_name(listener: Listener, busybox: str) -> None:
    assert (
        nc_send(busybox, listener.port, b"RESCUE/1 name=../../console.log\n" + b"plain text\n").returncode
        == 0
    )
    ev = listener.wait_for("capture")
    # "../../console.log" is not a safe name: the content decides instead.
    assert ev["kind"] == "header+raw" and ev["files"] == ["stream.bin"]
    assert nc_send(busybox, listener.port, b"RESCUE/1 name=console.log\nplain text\n").returncode == 0
    assert listener.wait_for("capture")["files"] == ["console.log"]


def test_hostile_tar_members_never_leave_the_capture(
    listener: Listener, busybox: str, tmp_path: Path
) -> None:
    members = [
        (member("../../escape.txt"), b"x"),
        (member("/etc/evil"), b"x"),
        (member("ok/../../../escape2"), b"x"),
        (member("link", tarfile.SYMTYPE, linkname="/etc/passwd"), b""),
        (member("hard", tarfile.LNKTYPE, linkname="ok.txt"), b""),
        (member("dev", tarfile.CHRTYPE, devmajor=1, devminor=3), b""),
        (member("fifo", tarfile.FIFOTYPE), b""),
        (member("manifest.json"), b"not ours"),
        (member("ok.txt"), b"fine"),
    ]
    assert nc_send(busybox, listener.port, tar_of(members, fmt=tarfile.GNU_FORMAT)).returncode == 0
    ev = listener.wait_for("capture")
    cap = Path(ev["path"])
    assert sorted(ev["files"]) == ["_manifest.json", "ok.txt"]
    reasons = {s["name"]: s["reason"] for s in manifest(ev)["skipped"]}
    assert reasons == {
        "../../escape.txt": "absolute or '..' path",
        "/etc/evil": "absolute or '..' path",
        "ok/../../../escape2": "absolute or '..' path",
        "link": "symlink",
        "hard": "hard link",
        "dev": "character device",
        "fifo": "fifo",
    }
    everything = [p for p in listener.dir.rglob("*")]
    assert all(p.is_dir() or (p.is_file() and not p.is_symlink()) for p in everything)
    assert not list(tmp_path.rglob("escape*"))
    assert json.loads((cap / "manifest.json").read_text())["status"] == "complete"


def test_gbk_and_undecodable_names(listener: Listener, busybox: str) -> None:
    gbk_name = "日志.txt".encode("gbk")
    junk_name = b"bad\xff\xfe\x01name"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
        for raw, data in ((gbk_name, b"gbk"), (junk_name, b"junk"), ("ünïcode.txt".encode(), b"utf8")):
            info = tarfile.TarInfo(raw.decode("latin-1"))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert nc_send(busybox, listener.port, buf.getvalue()).returncode == 0
    ev = listener.wait_for("capture")
    cap = Path(ev["path"])
    assert (cap / "日志.txt").read_bytes() == b"gbk"
    assert (cap / "ünïcode.txt").read_bytes() == b"utf8"
    escaped = [f for f in manifest(ev)["files"] if f["name"].startswith("bad")]
    assert escaped and escaped[0]["name_encoding"] == "escaped" and "\\xff" in escaped[0]["name"]
    assert (cap / escaped[0]["name"]).read_bytes() == b"junk"
    assert {f.get("name_encoding") for f in manifest(ev)["files"]} == {None, "gbk", "escaped"}


def test_two_hundred_concurrent_busybox_senders(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "captures", "--max-per-peer", "256")  # all 200 come from 127.0.0.1
    try:
        payloads = [os.urandom(64 * 1024) for _ in range(200)]
        with ThreadPoolExecutor(max_workers=200) as pool:
            results = list(pool.map(lambda d: nc_send(busybox, lst.port, d, timeout=120), payloads))
        assert all(r.returncode == 0 for r in results)
        events = lst.captures(200, timeout=120)
        assert all(e["status"] == "complete" for e in events)
        got = sorted(sha((Path(e["path"]) / "stream.bin").read_bytes()) for e in events)
        assert got == sorted(sha(p) for p in payloads)
    finally:
        lst.stop()


def test_endless_stream_stops_at_max_bytes(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "captures", "--max-bytes", "1M")
    try:
        # busybox nc fed by /dev/zero never reaches EOF by itself: the listener must end it.
        pipeline = f"{busybox} cat /dev/zero | {busybox} nc 127.0.0.1 {lst.port}"
        subprocess.run([busybox, "sh", "-c", pipeline], capture_output=True, timeout=60)  # ends when cut off
        ev = lst.wait_for("capture")
        assert ev["status"] == "incomplete" and "max-bytes" in ev["reason"]
        kept = Path(ev["path"]) / "stream.bin.partial"
        assert kept.stat().st_size == 1 << 20
        assert not (Path(ev["path"]) / "stream.bin").exists()
    finally:
        lst.stop()


def test_idle_sender_is_closed_and_its_bytes_kept(tmp_path: Path) -> None:
    lst = Listener(tmp_path / "captures", "--idle-timeout", "1")
    try:
        with socket.create_connection(("127.0.0.1", lst.port)) as s:
            s.sendall(DMESG)
            ev = lst.wait_for("capture", timeout=30)  # arrives while we still hold the socket open
            # The listener says why it ends the stream, then resets: the stream was not kept whole.
            assert s.recv(100).startswith(b"rescue: refused: sender silent")
            with pytest.raises(ConnectionResetError):
                while s.recv(100):
                    pass
        assert ev["status"] == "incomplete" and "idle-timeout" in ev["reason"]
        assert (Path(ev["path"]) / "dmesg.txt.partial").read_bytes() == DMESG
    finally:
        lst.stop()


def test_cut_connection_keeps_what_arrived(listener: Listener) -> None:
    data = tar_of([(member("first.txt"), b"complete member"), (member("second.bin"), os.urandom(200_000))])
    with socket.create_connection(("127.0.0.1", listener.port)) as s:
        s.sendall(data[:100_000])
        # SO_LINGER 0: close sends a reset, as a machine losing power mid-transfer would.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ev = listener.wait_for("capture")
    cap = Path(ev["path"])
    assert ev["status"] == "incomplete"
    assert (cap / "first.txt").read_bytes() == b"complete member"
    assert "second.bin.partial" in ev["files"] and "stream.tar.partial" in ev["files"]
    assert (cap / "stream.tar.partial").read_bytes() == data[:100_000]


def test_token_required_wrong_and_right(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "captures", "--token", "s3cret")
    try:
        nc_send(busybox, lst.port, DMESG)
        ev = lst.wait_for("capture")
        assert ev["status"] == "rejected" and "token" in ev["reason"] and ev["files"] == []
        sent = nc_send(busybox, lst.port, b"RESCUE/1 token=wrong\n" + DMESG)
        assert sent.stdout == b"rescue: refused: wrong token\n"  # the sender is told
        # The same peer's second rejection within a minute is counted in the first one's capture.
        wait_until(lambda: manifest(ev).get("rejections") == 2, 10, "the rejection count")
        nc_send(busybox, lst.port, b"RESCUE/1 token=s3cret name=dmesg.txt\n" + DMESG)
        ev = lst.wait_for("capture")
        assert ev["status"] == "complete" and (Path(ev["path"]) / "dmesg.txt").read_bytes() == DMESG
        assert "token" not in manifest(ev)["header"]
    finally:
        lst.stop()
    assert "s3cret" not in lst.stderr_now()
    assert not any("s3cret" in p.read_text() for p in lst.dir.rglob("manifest.json"))


def test_disallowed_peer_is_refused_and_nothing_stored(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "captures", "--allow", "10.0.0.0/8")
    try:
        nc_send(busybox, lst.port, DMESG)
        ev = lst.wait_for("refused")
        assert ev["peer"] == "127.0.0.1" and "allow" in ev["reason"]
        assert not list(lst.dir.glob("*/*"))
    finally:
        lst.stop()


def _slow_sender(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(DMESG)
    return s


def test_term_during_a_transfer_marks_it_incomplete_and_exits_0(tmp_path: Path) -> None:
    lst = Listener(tmp_path / "captures", "--drain-timeout", "1")
    with _slow_sender(lst.port) as s:
        lst.wait_for("connection")
        lst.wait_for("progress")  # bytes have arrived
        lst.proc.send_signal(signal.SIGTERM)
        ev = lst.wait_for("capture")
        assert ev["status"] == "incomplete" and "stopped" in ev["reason"]
        assert lst.wait_for("stopped")["incomplete"] == 1
        assert lst.proc.wait(timeout=20) == 0
        del s
    assert (Path(ev["path"]) / "dmesg.txt.partial").read_bytes() == DMESG


def test_term_lets_a_transfer_in_flight_finish(tmp_path: Path) -> None:
    lst = Listener(tmp_path / "captures", "--drain-timeout", "30")
    s = _slow_sender(lst.port)
    lst.wait_for("progress")
    lst.proc.send_signal(signal.SIGTERM)
    s.sendall(b"[    3.0] the rest\n")
    s.shutdown(socket.SHUT_WR)
    ev = lst.wait_for("capture")
    s.close()
    assert ev["status"] == "complete"
    assert lst.proc.wait(timeout=20) == 0


def test_kill_then_restart_nothing_looks_complete(tmp_path: Path) -> None:
    lst = Listener(tmp_path / "captures")
    s = _slow_sender(lst.port)
    # The listener puts buffered bytes on disk within about a second: wait for that, then KILL it.
    wait_until(lambda: any(lst.dir.glob("*/*/dmesg.txt.partial")), 10, "bytes on disk")
    lst.proc.kill()
    lst.proc.wait(timeout=10)
    s.close()
    (cap,) = list(lst.dir.glob("*/*"))
    assert not (cap / "dmesg.txt").exists() and (cap / "dmesg.txt.partial").exists()
    assert json.loads((cap / "manifest.json").read_text())["status"] == "receiving"
    again = Listener(tmp_path / "captures")
    try:
        assert [e["path"] for e in again.events if e["event"] == "recovered"] == [str(cap)]
    finally:
        again.stop()
    m = json.loads((cap / "manifest.json").read_text())
    assert m["status"] == "incomplete" and m["files"][0]["name"] == "dmesg.txt.partial"
    assert m["files"][0]["sha256"] == sha(DMESG)


def test_hup_reloads_the_allow_list(tmp_path: Path, busybox: str) -> None:
    config = tmp_path / "rescue.toml"
    config.write_text('allow = ["10.0.0.0/8"]\n')
    lst = Listener(tmp_path / "captures", "--config", str(config))
    try:
        nc_send(busybox, lst.port, DMESG)
        assert lst.wait_for("refused")["peer"] == "127.0.0.1"
        config.write_text('allow = ["127.0.0.0/8"]\ntoken = "t"\n')
        lst.proc.send_signal(signal.SIGHUP)
        ev = lst.wait_for("reloaded")
        assert ev["allow"] == ["127.0.0.0/8"] and ev["token"] is True
        nc_send(busybox, lst.port, b"RESCUE/1 token=t\n" + DMESG)
        assert lst.wait_for("capture")["status"] == "complete"
        config.write_text("allow = [not toml")
        lst.proc.send_signal(signal.SIGHUP)
        assert "keeping the old settings" in lst.wait_for("error")["error"] + " keeping the old settings"
        lst.proc.send_signal(signal.SIGUSR1)
        status = lst.wait_for("status")
        assert status["complete"] == 1 and status["active"] == 0
    finally:
        lst.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "{busy}"], "cannot listen on 127.0.0.1:{busy}: Address already in use"),
        (["--dir", "/etc/hostname/captures"], "cannot write to capture directory /etc/hostname/captures"),
        (["--allow", "not-a-net"], "bad --allow network 'not-a-net'"),
        (["--max-bytes", "lots"], "bad size 'lots'"),
    ],
)
def test_startup_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        argv = [a.replace("{busy}", port) for a in args]
        base = ["--bind", "127.0.0.1", "--port", "0", "--dir", str(tmp_path / "c")]
        proc = subprocess.run([sys.executable, "-m", "rescue", "listen", *base, *argv], capture_output=True,
                              text=True, timeout=30)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert message.replace("{busy}", port) in proc.stderr


def test_disk_full_marks_the_capture_incomplete_and_the_listener_lives_on(
    tmp_path: Path, busybox: str
) -> None:
    from tests.conftest import require

    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], capture_output=True
    )
    require(mounted.returncode == 0, "needs root to mount a small tmpfs")
    try:
        lst = Listener(small / "captures", "--min-free", "0")
        try:
            nc_send(busybox, lst.port, os.urandom(3 << 20))
            ev = lst.wait_for("capture")
            assert ev["status"] == "incomplete" and ev["reason"] == "disk full"
            lst.proc.send_signal(signal.SIGUSR1)
            assert lst.wait_for("status")["incomplete"] == 1
        finally:
            assert lst.stop() == 0
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_a_flood_of_silent_connections_is_bounded(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "captures", "--max-connections", "20", "--idle-timeout", "2")
    socks = []
    try:
        for _ in range(100):
            socks.append(socket.create_connection(("127.0.0.1", lst.port)))
        refused = lst.wait_for("refused")  # the first one; the other 79 are counted, not logged one by one
        assert "too many connections" in refused["reason"]
        for s in socks:
            s.close()
        # The listener may still be accepting the closed ones (a moment in the table each): a refused
        # sender is told, and tries again as the hooks do.
        for _ in range(50):
            sent = nc_send(busybox, lst.port, DMESG)
            if not sent.stdout:
                break
            assert sent.stdout.startswith(b"rescue: refused: too many connections")
            time.sleep(0.1)  # a sender's back-off before it tries again
        assert sent.returncode == 0 and sent.stdout == b""
        ev = lst.wait_for("capture")
        assert ev["status"] == "complete" and ev["files"] == ["dmesg.txt"]
        assert len(list(lst.dir.glob("*/*"))) == 1  # the silent ones stored nothing
        lst.proc.terminate()
        lst.wait_for("stopped")  # the count of the refusals not said one by one comes by then
        # Refusals are said once, then counted: a few lines for the whole flood.
        refusals = [e for e in lst.events if e["event"] == "refused"]
        assert len(refusals) <= 3 and sum(e["count"] for e in refusals) >= 50
    finally:
        lst.stop()


def test_hup_reopens_the_log(tmp_path: Path, busybox: str) -> None:
    log = tmp_path / "rescue.log"
    lst = Listener(tmp_path / "captures", "--log", str(log))
    try:
        assert "rescue listening on" in log.read_text()
        log.rename(tmp_path / "rescue.log.1")
        lst.proc.send_signal(signal.SIGHUP)
        lst.wait_for("reloaded")
        nc_send(busybox, lst.port, DMESG)
        lst.wait_for("capture")
        assert "complete; 1 file(s)" in log.read_text()
        assert "complete; 1 file(s)" not in (tmp_path / "rescue.log.1").read_text()
    finally:
        lst.stop()


def test_every_capture_is_analysed(listener: Listener, busybox: str) -> None:
    assert nc_send(busybox, listener.port, DMESG).returncode == 0
    ev = listener.wait_for("capture")
    assert ev["findings"][0] == "btrfs-crc32c-missing"
    assert "btrfs-crc32c-missing" in ev["headline"]
    analysis = manifest(ev)["analysis"]
    assert analysis["findings"][0]["id"] == "btrfs-crc32c-missing"
    assert "btrfs-crc32c-missing" in listener.stderr_now()  # the headline is shown to the person too

"""netconsole into a real `rescue listen`: datagrams recorded from a real kernel sent again over real UDP
sockets, a TCP bundle of the same boot through busybox nc, senders from many loopback addresses."""

from __future__ import annotations

import io
import json
import signal
import socket
import tarfile
from pathlib import Path

from rescue.listen.netconsole import ANONYMOUS_BURST
from tests.conftest import Listener, manifest, nc_send, wait_until
from tests.unit.test_netconsole import BOOT, recorded

QUIET = "1"


def send_udp(port: int, datagrams: list[bytes], source: str = "127.0.0.1") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        for data in datagrams:
            sock.sendto(data, ("127.0.0.1", port))


def bundle(boot: str) -> bytes:
    """What the collector sends: a header with boot=, then a tar (a dmesg of the initramfs)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        data = b"[    7.839491] ALERT!  /dev/vdb does not exist.  Dropping to a shell!\n"
        info = tarfile.TarInfo("dmesg.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return f"RESCUE/1 name=bundle boot={boot}\n".encode() + buf.getvalue()


def test_recorded_crash_becomes_a_capture_diagnosed_as_kernel_oops(tmp_path: Path) -> None:
    lst = Listener(tmp_path / "captures", "--netconsole-quiet", "30")
    assert lst.events[0]["udp_port"] == lst.port  # the TCP port's number by default
    send_udp(lst.port, recorded())
    opened = lst.wait_for("netconsole")
    assert opened["boot"] == BOOT and opened["machine"] == "525400123456"
    event = lst.wait_for("capture")  # the panic, not the 30 s of quiet, ends it
    assert event["kind"] == "netconsole" and event["reason"] == "the kernel panicked", event
    assert "kernel-oops" in event["findings"], event
    assert (event["messages"], event["lost"], event["duplicates"]) == (64, 0, 0)
    man = manifest(event)
    assert man["status"] == "complete" and man["header"]["boot"] == BOOT
    assert Path(event["path"]).parent.name == "525400123456"  # stored per machine, like its bundles
    log = Path(event["path"]) / "netconsole.log"
    assert [f["name"] for f in man["files"]] == ["netconsole.log"] and man["files"][0][
        "bytes"
    ] == log.stat().st_size
    text = log.read_text()
    assert "[    8.483882] Kernel panic - not syncing: sysrq triggered crash\n" in text
    assert not list(Path(event["path"]).glob("*.partial"))


def test_the_stream_and_the_bundle_of_one_boot_share_a_capture(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "captures", "--netconsole-quiet", QUIET)
    data = recorded()
    send_udp(lst.port, data[:10])  # the boot is under way: no panic yet
    first = lst.wait_for("netconsole")["path"]
    assert nc_send(busybox, lst.port, bundle(BOOT)).returncode == 0
    tcp = lst.wait_for("capture")
    joined = lst.wait_for("netconsole")
    assert joined["path"] == tcp["path"] and joined["old"] == first and not Path(first).exists()
    send_udp(lst.port, data[10:])  # the stream goes on into the same capture
    event = lst.wait_for("capture")
    assert event["path"] == tcp["path"]
    man = manifest(event)
    names = [f["name"] for f in man["files"]]
    assert "dmesg.txt" in names and "netconsole.log" in names, names
    assert man["kind"] == "header+tar" and man["header"]["boot"] == BOOT
    assert {"kernel-oops"} <= set(event["findings"]), event
    assert "sysrq triggered crash" in (Path(tcp["path"]) / "netconsole.log").read_text()


def test_a_bundle_first_takes_the_stream_that_follows(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "captures", "--netconsole-quiet", QUIET)
    assert nc_send(busybox, lst.port, bundle(BOOT)).returncode == 0
    tcp = lst.wait_for("capture")
    send_udp(lst.port, recorded())
    assert lst.wait_for("netconsole")["path"] == tcp["path"]
    event = lst.wait_for("capture")
    assert event["path"] == tcp["path"] and "kernel-oops" in event["findings"]
    assert len(list((tmp_path / "captures").glob("*/*"))) == 1


def test_allow_applies_to_netconsole_and_udp_port_0_turns_it_off(tmp_path: Path) -> None:
    lst = Listener(tmp_path / "a", "--allow", "192.0.2.0/24", "--netconsole-quiet", QUIET)
    send_udp(lst.port, recorded())

    def refused() -> bool:  # the status line (USR1) counts them
        lst.proc.send_signal(signal.SIGUSR1)
        return bool(lst.wait_for("status")["netconsole"]["refused"] == len(recorded()))

    wait_until(refused, 10, "64 datagrams refused")
    lst.stop()
    assert not list((tmp_path / "a").glob("*/*"))
    assert "netconsole" not in [e["event"] for e in lst.events]
    off = Listener(tmp_path / "b", "--udp-port", "0")
    assert off.events[0]["udp_port"] == 0
    send_udp(off.port, recorded())
    off.stop()
    assert not list((tmp_path / "b").glob("*/*"))


def test_a_flood_of_senders_makes_few_directories_and_loses_no_named_stream(tmp_path: Path) -> None:
    """3,000 source addresses (127.0.0.0/8 is all ours) with one unnamed line each, then a real stream."""
    lst = Listener(tmp_path / "captures", "--netconsole-quiet", QUIET)
    for i in range(3000):
        send_udp(lst.port, [b"6,1,1,-;spoofed\n"], source=f"127.9.{i // 250}.{i % 250 + 1}")
    send_udp(lst.port, recorded(), source="127.0.0.2")
    event = lst.wait_for("capture")
    while event.get("peer") != "127.0.0.2":
        event = lst.wait_for("capture")
    assert event["messages"] == 64 and "kernel-oops" in event["findings"]
    wait_until(
        lambda: len(list((tmp_path / "captures").glob("*/*"))) > 1, 10, "the unnamed senders' captures"
    )
    lst.stop()
    dirs = list((tmp_path / "captures").glob("*/*"))
    # a capture for the real stream, and unnamed ones only as fast as the bucket refills
    assert 2 <= len(dirs) <= 1 + ANONYMOUS_BURST + 10, len(dirs)
    status = [json.dumps(e) for e in lst.events if e["event"] == "error"]
    assert not status, status


def test_a_stream_named_after_its_address_still_joins_the_bundle_of_its_boot(
    tmp_path: Path, busybox: str
) -> None:
    lst = Listener(tmp_path / "captures", "--netconsole-quiet", QUIET)
    # More than is held before an identity line: the capture is opened under the address.
    early = [f"6,{i},{1000 * i},-;early message {i} {'x' * 200}\n".encode() for i in range(400)]
    send_udp(lst.port, early)
    first = lst.wait_for("netconsole")
    assert "boot" not in first, first
    send_udp(lst.port, [f"12,400,500000,-;rescue: boot={BOOT} machine=m1\n".encode()])
    wait_until(
        lambda: "rescue: boot=" in (Path(first["path"]) / "netconsole.log.partial").read_text(),
        10,
        "identity",
    )
    assert nc_send(busybox, lst.port, bundle(BOOT)).returncode == 0
    tcp = lst.wait_for("capture")
    joined = lst.wait_for("netconsole")
    assert joined["path"] == tcp["path"] and joined["old"] == first["path"]
    event = lst.wait_for("capture")
    assert event["path"] == tcp["path"] and event["messages"] == 401
    assert manifest(event)["files"][-1]["name"] == "netconsole.log"

"""The listener seen from another host: a network namespace joined by a veth pair (pyroute2).

The sender has its own address, so --allow and the printed rescue-shell commands are tested on a
non-loopback address, and the printed commands are run as printed, by busybox sh, inside the namespace.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Listener, nc_send, require

pytestmark = pytest.mark.netns
HOST_IP, GUEST_IP = "10.213.7.1", "10.213.7.2"


@pytest.fixture
def netns() -> Iterator[str]:
    require(os.geteuid() == 0, "network namespaces need root")
    from pyroute2 import IPRoute, NetNS, netns

    name = f"rescue-{uuid.uuid4().hex[:8]}"
    host_if = f"rh{name[-8:]}"
    netns.create(name)
    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname=host_if, kind="veth", peer={"ifname": "eth0", "net_ns_fd": name})
            (idx,) = ipr.link_lookup(ifname=host_if)
            ipr.addr("add", index=idx, address=HOST_IP, prefixlen=24)
            ipr.link("set", index=idx, state="up")
        with NetNS(name) as ns:
            for ifname, addr in (("eth0", GUEST_IP), ("lo", None)):
                (idx,) = ns.link_lookup(ifname=ifname)
                if addr:
                    ns.addr("add", index=idx, address=addr, prefixlen=24)
                ns.link("set", index=idx, state="up")
        yield name
    finally:
        with IPRoute() as ipr:
            for idx in ipr.link_lookup(ifname=host_if):
                ipr.link("del", index=idx)
        netns.remove(name)


@pytest.fixture
def busybox_path(tmp_path: Path, busybox: str) -> str:
    """A PATH whose nc, tar, dmesg... are busybox's, as on a rescue shell."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for applet in ("nc", "tar", "dmesg", "cat", "mkdir", "blkid", "sh"):
        (bin_dir / applet).symlink_to(busybox)
    return f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"


def printed_commands(lst: Listener) -> list[str]:
    """The busybox section of the recipe as the listener printed it (indented lines after its heading)."""
    text = lst.stderr_now()
    lines = text[text.index("busybox rescue shell") :].splitlines()[1:]
    section = []
    for line in lines:
        if not line.startswith("  "):
            break
        section.append(line.strip())
    return section


def in_ns(ns: str, path: str, line: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    env = {"PATH": path, "HOME": str(cwd)}
    return subprocess.run(
        ["ip", "netns", "exec", ns, "sh", "-c", line], env=env, cwd=cwd, capture_output=True, timeout=60
    )


def test_printed_commands_work_from_another_host(netns: str, busybox_path: str, tmp_path: Path) -> None:
    lst = Listener(tmp_path / "captures", bind=HOST_IP)
    try:
        lines = printed_commands(lst)
        send_dmesg = next(line for line in lines if line.startswith("dmesg | nc"))
        bundle = next(line for line in lines if line.startswith("mkdir -p /tmp/r"))
        assert send_dmesg == f"dmesg | nc {HOST_IP} {lst.port}"
        assert in_ns(netns, busybox_path, send_dmesg, tmp_path).returncode == 0
        ev = lst.wait_for("capture")
        assert ev["peer"] == GUEST_IP and ev["files"] == ["dmesg.txt"]
        assert Path(ev["path"]).parent.name == GUEST_IP

        ran = in_ns(netns, busybox_path, bundle, tmp_path)
        assert ran.returncode == 0, ran.stderr
        ev = lst.wait_for("capture")
        assert ev["status"] == "complete" and ev["kind"] == "tar"
        files = set(ev["files"])
        assert {"dmesg.txt", "cmdline.txt", "modules.txt", "crypto.txt", "mounts.txt", "blkid.txt"} <= files
        cmdline = (Path(ev["path"]) / "cmdline.txt").read_text()
        assert cmdline == Path("/proc/cmdline").read_text()  # not the empty file tar makes of /proc entries
    finally:
        lst.stop()


def test_allow_accepts_the_subnet_and_refuses_others(
    netns: str, busybox_path: str, busybox: str, tmp_path: Path
) -> None:
    lst = Listener(tmp_path / "captures", "--allow", f"{GUEST_IP}/32", bind="0.0.0.0")
    try:
        assert re.search(rf"host addresses: .*\b{re.escape(HOST_IP)}\b", lst.stderr_now())
        nc_send(busybox, lst.port, b"from loopback\n")
        assert lst.wait_for("refused")["peer"] == "127.0.0.1"
        sent = subprocess.run(
            ["ip", "netns", "exec", netns, busybox, "nc", HOST_IP, str(lst.port)],
            input=b"from the guest\n",
            capture_output=True,
            timeout=30,
        )
        assert sent.returncode == 0
        ev = lst.wait_for("capture")
        assert (
            ev["peer"] == GUEST_IP and (Path(ev["path"]) / "stream.bin").read_bytes() == b"from the guest\n"
        )
    finally:
        lst.stop()

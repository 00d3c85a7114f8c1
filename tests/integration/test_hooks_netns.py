"""The collector's network bring-up for real: two network namespaces of our own joined by a veth pair,
busybox udhcpd and `rescue listen` on one side, the collector (klibc ipconfig, busybox udhcpc, or a static
address) on the other. Nothing leaves the namespaces."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.collector_root import COLLECTOR, FakeRoot, build
from tests.conftest import Listener, require
from tests.host_kernel import HOST_MODDIR

pytestmark = pytest.mark.netns

SERVER_IP = "10.99.0.1"
DHCP_POOL = {f"10.99.0.{n}" for n in range(10, 21)}  # udhcpd's start..end below


@dataclass
class Net:
    server: str
    client: str
    tmp: Path


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture
def net(tmp_path: Path, busybox: str) -> Iterator[Net]:
    require(os.geteuid() == 0 and shutil.which("ip") is not None, "needs root and iproute2 for namespaces")
    require((HOST_MODDIR / "modules.dep").is_file(), f"{HOST_MODDIR} is missing")
    tag = f"{os.getpid() % 100000}-{abs(hash(tmp_path)) % 1000}"
    n = Net(server=f"rescue-s{tag}", client=f"rescue-c{tag}", tmp=tmp_path)
    sh("ip", "netns", "add", n.server)
    try:
        sh("ip", "netns", "add", n.client)
        sh("ip", "-n", n.server, "link", "add", "rs0", "type", "veth",
           "peer", "name", "rc0", "netns", n.client)  # fmt: skip
        sh("ip", "-n", n.server, "addr", "add", f"{SERVER_IP}/24", "dev", "rs0")
        sh("ip", "-n", n.server, "link", "set", "rs0", "up")
        sh("ip", "-n", n.server, "link", "set", "lo", "up")
        conf = tmp_path / "udhcpd.conf"
        conf.write_text(
            f"start 10.99.0.10\nend 10.99.0.20\ninterface rs0\nlease_file {tmp_path}/leases\n"
            f"pidfile {tmp_path}/udhcpd.pid\noption subnet 255.255.255.0\noption router {SERVER_IP}\n"
        )
        (tmp_path / "leases").touch()
        dhcpd = subprocess.Popen(["ip", "netns", "exec", n.server, busybox, "udhcpd", "-f", str(conf)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            yield n
        finally:
            dhcpd.terminate()
            dhcpd.wait(timeout=10)
    finally:
        subprocess.run(["ip", "netns", "del", n.client], capture_output=True)
        subprocess.run(["ip", "netns", "del", n.server], capture_output=True)


def netns_listener(ns: str, directory: Path) -> Listener:
    """`rescue listen` inside the server namespace."""
    return Listener(directory, bind=SERVER_IP, wrap=["ip", "netns", "exec", ns])


def run_in_client(busybox: str, net: Net, fake: FakeRoot, **env: str) -> subprocess.CompletedProcess[str]:
    # ip netns exec gives the client its own mount namespace and sysfs; a private /run keeps klibc
    # ipconfig's /run/net-*.conf inside it.
    script = 'mount -t tmpfs rescue-run /run && exec "$@"'
    full = fake.env(**{"RESCUE_IP": "", "RESCUE_SYSNET": "/sys/class/net", "RESCUE_RUNDIR": "/run", **env})
    argv = ["ip", "netns", "exec", net.client, "sh", "-c", script,
            "sh", busybox, "ash", str(COLLECTOR), "panic"]  # fmt: skip
    return subprocess.run(argv, env=full, capture_output=True, text=True, timeout=90)


@pytest.mark.parametrize(
    ("env", "method", "peers"),
    [
        ({}, "method=ipconfig rc0", DHCP_POOL),
        ({"RESCUE_IPCONFIG": "none"}, "method=udhcpc rc0", DHCP_POOL),
        ({"RESCUE_IP": "10.99.0.5::10.99.0.1:255.255.255.0::rc0:off"}, "method=static", {"10.99.0.5"}),
        ({"RESCUE_IP": "10.99.0.6::10.99.0.1:255.255.255.0::rc0:off", "RESCUE_IPCONFIG": "none"},
         "method=static", {"10.99.0.6"}),
    ],
    ids=["klibc-ipconfig-dhcp", "busybox-udhcpc", "static-ipconfig", "static-busybox-ip"],
)  # fmt: skip
def test_network_bring_up_and_send(
    busybox: str, net: Net, env: dict[str, str], method: str, peers: set[str]
) -> None:
    fake = build(net.tmp / "fake", cmdline="console=ttyS0 root=UUID={uuid}")
    lst = netns_listener(net.server, net.tmp / "captures")
    try:
        proc = run_in_client(busybox, net, fake, RESCUE_HOST=SERVER_IP, RESCUE_PORT=str(lst.port),
                             RESCUE_TIMEOUT="40", **env)  # fmt: skip
        assert f"bytes to {SERVER_IP}:{lst.port}" in proc.stdout, proc.stdout + proc.stderr
        event = lst.wait_for("capture")
        assert event["status"] == "complete"
        assert event["peer"] in peers
        network = (Path(event["path"]) / "network.txt").read_text()
        assert method in network.splitlines()[0], network
        assert "device=rc0" in network
    finally:
        lst.stop()

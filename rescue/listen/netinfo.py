"""What the host looks like from the broken machine: its addresses, and the lines to type there."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class HostAddress:
    address: str
    prefixlen: int
    ifname: str
    default_route: bool  # the interface carries a default route: the likeliest way in from a LAN

    def __str__(self) -> str:
        note = ", default route" if self.default_route else ""
        return f"{self.address} ({self.ifname}{note})"


def host_addresses(bind: str = "0.0.0.0") -> list[HostAddress]:
    """Usable addresses to give to the rescue shell, likeliest first.

    Only IPv4 (klibc ipconfig and busybox nc in an initramfs are IPv4-first) and never link-local;
    loopback only when nothing else exists or the listener is bound to it.
    """
    from pyroute2 import IPRoute  # imported here: it costs 0.15 s, which other sub-commands need not pay

    with IPRoute() as ipr:
        names = {link["index"]: link.get("IFLA_IFNAME") or str(link["index"]) for link in ipr.get_links()}
        default_ifs = {r.get("RTA_OIF") for r in ipr.get_routes(family=socket.AF_INET) if r["dst_len"] == 0}
        found = []
        for msg in ipr.get_addr(family=socket.AF_INET):
            addr = msg.get("IFA_ADDRESS")
            if not addr:
                continue
            ip = ipaddress.ip_address(addr)
            if ip.is_link_local:
                continue
            found.append(
                HostAddress(addr, msg["prefixlen"], names.get(msg["index"], "?"), msg["index"] in default_ifs)
            )
    if bind not in ("0.0.0.0", "", "::"):
        return [a for a in found if a.address == bind] or [HostAddress(bind, 32, "bound", False)]
    non_loop = [a for a in found if not ipaddress.ip_address(a.address).is_loopback]
    chosen = non_loop or found or [HostAddress("127.0.0.1", 8, "lo", False)]
    return sorted(
        chosen, key=lambda a: (not a.default_route, ipaddress.ip_address(a.address).is_private is False)
    )


# /proc files report a size of 0, so tar would store them empty: copy them into files first.
_BUNDLE_FILES = "cmdline modules crypto filesystems partitions mounts"


def shell_instructions(host: str, port: int, token: bool = False, prefixlen: int = 24) -> list[str]:
    """The exact lines to type on a busybox rescue shell to send dmesg, then a whole bundle.

    The token itself is never printed (it would end up in logs): the lines say TOKEN in its place.
    """
    try:
        network = str(ipaddress.ip_interface(f"{host}/{prefixlen}").network)
    except ValueError:
        network = "the host's network"
    header = 'echo "RESCUE/1 token=TOKEN name=%s"; ' if token else ""
    send_dmesg = (
        f"{{ {header % 'dmesg.txt'}cat /tmp/dmesg.txt; }} | nc {host} {port}"
        if token
        else f"nc {host} {port} < /tmp/dmesg.txt"
    )
    tar_pipe = (
        f"{{ {header % 'bundle'}tar -c -f - .; }} | nc {host} {port}"
        if token
        else f"tar -c -f - . | nc {host} {port}"
    )
    return [
        "ip link set eth0 up; sleep 2  # your NIC may be ens3, enp1s0...: see 'ip link'",
        f"ipconfig -t 10 eth0           # no ipconfig? ip addr add <a free address in {network}> dev eth0",
        "dmesg > /tmp/dmesg.txt",
        send_dmesg,
        "# everything at once:",
        "mkdir -p /tmp/r && cd /tmp/r && dmesg > dmesg.txt && for f in "
        + _BUNDLE_FILES
        + "; do cat /proc/$f > $f.txt; done; blkid > blkid.txt; "
        + tar_pipe,
    ]

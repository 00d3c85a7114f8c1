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

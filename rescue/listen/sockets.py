"""The listening socket for --bind/--port."""

from __future__ import annotations

import ipaddress
import socket

from rescue.listen.config import Settings


def bound_socket(settings: Settings) -> socket.socket:
    """The listening socket for --bind/--port. An IPv6 wildcard (`::`) also takes IPv4 unless
    --ipv6-only: asyncio's create_server would make it IPv6-only, which nobody asking for `::` expects."""
    host, port = settings.bind, settings.port
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        ip = None  # a host name: the first address it resolves to
    if ip is None:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, addr = found[0]
    else:
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        addr = (str(ip), port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            v6only = settings.ipv6_only or not (ip is not None and ip.is_unspecified)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        sock.bind(addr)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock

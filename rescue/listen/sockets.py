"""The listening socket: bound for --bind/--port, or the one systemd passes (socket activation)."""

from __future__ import annotations

import ipaddress
import os
import socket

from rescue.errors import RescueError
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


SD_LISTEN_FDS_START = 3  # sd_listen_fds(3): the first socket systemd passes


def systemd_socket() -> socket.socket | None:
    """The listening socket systemd passed (LISTEN_PID is us, LISTEN_FDS >= 1), else None.

    The variables are removed once read, as sd_listen_fds(1) does, so that no child takes the socket
    for its own.
    """
    pid, count = os.environ.get("LISTEN_PID", ""), os.environ.get("LISTEN_FDS", "")
    if pid != str(os.getpid()) or not count.isdigit() or int(count) < 1:
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    if sock.type != socket.SOCK_STREAM:
        raise RescueError("systemd passed a socket that is not a stream", hint="ListenStream= in the unit")
    os.set_inheritable(sock.fileno(), False)
    sock.setblocking(False)
    return sock

"""systemd socket activation: the listening socket systemd passed, as sd_listen_fds(3) finds it."""

from __future__ import annotations

import os
import socket

from rescue.errors import RescueError

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

"""How the listener turns a sender away: one line saying why, a moment's read, then a reset.

`rescue: refused: REASON` is written first; what the sender still sends is read (and dropped) for a
moment, so that its nc polls and prints the line; then reading stops, so that a sender still sending
blocks in write(), and the connection is reset (SO_LINGER 0): the reset fails that write and busybox nc
exits 1. A plain close would send a FIN, which busybox nc takes for success once it has sent everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

REFUSAL_DRAIN = 1.0  # seconds a refused sender is still read (and ignored) so that its nc reads the line
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


def refuse(transport: asyncio.Transport, reason: str, *, drain: bool) -> None:
    """Tell the sender why, then reset: after REFUSAL_DRAIN when drain, else at once."""
    with contextlib.suppress(Exception):
        transport.write(f"rescue: refused: {reason}\n".encode())
    if not drain:
        reset(transport)
        return
    loop = asyncio.get_running_loop()
    loop.call_later(REFUSAL_DRAIN / 2, _stop_reading, transport)
    loop.call_later(REFUSAL_DRAIN, reset, transport)


def _stop_reading(transport: asyncio.Transport) -> None:
    if not transport.is_closing():
        with contextlib.suppress(Exception):
            transport.pause_reading()


def reset(transport: asyncio.Transport) -> None:
    """Close with a reset (SO_LINGER 0): a busybox nc still writing, or waiting for our close after its
    EOF, then exits 1, not 0."""
    if transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()

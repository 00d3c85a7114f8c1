"""One connection: bytes in, one Received value out (asyncio's BufferedProtocol).

A 128 KiB buffer per connection keeps 200 senders in a few MiB. The stream is written straight to a
.partial file while it is hashed; at EOF the connection closes its side at once (busybox nc waits for the
peer to close) and hands what it received to the server, which finalizes it in a worker. The connection
never learns what became of it: finalize works on the Received value alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from rescue.capture.manifest import Kind, Status
from rescue.capture.store import Capture, FileWriter, Store, safe_relpath
from rescue.listen import proxy, wire
from rescue.listen.config import Settings
from rescue.listen.events import Events
from rescue.listen.finalize import SPOOL, io_reason
from rescue.units import human_size

# A connection starts with a small buffer (2,000 senders at once: 32 MiB) and gets the large one once its
# stream proves long, where fewer, larger writes pay (one stream at full speed).
BUFFER_FIRST = 16 * 1024
BUFFER = 128 * 1024
GROW_AFTER = 512 * 1024
FLUSH_AT = 64 * 1024  # write and hash in chunks of at least this much: busybox nc sends 1 KiB at a time
WRITEBACK_EVERY = 8 << 20  # a long stream is flushed as it comes: its sender's close waits for the disk
Durable = Callable[[OSError | None], None]


class Server(Protocol):
    """What a connection asks of the server that accepted it (listen.server.ListenServer)."""

    settings: Settings
    events: Events
    store: Store

    def admit(self, conn: Connection) -> str | None: ...  # None, or why the peer is refused

    def forget(self, conn: Connection) -> None: ...

    def finalize(self, received: Received, on_durable: Durable | None) -> None: ...


@dataclass(frozen=True)
class Received:
    """What one connection delivered: everything finalize needs, and nothing that points back."""

    capture: Capture
    peer: str
    kind: Kind
    header: dict[str, str]  # the RESCUE/1 fields (the token included: finalize drops it)
    body_bytes: int
    sink: FileWriter | None  # the raw file or the tar spool, still open; None when nothing was kept
    raw_name: str | None  # a raw stream's file name (also a gzip'd file's, kept whole)
    status: Status
    reason: str | None


def normalize_peer(host: str) -> str:
    ip = ipaddress.ip_address(host.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip)


class Connection(asyncio.BufferedProtocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.settings = server.settings
        self._buf = bytearray(BUFFER_FIRST)
        self._fill = 0
        self.kind: str | None = None  # header, tar, gzip, raw; with a header: "header+tar" etc.
        self.header: dict[str, str] | None = None  # the RESCUE/1 fields, once a header line was read
        self.received = 0  # bytes off the wire, header included
        self.bytes = 0  # body bytes stored
        self._written_back = 0
        self.started = time.monotonic()
        self.last_data = self.started
        self.capture: Capture | None = None
        self.sink: FileWriter | None = None
        self.raw_name: str | None = None
        self.done = False
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.via_proxy: str | None = None  # the trusted proxy's address while its PROXY header is awaited

    # asyncio callbacks ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = normalize_peer(transport.get_extra_info("peername")[0])
        if self.settings.trusts_proxy(self.peer):
            self.via_proxy = self.peer  # the sender is known once the PROXY header is read
        reason = self.server.admit(self)
        if reason:
            self._refuse(reason)
            return
        if not self.via_proxy:
            self.server.events.event("connection", None, peer=self.peer)

    def _refuse(self, reason: str) -> None:
        self.done = True
        if self.transport:
            self.reset()
        self.server.events.event("refused", f"refused {self.peer}: {reason}", peer=self.peer, reason=reason)

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buf)[self._fill :]

    def buffer_updated(self, nbytes: int) -> None:
        if self.done:
            return
        self._fill += nbytes
        self.received += nbytes
        self.last_data = time.monotonic()
        try:
            if self.via_proxy and self.kind is None and not self._read_proxy_header(eof=False):
                return
            if self.kind is None and not self._detect(eof=False):
                if self._fill == len(self._buf):  # cannot happen with MAX_HEADER < BUFFER; be safe
                    self._detect(eof=True)
                return
            if self._fill >= min(FLUSH_AT, len(self._buf)):
                self._flush()
        except OSError as e:
            self._fail_io(e)

    def eof_received(self) -> bool:
        if self.kind is None and self._fill == 0 and self.header is None:
            self.done = True  # connected and sent nothing (a port probe): nothing to store
            return False
        if not self.done:
            try:
                if self.via_proxy and self.kind is None and not self._read_proxy_header(eof=True):
                    return False
                if self.kind is None:
                    self._detect(eof=True)
                self._flush()
            except OSError as e:
                self._fail_io(e)
                return False
            self.finish(Status.COMPLETE, None)
            # Our side closes once the bytes are on disk (durable()): busybox nc exits only when we do,
            # and a clean close must mean that the bundle is kept.
            return self.capture is not None and self.kind is not None
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.forget(self)
        if self.kind is None and self._fill == 0 and self.header is None:
            self.done = True
        if not self.done:
            with contextlib.suppress(OSError):
                self._flush()
            reason = f"connection cut: {exc}" if exc else "connection closed before the end of the stream"
            self.finish(Status.INCOMPLETE, reason)

    # the stream ---------------------------------------------------------------------------------

    def _read_proxy_header(self, *, eof: bool) -> bool:
        """Take the PROXY header off the front of a trusted proxy's stream: the sender becomes the peer.

        False while the header is not whole yet, or when the connection ended (refused, rejected, or an
        empty one such as a health check); True once the body may follow.
        """
        try:
            header = proxy.parse(bytes(self._buf[: self._fill]))
            if header is None and eof and self._fill:
                raise proxy.ProxyHeaderError("the PROXY header was cut short")
        except proxy.ProxyHeaderError as e:
            self._reject(str(e))
            return False
        if header is None:
            self.done = eof  # ended before any byte: nothing to store
            return False
        rest = self._buf[header.length : self._fill]
        self._buf[: len(rest)] = rest
        self._fill = len(rest)
        if header.source is not None:
            self.peer = normalize_peer(header.source)
        via, self.via_proxy = self.via_proxy, None
        if not self.settings.allows(self.peer):
            self._refuse("address not in --allow")
            return False
        self.server.events.event("connection", None, peer=self.peer, proxy=via)
        if eof and not self._fill:
            self.done = True  # the proxy's own probe, or a sender that sent nothing: nothing to store
            return False
        return True

    def _detect(self, *, eof: bool) -> bool:
        """Decide the stream kind from the buffered prefix; open the capture and its sink."""
        prefix = bytes(self._buf[: self._fill])
        kind = wire.detect_kind(prefix, eof)
        if kind is None:
            return False
        if kind == "header" and self.header is None:
            line, _, rest = prefix.partition(b"\n")
            try:
                self.header = wire.parse_header(line)
            except wire.HeaderError as e:
                self._reject(str(e))
                return True
            problem = self._check_token()
            if problem:
                self._reject(problem)
                return True
            self._buf[: len(rest)] = rest
            self._fill = len(rest)
            if not rest and not eof:
                return False  # the body has not started yet
            return self._detect(eof=eof)
        if self.settings.token and self.header is None:
            self._reject("a token is required: send a 'RESCUE/1 token=...' header line first")
            return True
        self.kind = kind if self.header is None else f"header+{kind}"
        header = {k: v for k, v in (self.header or {}).items() if k != "token"}
        self.capture = self.server.store.new_capture(self.peer, time.time(), header)
        if kind == "raw":
            self.raw_name = self._raw_name(prefix)
            self.sink = FileWriter(self.capture.path, self.raw_name)
        else:
            self.sink = FileWriter(self.capture.path, SPOOL if kind == "tar" else SPOOL + ".gz")
        return True

    def _raw_name(self, prefix: bytes) -> str:
        name = (self.header or {}).get("name")
        wanted = safe_relpath(name) if name else None
        if wanted and "/" not in wanted and wanted != SPOOL:
            return wanted
        return "dmesg.txt" if wire.looks_like_dmesg(prefix) else "stream.bin"

    def _check_token(self) -> str | None:
        want = self.settings.token
        if not want:
            return None
        got = (self.header or {}).get("token", "")
        if not hmac.compare_digest(got.encode(), want.encode()):
            return "wrong token" if got else "missing token"
        return None

    def _flush(self) -> None:
        if self.sink is None or self._fill == 0:
            return
        data = memoryview(self._buf)[: self._fill]
        room = self.settings.max_bytes - self.bytes
        over = len(data) > room
        self.sink.write(data[:room] if over else data)
        self.bytes += min(len(data), room)
        self._fill = 0
        if over and not self.done:
            self.finish(Status.INCOMPLETE, f"stopped at --max-bytes {human_size(self.settings.max_bytes)}")
        if self.received >= GROW_AFTER and len(self._buf) < BUFFER and not self.done:
            self._buf = bytearray(BUFFER)
        if self.bytes - self._written_back >= WRITEBACK_EVERY and self.sink is not None:
            self.sink.start_writeback()
            self._written_back = self.bytes

    def _reject(self, reason: str) -> None:
        self.capture = self.server.store.new_capture(self.peer, time.time())
        self.kind = "raw" if self.header is None else "header"
        self.finish(Status.REJECTED, reason)

    def _fail_io(self, e: OSError) -> None:
        self.finish(Status.INCOMPLETE, io_reason(e))

    def finish(self, status: Status, reason: str | None) -> None:
        """Stop receiving (closing the connection if it is still open) and hand a Received to the server."""
        if self.done:
            return
        self.done = True
        if self.kind is None and self._fill and status is not Status.REJECTED:
            # Ended before the kind could be told (a short stream cut, or idle): keep the bytes as they are.
            try:
                self._detect(eof=True)
                self._flush()
            except OSError as e:
                status, reason = Status.INCOMPLETE, io_reason(e)
        if self.transport and not self.transport.is_closing() and status is not Status.COMPLETE:
            self.reset()
        if self.capture is None or self.kind is None:
            return  # nothing arrived that could be stored
        sink, self.sink = self.sink, None  # from here on the file belongs to finalize
        kind, header = Kind(self.kind), dict(self.header or {})
        body, name = self.bytes, self.raw_name
        self._buf = bytearray(256)  # nothing more is read: a queue of finished senders costs no buffers
        received = Received(self.capture, self.peer, kind, header, body, sink, name, status, reason)
        self.server.finalize(received, self.durable if status is Status.COMPLETE else None)

    def reset(self) -> None:
        """Close with a reset (SO_LINGER 0): after EOF a plain abort would send a FIN, which busybox nc
        takes for success; a sender whose bundle is not kept must see a failure."""
        if self.transport is None:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def durable(self, error: OSError | None) -> None:
        """The stream is on disk (error None): close cleanly. It is not: reset, so the sender knows."""
        if self.transport is None or self.transport.is_closing():
            return
        if error is None:
            self.transport.close()
        else:
            self.reset()

    def checkpoint(self, now: float) -> None:
        """Once a second: put buffered bytes on disk, so a KILL loses at most about a second of data.

        A short stream that went quiet before its kind could be told is taken as raw (a tar sender
        writes its first 512-byte header block in one go).
        """
        if self.done or not self._fill or self.via_proxy:
            return  # a PROXY header is never taken for data, however slowly it comes
        try:
            if self.kind is None:
                prefix = bytes(self._buf[: min(self._fill, len(wire.HEADER_MAGIC))])
                if now - self.last_data < 1 or wire.HEADER_MAGIC.startswith(prefix):
                    return
                self._detect(eof=True)
            self._flush()
        except OSError as e:
            self._fail_io(e)

    def idle_for(self, now: float) -> float:
        return now - self.last_data

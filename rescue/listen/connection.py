"""One connection: bytes in, one Received value out (asyncio's BufferedProtocol).

A connection's buffer starts just large enough to tell the stream's kind, is 16 KiB once it has a sender
and 128 KiB once the stream proves long: an idle flood of a thousand connections costs a few MiB, 2,000
senders about 32 MiB. The stream goes straight to a .partial file while it is hashed; at EOF it is handed
to the server, and our side closes only once the pipeline says the bytes are on disk (busybox nc waits
for our close, and a clean close must mean that the bundle is kept). Finalize works on the Received value
alone. Whenever the listener ends a stream, or cannot keep one, the sender is told why in one line and the
connection is reset (listen.refusal).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from rescue.capture.manifest import Kind, Status
from rescue.capture.store import SPOOL, Capture, FileWriter, Store, safe_relpath
from rescue.listen import proxy, refusal, wire
from rescue.listen.config import Settings
from rescue.listen.events import Events
from rescue.listen.finalize import io_reason
from rescue.tokens import token_problem
from rescue.units import human_size

FIRST_BUFFER = wire.MAX_HEADER + 1024  # a header line and a tar's first 262 bytes: enough to tell the kind
BUFFER_SENDER = 16 * 1024  # a sender's, until its stream proves long
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

    def named(self, conn: Connection) -> str | None: ...  # a proxy named the sender: None, or why refused

    def forget(self, conn: Connection) -> None: ...

    def finalize(self, received: Received, on_durable: Durable | None) -> None: ...

    def new_capture(self, conn: Connection) -> Capture: ...  # OSError when it cannot be stored

    def reject(self, conn: Connection, reason: str) -> Capture | None: ...  # None: counted in another

    def drain_refusals(self) -> bool: ...  # False while too many refused senders are being drained

    def refused(self, peer: str, reason: str) -> None: ...  # say it (a flood of them in few lines)


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
    header_problems: tuple[str, ...] = ()  # what the header line got wrong (never its text)


def normalize_peer(host: str) -> str:
    ip = ipaddress.ip_address(host.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip)


class Connection(asyncio.BufferedProtocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.settings = server.settings
        self._buf = bytearray(FIRST_BUFFER)
        self._fill = 0
        self.kind: str | None = None  # header, tar, gzip, raw; with a header: "header+tar" etc.
        self.header: dict[str, str] | None = None  # the RESCUE/1 fields, once a header line was read
        self.header_problems: list[str] = []
        self.rejection: str | None = None  # why the token refused the stream
        self.received = 0  # bytes off the wire, header included
        self.bytes = 0  # body bytes stored
        self._written_back = 0
        self.started = time.monotonic()
        self.last_data = self.started
        self.first_block: float | None = None  # when the stream's kind was known: a sender, not a loiterer
        self.capture: Capture | None = None
        self.sink: FileWriter | None = None
        self.raw_name: str | None = None
        self.done = False
        self.closing_when_durable = False  # ended whole: our close waits for the bytes to be on disk
        self.refused = False  # the sender was told why we end the stream
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
            self._turn_away(reason)
            return
        if not self.via_proxy:
            self.server.events.event("connection", None, peer=self.peer)

    def _turn_away(self, reason: str) -> None:
        """Refuse the connection before any of its stream is kept: told, reset, and said (counted)."""
        self.done = True
        self.server.forget(self)
        self._refuse(reason)
        self.server.refused(self.peer, reason)

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buf)[self._fill :]

    def buffer_updated(self, nbytes: int) -> None:
        if self.done:
            self._fill = 0  # a refused sender: what it still sends is read and dropped
            return
        self._fill += nbytes
        self.received += nbytes
        self.last_data = time.monotonic()
        try:
            if self.via_proxy and self.kind is None and not self._read_proxy_header(eof=False):
                return
            if self.kind is None and not self._detect(eof=False):
                if self._fill == len(self._buf):  # cannot happen with MAX_HEADER < FIRST_BUFFER; be safe
                    self._detect(eof=True)
                return
            if self._fill >= min(FLUSH_AT, len(self._buf)):
                self._flush()
        except OSError as e:
            self._fail_io(e)

    def eof_received(self) -> bool:
        """True keeps our side open: for a refused sender until its reset, for a stream that ended whole
        until its bytes are on disk (durable())."""
        if self.done:
            return True  # a refused sender finished sending: the reset after the line closes it
        if self.kind is None and self._fill == 0 and self.header is None:
            self.done = True  # connected and sent nothing (a port probe): nothing to store
            self.server.forget(self)
            return False
        try:
            if self.via_proxy and self.kind is None and not self._read_proxy_header(eof=True):
                return self.refused  # ended here: kept open only until a refused sender's reset
            if self.kind is None:
                self._detect(eof=True)
            self._flush()
        except OSError as e:
            self._fail_io(e)
            return True
        if self.done:
            return True  # refused while telling the kind (a token, a disk that cannot store it)
        if self.header and "incomplete" in self.header:
            # A replay of an incomplete capture stays incomplete: kept as sent, so closed cleanly.
            reason = "sent as incomplete (a replay of an incomplete capture)"
            self.finish(Status.INCOMPLETE, reason, tell=False)
        else:
            self.finish(Status.COMPLETE, None)
        return self.closing_when_durable or self.refused

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.forget(self)
        if self.kind is None and self._fill == 0 and self.header is None:
            self.done = True
        if not self.done:
            with contextlib.suppress(OSError):  # what did reach the file is counted all the same
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
            if eof:  # ended before any byte: nothing to store
                self.done = True
                self.server.forget(self)
            return False
        rest = self._buf[header.length : self._fill]
        self._buf[: len(rest)] = rest
        self._fill = len(rest)
        if header.source is not None:
            self.peer = normalize_peer(header.source)
        via, self.via_proxy = self.via_proxy, None
        reason = self.server.named(self)  # --allow and --max-per-peer, now that the sender is known
        if reason:
            self._turn_away(reason)
            return False
        self.server.events.event("connection", None, peer=self.peer, proxy=via)
        if eof and not self._fill:
            self.done = True  # the proxy's own probe, or a sender that sent nothing: nothing to store
            self.server.forget(self)
            return False
        return True

    def _detect(self, *, eof: bool) -> bool:
        """Decide the stream kind from the buffered prefix; open the capture and its sink."""
        prefix = bytes(self._buf[: self._fill])
        kind = wire.detect_kind(prefix, eof, header_allowed=self.header is None)
        if kind is None:
            return False
        if kind == "header":
            line, _, rest = prefix.partition(b"\n")
            self.header, self.header_problems = wire.parse_header(line)
            problem = token_problem(self.settings.token, self.header)
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
        try:
            capture = self.server.new_capture(self)
        except OSError as e:
            self._cannot_store(e)
            return True
        self.kind = kind if self.header is None else f"header+{kind}"
        self.capture = capture
        self.first_block = time.monotonic()
        try:
            if kind == "raw":
                self.raw_name = self._raw_name(prefix)
                self.sink = FileWriter(capture.path, self.raw_name)
            else:
                self.sink = FileWriter(capture.path, SPOOL if kind == "tar" else SPOOL + ".gz")
        except OSError as e:
            self._fail_io(e)
            return True
        bigger = bytearray(BUFFER_SENDER)  # a sender after all: a sender's buffer
        bigger[: self._fill] = self._buf[: self._fill]
        self._buf = bigger
        return True

    def _cannot_store(self, e: OSError) -> None:
        """No capture directory can be made (a full disk, a link planted in --dir): say so, both ways."""
        reason = f"cannot store the stream: {e.strerror or e}"
        self.server.events.event("error", f"{self.peer}: {reason}", peer=self.peer, error=reason)
        self.done = True
        self.server.forget(self)
        self._refuse(reason)

    def _raw_name(self, prefix: bytes) -> str:
        name = (self.header or {}).get("name")
        wanted = safe_relpath(name) if name else None
        if wanted and "/" not in wanted and wanted != SPOOL:
            return wanted
        return "dmesg.txt" if wire.looks_like_dmesg(prefix) else "stream.bin"

    def _flush(self) -> None:
        if self.sink is None or self._fill == 0:
            return
        data = memoryview(self._buf)[: self._fill]
        room = self.settings.max_bytes - self.bytes
        over = len(data) > room
        try:
            self.sink.write(data[:room] if over else data)
        finally:
            self.bytes = self.sink.bytes  # what reached the file, also when the write failed part-way
            self._fill = 0
        if over and not self.done:
            self.finish(Status.INCOMPLETE, f"stopped at --max-bytes {human_size(self.settings.max_bytes)}")
        if self.received >= GROW_AFTER and len(self._buf) < BUFFER and not self.done:
            self._buf = bytearray(BUFFER)
        if self.bytes - self._written_back >= WRITEBACK_EVERY and self.sink is not None:
            self.sink.start_writeback()
            self._written_back = self.bytes

    def _reject(self, reason: str) -> None:
        """A stream the token refuses: a `rejected` capture records who and why (one per peer a minute)."""
        try:
            self.capture = self.server.reject(self, reason)
        except OSError:
            self.capture = None  # cannot even record it: the sender is still told
        self.kind = "raw" if self.header is None else "header"
        self.rejection = reason
        self.finish(Status.REJECTED, reason)

    def _fail_io(self, e: OSError) -> None:
        self.finish(Status.INCOMPLETE, io_reason(e))

    def finish(self, status: Status, reason: str | None, *, tell: bool = True) -> None:
        """Stop receiving and hand a Received to the server; a sender stopped by us is told why.

        A stream kept as it was sent (complete, or a replay sent as incomplete: tell=False) is closed
        cleanly once its bytes are on disk; any other end is a refusal line and a reset.
        """
        if self.done:
            return
        self.done = True
        self.server.forget(self)  # the slot is free at once, not when the refused sender is gone
        if self.kind is None and self._fill and status is not Status.REJECTED:
            # Ended before the kind could be told (a short stream cut, or idle): keep the bytes as they are.
            try:
                self._detect(eof=True)
                self._flush()
            except OSError as e:
                status, reason = Status.INCOMPLETE, io_reason(e)
            if self.rejection:  # the token decided, now that the kind is known
                status, reason = Status.REJECTED, self.rejection
        self._fill = 0
        self._buf = bytearray(256)  # nothing more is kept: a queue of finished senders costs no buffers
        as_sent = status is Status.COMPLETE or not tell
        if not as_sent and self.transport and not self.transport.is_closing():
            self._refuse(reason or str(status))
        if self.capture is None or self.kind is None:
            return  # nothing arrived that could be stored
        sink, self.sink = self.sink, None  # from here on the file belongs to finalize
        kind, header = Kind(self.kind), dict(self.header or {})
        problems = tuple(self.header_problems)
        received = Received(
            self.capture, self.peer, kind, header, self.bytes, sink, self.raw_name, status, reason, problems
        )
        self.closing_when_durable = as_sent
        self.server.finalize(received, self.durable if as_sent else None)

    def durable(self, error: OSError | None) -> None:
        """The stream is on disk (error None): close cleanly. It is not: the sender is told, then reset."""
        if self.transport is None or self.transport.is_closing():
            return
        if error is None:
            self.transport.close()
        else:
            self._refuse(f"not stored: {io_reason(error)}")

    def _refuse(self, reason: str) -> None:
        """Tell the sender in one line, read what it still sends for a moment, then reset the connection."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.refused:
            return  # one line per connection, the first reason found
        self.refused = True
        self._buf = bytearray(FIRST_BUFFER)  # what a refused sender still sends is dropped
        self._fill = 0
        refusal.refuse(transport, reason, drain=self.server.drain_refusals())

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

    def rate(self, now: float) -> float:
        return self.received / max(now - self.started, 1e-3)

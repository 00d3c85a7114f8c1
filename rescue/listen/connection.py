"""One connection: bytes in, one Received value out (asyncio's BufferedProtocol).

A connection starts with a small buffer, enough to tell the stream's kind, and takes a 128 KiB one once it
knows it has a sender: an idle flood of a thousand connections costs a few MiB. The stream is written
straight to a .partial file while it is hashed; at EOF the connection closes its side at once (busybox nc
waits for the peer to close) and hands what it received to the server, which finalizes it in a worker.
The connection never learns what became of it: finalize works on the Received value alone.

Whenever the listener (not the sender) ends a stream, the sender is told in one line,
`rescue: refused: REASON`, and what it still sends is read for a moment so that its nc prints the line;
then the connection is reset, so that a busybox nc still sending exits with status 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import ipaddress
import socket
import struct
import time
from dataclasses import dataclass
from typing import Protocol

from rescue.capture.manifest import Kind, Status
from rescue.capture.store import SPOOL, Capture, FileWriter, Store, safe_relpath
from rescue.listen import wire
from rescue.listen.config import Settings
from rescue.listen.events import Events
from rescue.units import human_size

BUFFER = 128 * 1024
FIRST_BUFFER = wire.MAX_HEADER + 1024  # a header line and a tar's first 262 bytes: enough to tell the kind
FLUSH_AT = 64 * 1024  # write and hash in chunks of at least this much: busybox nc sends 1 KiB at a time
REFUSAL_DRAIN = 1.0  # seconds a refused sender is still read (and ignored) so that its nc reads the line
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


class Server(Protocol):
    """What a connection asks of the server that accepted it (listen.server.ListenServer)."""

    settings: Settings
    events: Events
    store: Store

    def admit(self, conn: Connection) -> str | None: ...  # None, or why the peer is refused

    def forget(self, conn: Connection) -> None: ...

    def finalize(self, received: Received) -> None: ...

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


def io_reason(e: OSError) -> str:
    return "disk full" if e.errno == errno.ENOSPC else f"cannot write: {e.strerror}"


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
        self.started = time.monotonic()
        self.last_data = self.started
        self.first_block: float | None = None  # when the stream's kind was known: a sender, not a loiterer
        self.capture: Capture | None = None
        self.sink: FileWriter | None = None
        self.raw_name: str | None = None
        self.done = False
        self.refused = False  # the sender was told why we end the stream
        self.transport: asyncio.Transport | None = None
        self.peer = "?"

    # asyncio callbacks ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = normalize_peer(transport.get_extra_info("peername")[0])
        reason = self.server.admit(self)
        if reason:
            self.done = True
            self._refuse(reason)
            self.server.refused(self.peer, reason)
            return
        self.server.events.event("connection", None, peer=self.peer)

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
            if self.kind is None and not self._detect(eof=False):
                if self._fill == len(self._buf):  # cannot happen with MAX_HEADER < BUFFER; be safe
                    self._detect(eof=True)
                return
            if self._fill >= FLUSH_AT:
                self._flush()
        except OSError as e:
            self._fail_io(e)

    def eof_received(self) -> bool:
        if self.done:
            return True  # a refused sender finished sending: the reset after the line closes it
        if self.kind is None and self._fill == 0 and self.header is None:
            self.done = True  # connected and sent nothing (a port probe): nothing to store
            self.server.forget(self)
            return False
        try:
            if self.kind is None:
                self._detect(eof=True)
            self._flush()
        except OSError as e:
            self._fail_io(e)
            return True
        if self.done:
            return True  # refused while telling the kind (a token, a disk that cannot store it)
        if self.header and "incomplete" in self.header:
            # A replay of an incomplete capture stays incomplete.
            reason = "sent as incomplete (a replay of an incomplete capture)"
            self.finish(Status.INCOMPLETE, reason, tell=False)
        else:
            self.finish(Status.COMPLETE, None)
        return False  # close our side now: busybox nc exits only when we do

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

    def _detect(self, *, eof: bool) -> bool:
        """Decide the stream kind from the buffered prefix; open the capture and its sink."""
        prefix = bytes(self._buf[: self._fill])
        kind = wire.detect_kind(prefix, eof, header_allowed=self.header is None)
        if kind is None:
            return False
        if kind == "header":
            line, _, rest = prefix.partition(b"\n")
            self.header, self.header_problems = wire.parse_header(line)
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
        big = bytearray(BUFFER)  # a sender after all: the full buffer
        big[: self._fill] = self._buf[: self._fill]
        self._buf = big
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

    def _check_token(self) -> str | None:
        """None when the stream may be kept; else why not. Any doubt refuses: the check never fails open."""
        want = self.settings.token
        if not want:
            return None
        got = (self.header or {}).get("token", "")
        try:
            if hmac.compare_digest(got.encode(), want.encode()):
                return None
        except Exception:  # a token of a strange type must refuse, not wave the stream through
            return "the token could not be checked"
        return "wrong token" if got else "missing token"

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
        """Stop receiving and hand a Received to the server; a sender stopped by us is told why."""
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
        if tell and self.transport and not self.transport.is_closing() and status is not Status.COMPLETE:
            self._refuse(reason or str(status))
        if self.capture is None or self.kind is None:
            return  # nothing arrived that could be stored
        sink, self.sink = self.sink, None  # from here on the file belongs to finalize
        kind, header = Kind(self.kind), dict(self.header or {})
        body, name = self.bytes, self.raw_name
        problems = tuple(self.header_problems)
        self.server.finalize(
            Received(self.capture, self.peer, kind, header, body, sink, name, status, reason, problems)
        )

    def _refuse(self, reason: str) -> None:
        """Tell the sender in one line, read what it still sends for a moment, then reset the connection."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.refused:
            return  # one line per connection, the first reason found
        self.refused = True
        self._buf = bytearray(FIRST_BUFFER)  # what a refused sender still sends is dropped
        self._fill = 0
        with contextlib.suppress(Exception):
            transport.write(f"rescue: refused: {reason}\n".encode())
        if self.server.drain_refusals():
            # Read for a while (nc prints the line when it next polls), then stop reading so that a sender
            # still sending blocks in write(): the reset then fails that write, and busybox nc exits 1.
            loop = asyncio.get_running_loop()
            loop.call_later(REFUSAL_DRAIN / 2, self._stop_reading)
            loop.call_later(REFUSAL_DRAIN, self._reset)
        else:
            self._reset()

    def _stop_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(Exception):
                self.transport.pause_reading()

    def _reset(self) -> None:
        """Close with a reset (SO_LINGER 0): a busybox nc still writing then exits 1, not 0."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        transport.abort()

    def checkpoint(self, now: float) -> None:
        """Once a second: put buffered bytes on disk, so a KILL loses at most about a second of data.

        A short stream that went quiet before its kind could be told is taken as raw (a tar sender
        writes its first 512-byte header block in one go).
        """
        if self.done or not self._fill:
            return
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

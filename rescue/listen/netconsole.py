"""The netconsole endpoint of `rescue listen`: kernel messages over UDP, one stream per sender, written as
netconsole.log into a capture of that machine and boot, diagnosed when the sender goes quiet or panics.

A stream is tied to its boot by the hooks' `rescue: boot=... machine=...` line; until that line is seen its
lines are held per source address (bounded), then the capture is named after the address. A TCP bundle whose
header carries the same `boot=` takes the stream in: netconsole.log moves into the bundle's capture.

Memory is bounded whatever arrives: at most MAX_SENDERS streams (the least recently heard is closed first),
each with bounded buffers (listen.netconsole_stream), and at most MAX_HELD bytes held by all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

from rescue.capture.manifest import Manifest, Status, read_manifest
from rescue.capture.store import Store
from rescue.errors import RescueError
from rescue.listen.config import Settings
from rescue.listen.connection import normalize_peer
from rescue.listen.events import Events
from rescue.listen.finalize import analyze_capture
from rescue.listen.netconsole_capture import LOG, NetCapture
from rescue.listen.netconsole_stream import Fed, Stream

MAX_SENDERS = 1024
MAX_HELD = 32 << 20  # bytes held in memory by all streams together
HOLD_BYTES = 64 * 1024  # lines held per sender before its identity line; then named after its address
HOLD_SECONDS = 5.0
MAX_LOG_BYTES = 64 << 20  # netconsole.log per boot
PANIC_GRACE = 2.0  # seconds after "Kernel panic - not syncing" for the rest of the trace, if no end line
TICK = 0.25
RECEIVE_BUFFER = 32 << 20  # kernel memory, used only while the loop is behind: about 3 s at 10,000 lines/s
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
MAX_BOOTS = 4096  # boots remembered to join streams and bundles
ANONYMOUS_BURST = 16  # captures named after an address (no identity line) at once, then one per second


class Host(Protocol):
    """What the endpoint asks of the server (listen.server.ListenServer)."""

    settings: Settings
    events: Events
    store: Store


class Sender:
    def __init__(self, address: str, now: float) -> None:
        self.stream = Stream(address, now)
        self.capture: NetCapture | None = None


class NetconsoleEndpoint(asyncio.DatagramProtocol):
    def __init__(self, host: Host) -> None:
        self.host = host
        self.senders: OrderedDict[str, Sender] = OrderedDict()
        self.boots: OrderedDict[str, NetCapture] = OrderedDict()  # boot id -> its stream's capture
        self.bundles: OrderedDict[str, Path] = OrderedDict()  # boot id -> the TCP bundle's capture
        self.stats = {"datagrams": 0, "refused": 0, "dropped_lines": 0, "senders": 0}
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: set[asyncio.Future[Any]] = set()
        self._anonymous_tokens = float(ANONYMOUS_BURST)
        self._last_refill = 0.0
        self._held = 0
        self._ticker: asyncio.Task[None] | None = None

    # lifecycle ----------------------------------------------------------------------------------

    async def start(self, bind: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(bind, port))
        self.transport = transport
        sock = transport.get_extra_info("socket")
        # A panic's trace arrives as a burst of small datagrams: room for them while the loop is busy
        # (FORCE, as root, may pass net.core.rmem_max; the plain option is capped by it).
        for option in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, RECEIVE_BUFFER)
                break
        self._ticker = asyncio.ensure_future(self._tick())
        return int(transport.get_extra_info("sockname")[1])

    async def close(self) -> None:
        """Stop receiving; every open stream is closed and written, then analysed."""
        if self.transport:
            self.transport.close()
        if self._ticker:
            self._ticker.cancel()
        for address in list(self.senders):
            self._retire(address, "the listener was stopped", Status.INCOMPLETE)
        while self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)

    def summary(self) -> str:
        """For the status line (SIGUSR1)."""
        s = self.stats
        return (
            f"netconsole: {len(self.senders)} streaming, {s['datagrams']} datagrams, {s['refused']} refused, "
            f"{s['dropped_lines']} lines dropped"
        )

    # input --------------------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.stats["datagrams"] += 1
        host = str(addr[0])
        peer = normalize_peer(host) if ":" in host else host  # the kernel's IPv4 text is canonical
        if not self.host.settings.allows(peer):
            self.stats["refused"] += 1
            return
        now = time.monotonic()
        sender = self.senders.get(peer)
        if sender is None:
            sender = self._new_sender(peer, now)
        else:
            self.senders.move_to_end(peer)
        before = sender.stream.held_bytes()
        if sender.stream.feed(data, now) is Fed.NEW_BOOT:
            self._retire(peer, "the sender booted again")
            sender = self._new_sender(peer, now)
            before = 0
            sender.stream.feed(data, now)
        self._deliver(sender, now)
        self._held += sender.stream.held_bytes() - before
        while self._held > MAX_HELD and len(self.senders) > 1:
            self._retire(next(iter(self.senders)), "evicted: the listener holds too much netconsole data")

    def _new_sender(self, peer: str, now: float) -> Sender:
        while len(self.senders) >= MAX_SENDERS:
            self._retire(next(iter(self.senders)), "evicted: too many netconsole senders")
        self.stats["senders"] += 1
        sender = self.senders[peer] = Sender(peer, now)
        return sender

    def _deliver(self, sender: Sender, now: float) -> None:
        """Lines go to the capture once the stream knows its boot (or has held enough without)."""
        stream = sender.stream
        if sender.capture is None:
            held_long = stream.out_bytes >= HOLD_BYTES or now - stream.started >= HOLD_SECONDS
            if stream.identity is None and not (stream.out and held_long):
                return
            sender.capture = self._open(stream, now)
            if sender.capture is None:
                if stream.out_bytes > HOLD_BYTES:  # nowhere to put them (a flood): bounded, counted
                    self.stats["dropped_lines"] += len(stream.take())
                return
        elif stream.identity is not None and "boot" not in sender.capture.header:
            # Named after its address, then the identity line came (late, or reordered): a bundle of
            # that boot can still take the stream in.
            boot, machine = stream.identity
            sender.capture.header.update(boot=boot, machine=machine)
            self._remember(self.boots, boot, sender.capture)
        lines = stream.take()
        try:
            sender.capture.write(lines)
        except OSError as e:
            self.stats["dropped_lines"] += len(lines)
            self._error(f"cannot write {LOG}: {e.strerror}")

    def _open(self, stream: Stream, now: float) -> NetCapture | None:
        header = {"source": "netconsole"}
        if stream.identity is not None:
            boot, machine = stream.identity
            known = self.boots.get(boot)
            if known is not None:  # the same boot came back (from another address, or after eviction)
                self.boots.move_to_end(boot)
                return known
            header.update(boot=boot, machine=machine)
        elif not self._anonymous_allowed(now):
            return None  # a flood of unnamed senders: hold (bounded) until quiet, then drop
        bundle = self.bundles.get(header.get("boot", ""))
        try:
            cap = NetCapture(self.host.store, stream.address, header, MAX_LOG_BYTES, bundle)
        except OSError as e:
            self._error(f"cannot create a capture: {e.strerror}")
            return None
        if "boot" in header:
            self._remember(self.boots, header["boot"], cap)
        self.host.events.event(
            "netconsole",
            f"netconsole from {stream.address} ({_who(header)}) -> {cap.path}",
            peer=stream.address,
            path=str(cap.path),
            **{k: header[k] for k in ("boot", "machine") if k in header},
        )
        return cap

    def _error(self, text: str) -> None:
        self.host.events.event("error", f"netconsole: {text}", error=text)

    def _anonymous_allowed(self, now: float) -> bool:
        """A token bucket: a flood of senders that never name their boot cannot make directories fast."""
        refilled = self._anonymous_tokens + (now - self._last_refill)
        self._anonymous_tokens = min(float(ANONYMOUS_BURST), refilled)
        self._last_refill = now
        if self._anonymous_tokens < 1:
            return False
        self._anonymous_tokens -= 1
        return True

    # time ---------------------------------------------------------------------------------------

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            self.tick(time.monotonic())

    def tick(self, now: float) -> None:
        quiet = self.host.settings.netconsole_quiet
        for address, sender in list(self.senders.items()):
            stream = sender.stream
            before = stream.held_bytes()
            stream.tick(now)
            self._deliver(sender, now)
            self._held += stream.held_bytes() - before
            cap = sender.capture
            if cap is not None and cap.log.open:
                try:
                    cap.log.flush()  # a KILL loses at most a tick of what arrived
                except OSError as e:
                    self._error(f"cannot write {LOG} in {cap.path}: {e.strerror}")
            if cap is not None and cap.finished:
                continue
            if stream.panic_ended or (stream.panic_at is not None and now - stream.panic_at >= PANIC_GRACE):
                # Said once: what trickles in after it reopens the capture, and quiet ends it again.
                stream.panic_at, stream.panic_ended = None, False
                self._finish(sender, "the kernel panicked")
            elif now - stream.last_seen >= quiet:
                if cap is None:  # never named: kept by its address (or dropped in a flood), then forgotten
                    self._retire(address, f"sender quiet for {quiet:g}s")
                else:
                    self._finish(sender, f"sender quiet for {quiet:g}s")

    def _finish(self, sender: Sender, reason: str, status: Status = Status.COMPLETE) -> None:
        stream = sender.stream
        stream.close()
        if sender.capture is None and stream.out:
            sender.capture = self._open(stream, time.monotonic())  # quiet before its identity: by address
        if sender.capture is None:
            self.stats["dropped_lines"] += len(stream.take())
            return
        self._deliver(sender, time.monotonic())
        cap = sender.capture
        if stream.lost or stream.duplicates or stream.late:
            reason += f"; {stream.lost} lost, {stream.duplicates} duplicates, {stream.late} late"
        try:
            cap.finish(status, reason, stream.bytes)
        except OSError as e:
            self._error(f"cannot finish {cap.path}: {e.strerror}")
            return
        self._analyse(cap, stream)

    def _retire(self, address: str, reason: str, status: Status = Status.COMPLETE) -> None:
        """The sender leaves the table; its stream is finished (written, analysed) unless it was already."""
        sender = self.senders.pop(address, None)
        if sender is None:
            return
        self._held -= sender.stream.held_bytes()
        cap = sender.capture
        if cap is None or not cap.finished:
            self._finish(sender, reason, status)
        if sender.capture is not None and sender.capture.log.open:
            sender.capture.log.close()

    # analysis and the bundle of the same boot -----------------------------------------------------

    def _analyse(self, cap: NetCapture, stream: Stream) -> None:
        loop = asyncio.get_running_loop()
        path = cap.path
        fut = loop.run_in_executor(None, _analysis, path)
        self.pending.add(fut)
        fut.add_done_callback(lambda f: self._analysed(f, cap, stream))

    def _analysed(self, fut: asyncio.Future[dict[str, Any]], cap: NetCapture, stream: Stream) -> None:
        self.pending.discard(fut)
        try:
            manifest = cap.record(fut.result())
        except OSError as e:
            self._error(f"cannot write the manifest of {cap.path}: {e.strerror}")
            return
        if manifest is not None:
            self._capture_event(cap, manifest, stream)

    def _capture_event(self, cap: NetCapture, m: Manifest, stream: Stream) -> None:
        analysis = m.analysis or {}
        headline = analysis.get("headline")
        line = f"{cap.path}: netconsole {stream.messages} messages, {stream.lost} lost; {cap.reason}"
        self.host.events.event(
            "capture",
            f"{line}\n  -> {headline}" if headline else line,
            path=str(cap.path),
            peer=cap.peer,
            status=str(m.status),
            reason=cap.reason,
            kind=str(m.kind) if m.kind else None,
            files=[f.name for f in m.files],
            bytes=cap.log.bytes,
            messages=stream.messages,
            lost=stream.lost,
            duplicates=stream.duplicates,
            findings=[f.get("id") for f in analysis.get("findings", [])],
            headline=headline,
        )

    def bundle_arrived(self, path: Path, header: dict[str, str]) -> None:
        """A TCP bundle was stored: the stream of the same boot joins its capture."""
        boot = header.get("boot", "").lower()
        if not boot:
            return
        self._remember(self.bundles, boot, path)
        cap = self.boots.get(boot)
        if cap is None or not cap.own:
            return
        try:
            old = cap.join(path)
        except OSError as e:
            self._error(f"cannot move {LOG} into {path}: {e.strerror}")
            return
        self.host.events.event(
            "netconsole", f"netconsole of boot {boot} joined {path}", path=str(path), old=str(old), boot=boot
        )
        if cap.finished:
            stream = next((s.stream for s in self.senders.values() if s.capture is cap), Stream(cap.peer, 0))
            self._analyse(cap, stream)

    @staticmethod
    def _remember(table: OrderedDict[str, Any], key: str, value: Any) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > MAX_BOOTS:
            table.popitem(last=False)


def _who(header: dict[str, str]) -> str:
    if "boot" in header:
        return f"machine {header['machine']}, boot {header['boot']}"
    return "no identity line: named after its address"


def _analysis(path: Path) -> dict[str, Any]:
    """The capture's analysis as it stands on disk (a bundle's files and netconsole.log together)."""
    try:
        manifest = read_manifest(path)[1]
    except RescueError as e:
        return {"error": f"analysis failed: {e}"}
    return analyze_capture(path, manifest)

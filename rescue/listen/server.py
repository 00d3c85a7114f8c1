"""`rescue listen`: receive what busybox nc sends, store it safely, analyse it.

One asyncio server, one BufferedProtocol per connection (a 128 KiB buffer each keeps 200 senders in a few
MiB), writes straight to a .partial file while hashing; at EOF it closes its side at once (busybox nc waits
for the peer to close), then a worker thread fsyncs, renames, extracts tars, verifies and analyses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import hmac
import ipaddress
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rescue.capture.store import Capture, FileWriter, Store, StoredFile, iso, safe_relpath, verify_sha256sums
from rescue.diagnose.analyze import analyze_path
from rescue.errors import RescueError
from rescue.listen import netinfo
from rescue.listen import wire as protocol
from rescue.listen.config import Settings, build_settings, warn_visible_token
from rescue.listen.events import Reporter, human_size

BUFFER = 128 * 1024
FLUSH_AT = 64 * 1024  # write and hash in chunks of at least this much: busybox nc sends 1 KiB at a time
BACKLOG = 512  # 200 simultaneous senders must not see resets
SPOOL = "stream.tar"


def normalize_peer(host: str) -> str:
    ip = ipaddress.ip_address(host.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip)


def _io_reason(e: OSError) -> str:
    return "disk full" if e.errno == errno.ENOSPC else f"cannot write: {e.strerror}"


class Connection(asyncio.BufferedProtocol):
    def __init__(self, server: ListenServer) -> None:
        self.server = server
        self.settings = server.settings
        self._buf = bytearray(BUFFER)
        self._fill = 0
        self.kind: str | None = None  # header, tar, gzip, raw; with a header: "header+tar" etc.
        self.header: dict[str, str] | None = None  # the RESCUE/1 fields, once a header line was read
        self.received = 0  # bytes off the wire, header included
        self.bytes = 0  # body bytes stored
        self.started = time.monotonic()
        self.last_data = self.started
        self.capture: Capture | None = None
        self.sink: FileWriter | None = None
        self.raw_name: str | None = None
        self.done = False
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
            transport.abort()
            self.server.reporter.event(
                "refused", f"refused {self.peer}: {reason}", peer=self.peer, reason=reason
            )
            return
        self.server.reporter.event("connection", None, peer=self.peer)

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buf)[self._fill :]

    def buffer_updated(self, nbytes: int) -> None:
        if self.done:
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
        if self.kind is None and self._fill == 0 and self.header is None:
            self.done = True  # connected and sent nothing (a port probe): nothing to store
            return False
        if not self.done:
            try:
                if self.kind is None:
                    self._detect(eof=True)
                self._flush()
            except OSError as e:
                self._fail_io(e)
                return False
            self.finish("complete", None)
        return False  # close our side now: busybox nc exits only when we do

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.forget(self)
        if self.kind is None and self._fill == 0 and self.header is None:
            self.done = True
        if not self.done:
            with contextlib.suppress(OSError):
                self._flush()
            reason = f"connection cut: {exc}" if exc else "connection closed before the end of the stream"
            self.finish("incomplete", reason)

    # the stream ---------------------------------------------------------------------------------

    def _detect(self, *, eof: bool) -> bool:
        """Decide the stream kind from the buffered prefix; open the capture and its sink."""
        prefix = bytes(self._buf[: self._fill])
        kind = protocol.detect_kind(prefix, eof)
        if kind is None:
            return False
        if kind == "header" and self.header is None:
            line, _, rest = prefix.partition(b"\n")
            try:
                self.header = protocol.parse_header(line)
            except protocol.HeaderError as e:
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
        self.capture = self.server.store.new_capture(self.peer, time.time())
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
        return "dmesg.txt" if protocol.looks_like_dmesg(prefix) else "stream.bin"

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
            self.finish("incomplete", f"stopped at --max-bytes {human_size(self.settings.max_bytes)}")

    def _reject(self, reason: str) -> None:
        self.capture = self.server.store.new_capture(self.peer, time.time())
        self.kind = "raw" if self.header is None else "header"
        self.finish("rejected", reason)

    def _fail_io(self, e: OSError) -> None:
        self.finish("incomplete", _io_reason(e))

    def finish(self, status: str, reason: str | None) -> None:
        """Stop receiving (closing the connection if it is still open) and finalise in a worker thread."""
        if self.done:
            return
        self.done = True
        if self.kind is None and self._fill and status != "rejected":
            # Ended before the kind could be told (a short stream cut, or idle): keep the bytes as they are.
            try:
                self._detect(eof=True)
                self._flush()
            except OSError as e:
                status, reason = "incomplete", _io_reason(e)
        if self.transport and not self.transport.is_closing() and status != "complete":
            self.transport.abort()
        self.server.finalize(self, status, reason)

    def checkpoint(self, now: float) -> None:
        """Once a second: put buffered bytes on disk, so a KILL loses at most about a second of data.

        A short stream that went quiet before its kind could be told is taken as raw (a tar sender
        writes its first 512-byte header block in one go).
        """
        if self.done or not self._fill:
            return
        try:
            if self.kind is None:
                prefix = bytes(self._buf[: min(self._fill, len(protocol.HEADER_MAGIC))])
                if now - self.last_data < 1 or protocol.HEADER_MAGIC.startswith(prefix):
                    return
                self._detect(eof=True)
            self._flush()
        except OSError as e:
            self._fail_io(e)

    def idle_for(self, now: float) -> float:
        return now - self.last_data


class ListenServer:
    def __init__(self, settings: Settings, reporter: Reporter, cli: dict[str, Any]) -> None:
        self.settings = settings
        self._cli = cli  # the flags given on the command line, re-applied over the config file on reload
        self.reporter = reporter
        self.store = Store(settings.dir)
        self.connections: set[Connection] = set()
        self.pending: set[asyncio.Future[Capture | None]] = set()
        self.stats = {"connections": 0, "bytes": 0, "complete": 0, "incomplete": 0, "rejected": 0}
        self.started = time.time()
        self.server: asyncio.Server | None = None
        self.stopping = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    def admit(self, conn: Connection) -> str | None:
        if self.server is None or not self.server.is_serving():
            return "shutting down"
        if not self.settings.allows(conn.peer):
            return "address not in --allow"
        if len(self.connections) >= self.settings.max_connections:
            return f"too many connections (--max-connections {self.settings.max_connections})"
        self.connections.add(conn)
        self.stats["connections"] += 1
        return None

    def forget(self, conn: Connection) -> None:
        self.connections.discard(conn)

    def finalize(self, conn: Connection, status: str, reason: str | None) -> None:
        sink = conn.sink
        conn.sink = None
        fut = self.loop.run_in_executor(None, self._finalize_blocking, conn, sink, status, reason)
        self.pending.add(fut)
        fut.add_done_callback(lambda f: self._finalized(f, conn))

    def _finalize_blocking(
        self, conn: Connection, sink: FileWriter | None, status: str, reason: str | None
    ) -> Capture | None:
        cap = conn.capture
        if cap is None:  # nothing arrived at all: no capture
            return None
        files: list[StoredFile] = []
        skipped: list[dict[str, str]] = []
        sums = "absent"
        problems: list[str] = []
        try:
            if sink is not None and conn.kind and conn.kind.endswith("raw"):
                files.append(sink.commit() if status == "complete" else sink.keep_partial())
            elif sink is not None:
                status, reason, files, skipped = self._unpack(conn, sink, status, reason)
            hashes = {f.name: f.sha256 for f in files}
            if "SHA256SUMS" in hashes:
                sums, problems = verify_sha256sums(
                    (cap.path / "SHA256SUMS").read_text(errors="replace"), hashes
                )
        except OSError as e:
            status, reason = "incomplete", _io_reason(e)
        cap.manifest.update(
            ended=iso(time.time()),
            kind=conn.kind,
            header={k: v for k, v in (conn.header or {}).items() if k != "token"},
            stream={"bytes": conn.bytes},
            files=[f.to_json() for f in files],
            status=status,
            reason=reason,
            sha256sums=sums,
        )
        if problems:
            cap.manifest["sha256sums_problems"] = problems
        if skipped:
            cap.manifest["skipped"] = skipped
        if status != "rejected" and files:
            with contextlib.suppress(OSError):  # the analysis reads the capture's status from it
                cap.write_manifest(durable=False)
            cap.manifest["analysis"] = analyze_capture(cap.path)
        try:
            cap.write_manifest()
        except OSError as e:
            # Disk full even for the manifest: the files are there; say so rather than lose them quietly.
            cap.manifest["manifest_error"] = e.strerror
        return cap

    def _unpack(
        self, conn: Connection, spool: FileWriter, status: str, reason: str | None
    ) -> tuple[str, str | None, list[StoredFile], list[dict[str, str]]]:
        """Extract a tar (or gzip'd tar) spool; keep the spool itself whenever extraction was not whole."""
        assert conn.capture is not None
        spool.close()
        path = spool.partial
        gz = path.name.startswith(SPOOL + ".gz")
        if gz and protocol.gzip_holds_tar(path):
            conn.kind = (conn.kind or "gzip").replace("gzip", "tar.gz")
        elif gz:
            if status != "complete":
                return status, reason, [spool.keep_partial()], []
            return status, reason, [spool.commit(conn.raw_name or "stream.gz")], []
        result = protocol.extract_tar(
            path,
            conn.capture.path,
            max_members=self.settings.max_members,
            legacy_encoding=self.settings.legacy_encoding,
        )
        files = result.files
        if result.error or status != "complete":
            if status == "complete":
                status, reason = "incomplete", result.error
            files.append(spool.keep_partial())  # the wire bytes, for a person to look at
        else:
            path.unlink()
        return status, reason, files, result.skipped

    def _finalized(self, fut: asyncio.Future[Capture | None], conn: Connection) -> None:
        self.pending.discard(fut)
        if fut.exception():
            exc = fut.exception()
            self.reporter.event(
                "error", f"error finishing a capture from {conn.peer}: {exc}", peer=conn.peer, error=str(exc)
            )
            return
        cap = fut.result()
        if cap is None:
            return
        m = cap.manifest
        self.stats[m["status"]] = self.stats.get(m["status"], 0) + 1
        self.stats["bytes"] += conn.bytes
        analysis = m.get("analysis") or {}
        headline = analysis.get("headline")
        ids = [f.get("id") for f in analysis.get("findings", [])]
        self.reporter.end_progress()
        self.reporter.event(
            "capture",
            capture_summary(cap.path, m, self.settings.dir),
            path=str(cap.path),
            peer=conn.peer,
            status=m["status"],
            reason=m.get("reason"),
            kind=m.get("kind"),
            files=[f["name"] for f in m["files"]],
            bytes=conn.bytes,
            sha256sums=m.get("sha256sums"),
            findings=ids,
            headline=headline,
        )

    # lifecycle ----------------------------------------------------------------------------------

    async def serve(self) -> None:
        self.store.check_writable()
        for path in self.store.recover():
            self.reporter.event(
                "recovered", f"marked {path} incomplete (the listener stopped during it)", path=str(path)
            )
        try:
            inherited = systemd_socket()
            if inherited is not None:  # socket activation: systemd bound the port; --bind/--port do not apply
                self.server = await self.loop.create_server(
                    lambda: Connection(self), sock=inherited, backlog=BACKLOG
                )
            else:
                self.server = await self.loop.create_server(
                    lambda: Connection(self),
                    self.settings.bind,
                    self.settings.port,
                    backlog=BACKLOG,
                    reuse_address=True,
                )
        except OSError as e:
            where = f"{self.settings.bind}:{self.settings.port}"
            raise RescueError(
                f"cannot listen on {where}: {os.strerror(e.errno) if e.errno else e}",
                hint="another listener may be running; pick another --port",
            ) from None
        port = self.server.sockets[0].getsockname()[1]
        self._install_signals()  # before "listening" is said: a HUP right after must find its handler
        await self.announce(port)
        ticker = asyncio.ensure_future(self._tick())
        try:
            await self.stopping.wait()
            await self._drain()
        finally:
            ticker.cancel()
        self.reporter.event("stopped", "stopped", **self.stats)

    async def announce(self, port: int) -> None:
        """Say where we listen and what to type on the rescue shell; the JSON event last, once all is said."""
        s = self.settings
        r = self.reporter
        r.say(f"rescue listening on {s.bind}:{port}, storing under {s.dir}")
        try:
            # pyroute2's synchronous API runs its own event loop: keep it off ours.
            addresses = await self.loop.run_in_executor(None, netinfo.host_addresses, s.bind)
        except Exception as e:  # netlink can be unavailable in odd containers; the listener still works
            r.say(f"(cannot list host addresses: {e})")
            addresses = [netinfo.HostAddress("HOST", 0, "?", False)]
        best = addresses[0].address
        commands = netinfo.shell_instructions(
            best, port, token=bool(s.token), prefixlen=addresses[0].prefixlen
        )
        r.say("host addresses: " + ", ".join(map(str, addresses)))
        r.say(f"\nOn the broken machine's busybox shell, type (host {best}):")
        for line in commands:
            r.say("  " + line)
        if s.token:
            r.say("  (replace TOKEN with the value of --token)")
        r.say(f"Machines with the rescue hooks send by themselves (rescue.host={best} rescue.port={port}).")
        r.event(
            "listening",
            None,
            bind=s.bind,
            port=port,
            dir=str(s.dir),
            addresses=[a.address for a in addresses],
            commands=commands,
        )

    def _install_signals(self) -> None:
        handlers: dict[int, Callable[[], None]] = {
            signal.SIGTERM: self.stopping.set,
            signal.SIGINT: self.stopping.set,
            signal.SIGHUP: self.reload,
            signal.SIGUSR1: self.status,
        }
        for sig, handler in handlers.items():
            self.loop.add_signal_handler(sig, handler)

    async def _drain(self) -> None:
        """Stop accepting; let transfers in flight finish until the deadline; mark the rest incomplete."""
        assert self.server is not None
        self.server.close()
        deadline = time.monotonic() + self.settings.drain_timeout
        if self.connections:
            self.reporter.say(
                f"stopping: waiting up to {self.settings.drain_timeout:.0f}s for "
                f"{len(self.connections)} transfer(s)"
            )
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.finish("incomplete", "the listener was stopped during the transfer")
        while self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)

    async def _tick(self) -> None:
        """Once a second: close idle senders, show progress."""
        while True:
            await asyncio.sleep(1)
            now = time.monotonic()
            active = []
            for conn in list(self.connections):
                if conn.done:
                    continue
                if conn.idle_for(now) >= self.settings.idle_timeout:
                    idle = f"sender silent for {self.settings.idle_timeout:.0f}s (--idle-timeout)"
                    conn.finish("incomplete", idle)
                    continue
                conn.checkpoint(now)
                if now - conn.started >= 1 and conn.received:
                    rate = conn.received / (now - conn.started)
                    active.append(f"{conn.peer} {human_size(conn.received)} {human_size(rate)}/s")
                    if self.reporter.json_events:
                        self.reporter.event(
                            "progress", None, peer=conn.peer, bytes=conn.received, rate=round(rate)
                        )
            if active:
                self.reporter.progress("receiving: " + "; ".join(active))

    def reload(self) -> None:
        """SIGHUP: re-read the config file (flags given on the command line still win), reopen the log."""
        self.reporter.reopen_log()
        if self.settings.config is None and self.settings.token_file is None:
            self.reporter.event("reloaded", "reopened the log (no --config or --token-file to re-read)")
            return
        try:
            self.settings = build_settings(self._cli)  # validated whole before it replaces the old
        except RescueError as e:
            self.reporter.event("error", f"reload failed, keeping the old settings: {e}", error=str(e))
            return
        self.reporter.event(
            "reloaded",
            f"reloaded {self.settings.config or self.settings.token_file}",
            allow=[str(n) for n in self.settings.allow],
            token=bool(self.settings.token),
        )

    def status(self) -> None:
        s = self.stats
        active = sum(c.received for c in self.connections)
        self.reporter.end_progress()
        self.reporter.event(
            "status",
            f"status: {len(self.connections)} active, {human_size(s['bytes'] + active)} received, captures: "
            f"{s['complete']} complete, {s['incomplete']} incomplete, {s['rejected']} rejected; "
            f"up {time.time() - self.started:.0f}s",
            active=len(self.connections),
            bytes=s["bytes"] + active,
            **{k: s[k] for k in ("complete", "incomplete", "rejected")},
        )


def analyze_capture(path: Path) -> dict[str, Any] | None:
    """The analysis of a finished capture, for its manifest; an analysis failure never loses the capture."""
    try:
        report = analyze_path(path)
        return {**report.to_json(), "headline": report.headline()}
    except Exception as e:
        return {"error": f"analysis failed: {e}"}


def capture_summary(path: Path, m: dict[str, Any], root: Path) -> str:
    try:
        where = path.relative_to(root)
    except ValueError:
        where = path
    total = sum(f["bytes"] for f in m.get("files", []))
    parts = [f"{where}: {m['status']}", f"{len(m.get('files', []))} file(s), {human_size(total)}"]
    if m.get("sha256sums") != "absent":
        parts.append(f"SHA256SUMS {m['sha256sums']}")
    if m.get("reason"):
        parts.append(m["reason"])
    line = "; ".join(parts)
    headline = (m.get("analysis") or {}).get("headline")
    return f"{line}\n  -> {headline}" if headline else line


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


# CLI ----------------------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("listen", help="receive files from a rescue shell (busybox nc) and analyse them")
    p.add_argument("--bind", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="TCP port (default 3333; 0 picks a free one)")
    p.add_argument("--dir", help="where captures are stored (default ./captures)")
    p.add_argument(
        "--token-file",
        metavar="FILE",
        help="require the token in FILE in a 'RESCUE/1 token=...' header line (re-read on SIGHUP; "
        "or set RESCUE_TOKEN)",
    )
    p.add_argument("--token", help="the same, given on the command line (visible in ps: prefer --token-file)")
    p.add_argument(
        "--allow", action="append", default=[], metavar="CIDR", help="accept only these peers (repeatable)"
    )
    p.add_argument("--max-bytes", help="most bytes kept per connection (default 4G)")
    p.add_argument("--max-connections", type=int, help="most simultaneous senders (default 256)")
    p.add_argument("--idle-timeout", type=float, help="close a sender silent this many seconds (default 60)")
    p.add_argument(
        "--drain-timeout", type=float, help="on TERM/INT, wait this long for transfers (default 10)"
    )
    p.add_argument("--json", action="store_true", default=None, help="one JSON event per line on stdout")
    p.add_argument("--log", help="also append human-readable lines to this file (reopened on SIGHUP)")
    p.add_argument("--config", help="TOML file with token, allow, max_bytes, ... (re-read on SIGHUP)")
    p.set_defaults(func=cmd_listen)


def cmd_listen(args: argparse.Namespace) -> int:
    keys = (
        "bind",
        "port",
        "dir",
        "token",
        "token_file",
        "allow",
        "max_bytes",
        "max_connections",
        "idle_timeout",
        "drain_timeout",
        "json",
        "log",
        "config",
    )
    cli = {k: getattr(args, k) for k in keys}
    if args.token:
        warn_visible_token()
    settings = build_settings(cli)
    if not 0 <= settings.port <= 65535:
        raise RescueError(f"bad --port {settings.port}")
    reporter = Reporter(json_events=settings.json, log=settings.log)

    async def main() -> None:
        await ListenServer(settings, reporter, cli).serve()

    asyncio.run(main())
    return 0

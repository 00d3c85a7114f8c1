"""`rescue listen`: the server's lifecycle. Accept (or take systemd's socket), admit, tick, signals, drain.

Each connection (listen.connection) hands one Received to finalize (listen.finalize), which runs in a worker
thread; what it returns becomes a `capture` event (listen.events).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from rescue.capture.dirlock import DirectoryLock
from rescue.capture.manifest import Manifest, Status
from rescue.capture.store import Store
from rescue.deadline import Deadline
from rescue.errors import RescueError
from rescue.listen import netinfo, recipe
from rescue.listen.config import Settings, build_settings
from rescue.listen.connection import Connection, Received
from rescue.listen.events import Events, capture_summary
from rescue.listen.finalize import Job
from rescue.listen.limits import fit_open_files, fitted, resource_errors_as_events
from rescue.listen.netconsole import NetconsoleEndpoint
from rescue.listen.pipeline import Durable, Pipeline, job_for
from rescue.listen.sdsocket import systemd_socket
from rescue.summary.feed import Feed
from rescue.tokens import warn_visible_token
from rescue.units import human_size

BACKLOG = 4096  # a burst of 2,000 connects at once must not overflow it (the kernel caps it at somaxconn)


class ListenServer:
    def __init__(self, settings: Settings, events: Events, cli: dict[str, Any]) -> None:
        self.settings = settings
        self._cli = cli  # the flags given on the command line, re-applied over the config file on reload
        self.events = events
        self.store = Store(settings.dir)
        self.connections: set[Connection] = set()
        self.pipeline: Pipeline | None = None
        self.stats = {"connections": 0, "bytes": 0, "complete": 0, "incomplete": 0, "rejected": 0}
        self.started = time.time()
        self.server: asyncio.Server | None = None
        self.stopping = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.netconsole: NetconsoleEndpoint | None = None
        self.fleet = Feed(
            settings.dir, self.loop, self._milestone, lambda p: events.event("error", p, error=p)
        )

    def admit(self, conn: Connection) -> str | None:
        if self.server is None or not self.server.is_serving():
            return "shutting down"
        if not conn.via_proxy and not self.settings.allows(
            conn.peer
        ):  # behind a proxy: once it named the peer
            return "address not in --allow"
        if len(self.connections) >= self.settings.max_connections:
            return f"too many connections (--max-connections {self.settings.max_connections})"
        self.connections.add(conn)
        self.stats["connections"] += 1
        return None

    def forget(self, conn: Connection) -> None:
        self.connections.discard(conn)

    def finalize(self, received: Received, on_durable: Durable | None) -> None:
        """A connection ended: into the pipeline (listen.pipeline), which tells on_durable when to close."""
        assert self.pipeline is not None
        try:
            job = job_for(received, self.settings)
        except OSError as e:  # the spool cannot even be closed or renamed: the sender gets a reset
            if on_durable is not None:
                on_durable(e)
            self._failed(str(received.capture.path), received.peer, e)
            return
        self.pipeline.received(job, on_durable)

    def _failed(self, path: str, peer: str, exc: BaseException) -> None:
        self.events.event(
            "error",
            f"error finishing the capture {path} from {peer}: {exc} (its bytes stay there)",
            peer=peer,
            path=path,
            error=str(exc),
        )
        if self.settings.debug:
            traceback.print_exception(exc)

    def _stored(self, job: Job, doc: dict[str, Any]) -> None:
        path = Path(job.path)
        m = Manifest.from_json(doc, path)
        self.stats[m.status] = self.stats.get(m.status, 0) + 1
        self.stats["bytes"] += job.body_bytes
        analysis = m.analysis or {}
        self.events.end_progress()
        self.events.event(
            "capture",
            capture_summary(path, m, self.settings.dir),
            path=job.path,
            peer=job.peer,
            status=str(m.status),
            reason=m.reason,
            kind=m.kind and str(m.kind),
            files=[f.name for f in m.files],
            bytes=job.body_bytes,
            sha256sums=m.sha256sums,
            findings=[f.get("id") for f in analysis.get("findings", [])],
            headline=analysis.get("headline"),
        )
        if self.netconsole is not None:  # the netconsole stream of the same boot joins this capture
            self.netconsole.bundle_arrived(path, m.header)
        self.fleet.add(path, m)

    def _milestone(self, line: str, machines: int) -> None:
        self.events.end_progress()
        self.events.event("milestone", line, machines=machines, line=line)

    # lifecycle ----------------------------------------------------------------------------------

    async def serve(self) -> None:
        self.store.check_writable()
        self.loop.set_exception_handler(
            resource_errors_as_events(lambda e: self.events.event("error", e, error=e))
        )
        self.settings = fit_open_files(self.settings, self.events)
        lock = DirectoryLock(self.settings.dir)
        if lock.try_exclusive():
            self._recover()
        else:
            self.events.say(
                f"another listener uses {self.settings.dir}: captures a killed listener left are recovered "
                "at a start with no other listener running"
            )
        lock.shared()
        await asyncio.wrap_future(self.fleet.start())
        self.pipeline = Pipeline(
            self.settings.dir, self.loop, self._stored, lambda job, e: self._failed(job.path, job.peer, e)
        )
        try:
            await self._serve()
        finally:
            await self.loop.run_in_executor(None, self.pipeline.close)
            lock.close()

    def _recover(self) -> None:
        for path, problem in self.store.recover():
            if problem:
                self.events.event("error", f"cannot recover {path}: {problem}", path=str(path), error=problem)
            else:
                self.events.event(
                    "recovered", f"marked {path} incomplete (the listener stopped during it)", path=str(path)
                )

    async def _serve(self) -> None:
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
        # The address really bound: systemd's socket may name another than --bind.
        bind, port = self.server.sockets[0].getsockname()[:2]
        udp_port = await self._start_netconsole(bind, port)
        self._install_signals()  # before "listening" is said: a HUP right after must find its handler
        await self.announce(bind, port, udp_port)
        ticker = asyncio.ensure_future(self._tick())
        try:
            await self.stopping.wait()
            await self._drain()
        finally:
            ticker.cancel()
            if self.netconsole is not None:
                await self.netconsole.close()
            await self.loop.run_in_executor(None, self.fleet.close)
        self.events.event("stopped", "stopped", **self.stats)

    async def _start_netconsole(self, bind: str, port: int) -> int:
        """netconsole on UDP, by default on the TCP port's number; 0 when --udp-port 0 turned it off."""
        udp_port = port if self.settings.udp_port is None else self.settings.udp_port
        if self.settings.udp_port == 0:
            return 0
        endpoint = NetconsoleEndpoint(self)
        try:
            udp_port = await endpoint.start(bind, udp_port)
        except OSError as e:
            why = os.strerror(e.errno) if e.errno else e
            raise RescueError(
                f"cannot listen on UDP {bind}:{udp_port} (netconsole): {why}",
                hint="pick another --udp-port, or --udp-port 0 to receive no netconsole",
            ) from None
        self.netconsole = endpoint
        return udp_port

    async def announce(self, bind: str, port: int, udp_port: int = 0) -> None:
        """Say where we listen and what to type on the rescue shell; the JSON event last, once all is said."""
        s = self.settings
        r = self.events
        r.say(f"rescue listening on {bind}:{port}, storing under {s.dir}")
        try:
            # pyroute2's synchronous API runs its own event loop: keep it off ours.
            addresses = await self.loop.run_in_executor(None, netinfo.host_addresses, bind)
        except Exception as e:  # netlink can be unavailable in odd containers; the listener still works
            r.say(f"(cannot list host addresses: {e})")
            addresses = [netinfo.HostAddress("HOST", 0, "?", False)]
        best = addresses[0].address
        host, lines = recipe.announce(best, addresses[0].prefixlen, s.advertise, port, token=bool(s.token))
        r.say("host addresses: " + ", ".join(map(str, addresses)))
        for line in ["", *lines.lines(host)]:
            r.say(line)
        r.say(f"Machines with the rescue hooks send by themselves (rescue.host={host} rescue.port={port}).")
        if udp_port:
            r.say(
                f"netconsole (the kernel log over UDP) on port {udp_port}: rescue.netconsole=1 with the hooks"
            )
        r.event(
            "listening",
            None,
            bind=bind,
            port=port,
            udp_port=udp_port,
            dir=str(s.dir),
            addresses=[a.address for a in addresses],
            commands=lines.busybox,
            commands_bash=lines.bash,
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
        deadline = Deadline(self.settings.drain_timeout)
        if self.connections:
            self.events.say(
                f"stopping: waiting up to {self.settings.drain_timeout:.0f}s for "
                f"{len(self.connections)} transfer(s)"
            )
        while self.connections and not deadline.expired:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.finish(Status.INCOMPLETE, "the listener was stopped during the transfer")
        assert self.pipeline is not None
        if self.pipeline.backlog:
            self.events.say(f"stopping: finishing {self.pipeline.backlog} capture(s) already received")
        await self.pipeline.drain()

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
                    conn.finish(Status.INCOMPLETE, idle)
                    continue
                conn.checkpoint(now)
                if now - conn.started >= 1 and conn.received:
                    rate = conn.received / (now - conn.started)
                    active.append(f"{conn.peer} {human_size(conn.received)} {human_size(rate)}/s")
                    if self.events.json_events:
                        self.events.event(
                            "progress", None, peer=conn.peer, bytes=conn.received, rate=round(rate)
                        )
            if active:
                self.events.progress("receiving: " + "; ".join(active))

    def reload(self) -> None:
        """SIGHUP: re-read the config file (flags given on the command line still win), reopen the log."""
        self.events.reopen_log()
        if self.settings.config is None and self.settings.token_file is None:
            self.events.event("reloaded", "reopened the log (no --config or --token-file to re-read)")
            return
        try:
            self.settings = fitted(build_settings(self._cli))  # validated whole before it replaces the old
        except RescueError as e:
            self.events.event("error", f"reload failed, keeping the old settings: {e}", error=str(e))
            return
        self.events.event(
            "reloaded",
            f"reloaded {self.settings.config or self.settings.token_file}",
            allow=[str(n) for n in self.settings.allow],
            token=bool(self.settings.token),
        )

    def status(self) -> None:
        s = self.stats
        active = sum(c.received for c in self.connections)
        self.events.end_progress()
        self.events.event(
            "status",
            f"status: {len(self.connections)} active, {human_size(s['bytes'] + active)} received, captures: "
            f"{s['complete']} complete, {s['incomplete']} incomplete, {s['rejected']} rejected; "
            f"up {time.time() - self.started:.0f}s"
            + (f"; {self.netconsole.summary()}" if self.netconsole is not None else ""),
            active=len(self.connections),
            bytes=s["bytes"] + active,
            netconsole=self.netconsole.stats if self.netconsole is not None else None,
            **{k: s[k] for k in ("complete", "incomplete", "rejected")},
        )


# CLI ----------------------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("listen", help="receive files from a rescue shell (busybox nc) and analyse them")
    p.add_argument("--bind", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="TCP port (default 3333; 0 picks a free one)")
    p.add_argument(
        "--udp-port", type=int, help="UDP port for netconsole (default: the TCP port's number; 0: off)"
    )
    p.add_argument(
        "--netconsole-quiet",
        type=float,
        metavar="SECONDS",
        help="diagnose a netconsole stream silent this long (default 10)",
    )
    p.add_argument(
        "--advertise", metavar="ADDR[/PREFIX]", help="the address machines reach us at (NAT, a VM)"
    )
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
    proxy_help = "connections from --trusted-proxy peers start with a PROXY v1/v2 header (HAProxy send-proxy)"
    p.add_argument("--proxy-protocol", action="store_true", default=None, help=proxy_help)
    trusted_help = "load balancers whose PROXY headers are believed (repeatable)"
    p.add_argument("--trusted-proxy", action="append", default=[], metavar="CIDR", help=trusted_help)
    p.add_argument("--max-bytes", help="most bytes kept per connection (default 4G)")
    p.add_argument("--max-connections", type=int, help="most simultaneous senders (default 256)")
    p.add_argument("--idle-timeout", type=float, help="close a sender silent this many seconds (default 60)")
    p.add_argument(
        "--drain-timeout", type=float, help="on TERM/INT, wait this long for transfers (default 10)"
    )
    p.add_argument("--json", action="store_true", default=None, help="one JSON event per line on stdout")
    p.add_argument("--log", help="also append human-readable lines to this file (reopened on SIGHUP)")
    p.add_argument("--config", help="TOML file with token, allow, max_bytes, ... (re-read on SIGHUP)")
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    cli = {f.name: getattr(args, f.name, None) for f in fields(Settings)}  # None: not given
    if args.token:
        warn_visible_token()
    settings = build_settings(cli)
    if not 0 <= settings.port <= 65535:
        raise RescueError(f"bad --port {settings.port}")
    if settings.udp_port is not None and not 0 <= settings.udp_port <= 65535:
        raise RescueError(f"bad --udp-port {settings.udp_port}")
    events = Events(json_events=settings.json, log=settings.log)

    async def main() -> None:
        await ListenServer(settings, events, cli).serve()

    asyncio.run(main())
    return 0

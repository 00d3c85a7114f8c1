"""`rescue listen`: the server's lifecycle. Accept (or take systemd's socket), admit, tick, signals, drain.

Who may send is listen.admission's; each connection (listen.connection) hands one Received to the pipeline
(listen.pipeline: durable, then finalized in worker processes); what comes back becomes a `capture` event
(listen.events). The flags are listen.command's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rescue.capture.dirlock import DirectoryLock
from rescue.capture.manifest import FileEntry, Kind, Manifest, Status, read_manifest
from rescue.capture.store import Capture, Store, iso
from rescue.deadline import Deadline
from rescue.errors import RescueError
from rescue.listen import netinfo, recipe
from rescue.listen.admission import Admission
from rescue.listen.config import Settings, build_settings
from rescue.listen.connection import Connection, Received
from rescue.listen.events import Events, capture_summary
from rescue.listen.finalize import Job, write_final_manifest
from rescue.listen.limits import fit_open_files, fitted, resource_errors_as_events
from rescue.listen.netconsole import NetconsoleEndpoint
from rescue.listen.pipeline import Durable, Pipeline, job_for
from rescue.listen.sockets import bound_socket, systemd_socket
from rescue.summary.feed import Feed
from rescue.units import human_size

BACKLOG = 4096  # a burst of 2,000 connects at once must not overflow it (the kernel caps it at somaxconn)


class ListenServer:
    def __init__(self, settings: Settings, events: Events, cli: dict[str, Any]) -> None:
        self.settings = settings
        self._cli = cli  # the flags given on the command line, re-applied over the config file on reload
        self.events = events
        self.store = Store(settings.dir)
        self.gate = Admission(events)
        self.connections = self.gate.connections  # the table (the same set): admitted, not yet finished
        self.unwritten: list[Capture] = []  # final manifests the disk refused: retried every second
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
        reason = self.gate.admit(conn, self.settings)
        if reason is None:
            self.stats["connections"] += 1
        return reason

    def named(self, conn: Connection) -> str | None:
        return self.gate.named(conn, self.settings)

    def forget(self, conn: Connection) -> None:
        self.gate.forget(conn)

    def new_capture(self, conn: Connection) -> Capture:
        """The capture's directory, its `receiving` manifest naming the machine (the header, no token)."""
        header = {k: v for k, v in (conn.header or {}).items() if k != "token"}
        return self.store.new_capture(conn.peer, time.time(), header)

    def reject(self, conn: Connection, reason: str) -> Capture | None:
        return self.gate.reject(conn, reason, self.store)

    def refused(self, peer: str, reason: str) -> None:
        self.gate.refused(peer, reason)

    def drain_refusals(self) -> bool:
        return not self.stopping.is_set() and self.gate.drain_refusals(self.loop, self.settings)

    def finalize(self, received: Received, on_durable: Durable | None) -> None:
        """A connection ended: into the pipeline (listen.pipeline), which tells on_durable when to close."""
        assert self.pipeline is not None
        try:
            job = job_for(received, self.settings)
        except OSError as e:  # the spool cannot even be closed or renamed: the sender gets a reset
            if on_durable is not None:
                on_durable(e)
            cap, kind, status = received.capture, str(received.kind), str(received.status)
            self._failed(
                Job(str(cap.path), received.peer, cap.manifest.started, kind, status, received.reason), e
            )
            return
        self.pipeline.received(job, on_durable)

    def _failed(self, job: Job, exc: BaseException) -> None:
        self.events.event(
            "error",
            f"error finishing the capture {job.path} from {job.peer}: {exc} (its bytes stay there)",
            peer=job.peer,
            path=job.path,
            error=str(exc),
        )
        if self.settings.debug:
            traceback.print_exception(exc)
        # Never left `receiving`: what is on disk stays, the manifest says it is not whole.
        m = Manifest(peer=job.peer, started=job.started, header=dict(job.header))
        m.status, m.reason, m.kind = Status.INCOMPLETE, f"internal error: {exc}", Kind(job.kind)
        m.stream_bytes, m.ended = job.body_bytes, iso(time.time())
        if job.spool is not None:
            m.files = [FileEntry(job.spool, job.body_bytes, job.spool_sha256)]
        with contextlib.suppress(RescueError):  # unreadable: the manifest below replaces it
            if read_manifest(Path(job.path))[1].status is not Status.RECEIVING:
                return  # the final manifest is written; only its sync failed (said above)
        self.unwritten.append(Capture(Path(job.path), m))  # written in the next round

    def _stored(self, job: Job, doc: dict[str, Any]) -> None:
        path = Path(job.path)
        m = Manifest.from_json(doc, path)
        if m.manifest_error:
            self.unwritten.append(Capture(path, m))
        self.gate.finalized(path, m, job.peer)
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

    def _housekeeping(self, *, final: bool = False) -> None:
        """Once a second: manifests the disk refused are written again; rejection counts go to disk."""
        retry, self.unwritten = self.unwritten, []
        for cap in retry:
            # manifest_error says whether the disk still refused it
            write_final_manifest(cap.path, cap.manifest, durable=True)
        self.unwritten += [cap for cap in retry if cap.manifest.manifest_error]
        self.gate.write_counts(final=final)

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
        trouble = lambda e: self.events.event("error", e, error=e)  # noqa: E731
        self.pipeline = Pipeline(self.settings.dir, self.loop, self._stored, self._failed, trouble)
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
                    lambda: Connection(self), sock=bound_socket(self.settings), backlog=BACKLOG
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
        self._housekeeping(final=True)
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
        """Once a second: close idle senders, put buffered bytes on disk, show progress.

        Nothing may end this loop but the stop: a failure in one round is reported and the next goes on.
        """
        while True:
            await asyncio.sleep(1)
            try:
                self._tick_once(time.monotonic())
            except Exception as e:  # the idle timeouts and checkpoints must outlive any one failure
                with contextlib.suppress(Exception):
                    text = f"internal error in the once-a-second round: {e}"
                    self.events.event("error", text, error=str(e))

    def _tick_once(self, now: float) -> None:
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
                rate = conn.rate(now)
                active.append(f"{conn.peer} {human_size(conn.received)} {human_size(rate)}/s")
                if self.events.json_events:
                    self.events.event("progress", None, peer=conn.peer, bytes=conn.received, rate=round(rate))
        self._housekeeping()
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
        except Exception as e:  # whatever is wrong with the new file, the old settings stay
            text = e.message if isinstance(e, RescueError) else f"{type(e).__name__}: {e}"
            self.events.event("error", f"reload failed, keeping the old settings: {text}", error=text)
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

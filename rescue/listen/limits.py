"""The open-file limit a burst needs: each connection holds its socket and its spool file, each refused
sender its socket while it reads its refusal.

systemd's default soft limit (1024) is far below what 2,000 simultaneous senders need; the hard limit
usually allows it. The listener raises its soft limit to the hard one by itself, and when even that is too
low it admits fewer connections at once and says so: a refused sender sees its refusal, while running out
of descriptors mid-transfer would cost bundles.
"""

from __future__ import annotations

import asyncio
import errno
import resource
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from rescue.listen.config import Settings
from rescue.listen.events import Events

FDS_PER_CONNECTION = 2  # the socket and the spool file
FDS_RESERVED = 64  # the listening socket, the worker pool's pipes, the index, the log, stdio
MAX_DRAINING = 256  # refused senders read for a moment at once; beyond, they are reset at once


def raise_open_files() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; (soft before, soft now)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft, soft
        return soft, hard
    return soft, soft


def connections_within(open_files: int, wanted: int) -> int:
    """How many connections fit in this open-file limit beside their refused senders (draining_beside),
    at most `wanted`."""
    spare = open_files - FDS_RESERVED
    # Up to 1280 spare descriptors, a fifth go to refused senders (half as many as connections); above,
    # MAX_DRAINING of them.
    fits = max((spare - MAX_DRAINING) // FDS_PER_CONNECTION, spare * 2 // 5)
    return max(1, min(wanted, fits))


def draining_beside(max_connections: int) -> int:
    """How many refused senders may be read for a moment at once beside max_connections connections."""
    return max(1, min(MAX_DRAINING, max_connections // 2))


def fit_open_files(settings: Settings, events: Events) -> Settings:
    """At start: raise the soft limit to the hard one, or admit fewer connections; either way, say so."""
    before, now = raise_open_files()
    wanted = settings.max_connections
    fits = connections_within(now, wanted)
    if now > before:
        events.say(f"raised the open-file limit from {before} to {now}")
    if fits < wanted:
        events.event(
            "error",
            f"the open-file limit ({now}, the hard limit) allows {fits} connections at once, not "
            f"{wanted}: more senders are refused (they see it); raise LimitNOFILE= or ulimit -Hn",
            error="open-file limit",
            open_files=now,
            max_connections=fits,
        )
    return replace(settings, max_connections=fits)


def fitted(settings: Settings) -> Settings:
    """The settings with --max-connections cut to what the open-file limit now allows (on SIGHUP)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return replace(settings, max_connections=connections_within(soft, settings.max_connections))


_OUT_OF = {errno.EMFILE: "file descriptors", errno.ENFILE: "file descriptors (system-wide)",
           errno.ENOBUFS: "socket buffers", errno.ENOMEM: "memory"}  # fmt: skip
ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


def resource_errors_as_events(report: Callable[[str], None]) -> ExceptionHandler:
    """An event-loop exception handler: running out of descriptors or memory while accepting (asyncio
    pauses accept() for a second; the senders wait in the backlog) becomes one line a second, not a
    traceback per attempt. Anything else goes to asyncio's default handler."""
    last = float("-inf")

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        nonlocal last
        exc = context.get("exception")
        what = _OUT_OF.get(exc.errno or 0) if isinstance(exc, OSError) else None
        if what is None:
            loop.default_exception_handler(context)
            return
        if time.monotonic() - last >= 1:
            last = time.monotonic()
            report(f"out of {what}: not accepting for a second (waiting senders stay queued): {exc}")

    return handler

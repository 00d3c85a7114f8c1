"""Who may send: the table of connections, its limits, who goes first when it is full, the free-space
guard, and rejected streams counted per peer.

When the table (or one peer's share of it) is full, a newcomer makes room by closing a connection that
looks least like a real sender: first one that has sent no header or first block within
--first-block-timeout (the oldest first), then one trickling below --min-rate. Only when there is none is
the newcomer refused. A real sender sends its first block at once, so a slowloris or an idle flood
cannot keep it out.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rescue.capture.manifest import Manifest, Status, write_manifest
from rescue.capture.store import Capture, Store
from rescue.listen.config import Settings
from rescue.listen.connection import Connection
from rescue.listen.events import Events
from rescue.listen.limits import draining_beside
from rescue.listen.refusal import REFUSAL_DRAIN
from rescue.units import human_size

REJECT_WINDOW = 60.0  # a peer's rejected streams within this many seconds share one capture
REFUSED_WINDOW = 10.0  # refusals of one peer for one reason: the first said, the rest counted this long


@dataclass
class Rejections:
    """A peer's rejected streams in one window, recorded in the first one's capture with a count."""

    capture: Capture
    since: float
    reason: str
    count: int = 1
    written: int = 0  # the count the manifest on disk says (0: not finalized yet)


class Admission:
    def __init__(self, events: Events) -> None:
        self.events = events
        self.connections: set[Connection] = set()
        self.per_peer: Counter[str] = Counter()
        self.counted: dict[Connection, str] = {}  # the address each one counts against (per_peer)
        self.rejections: dict[str, Rejections] = {}
        self.draining = 0  # refused senders being read before their reset
        self.low_space = False
        self.refusals: dict[tuple[str, str], list[float]] = {}  # (peer, reason) -> [since, count not said]

    def admit(self, conn: Connection, s: Settings) -> str | None:
        """None when conn may send (it is in the table then); else why not.

        A trusted proxy's connection names its sender only in its PROXY header: --allow and --max-per-peer
        apply then (named()), not to the proxy's own address.
        """
        if not conn.via_proxy and not s.allows(conn.peer):
            return "address not in --allow"
        if self._space_low(s):
            return f"the listener's disk is nearly full (--min-free {human_size(s.min_free)}); try later"
        if not conn.via_proxy and (reason := self._peer_full(conn.peer, s)):
            return reason
        if len(self.connections) >= s.max_connections and not self._evict(s, None):
            return f"too many connections (--max-connections {s.max_connections})"
        self.connections.add(conn)
        if not conn.via_proxy:
            self._count(conn)
        return None

    def named(self, conn: Connection, s: Settings) -> str | None:
        """A trusted proxy's connection named its sender (conn.peer now): None when it may send."""
        if not s.allows(conn.peer):
            return "address not in --allow"
        if reason := self._peer_full(conn.peer, s):
            return reason
        self._count(conn)
        return None

    def _peer_full(self, peer: str, s: Settings) -> str | None:
        if self.per_peer[peer] >= s.max_per_peer and not self._evict(s, peer):
            return f"too many connections from this address (--max-per-peer {s.max_per_peer})"
        return None

    def _count(self, conn: Connection) -> None:
        self.counted[conn] = conn.peer
        self.per_peer[conn.peer] += 1

    def forget(self, conn: Connection) -> None:
        self.connections.discard(conn)
        peer = self.counted.pop(conn, None)
        if peer is not None:
            self.per_peer[peer] -= 1
            if self.per_peer[peer] <= 0:
                del self.per_peer[peer]

    def _evict(self, s: Settings, peer: str | None) -> bool:
        """Close the connection of peer (of anyone when None) least likely to be a real sender, if any."""
        now = time.monotonic()
        budget = s.first_block_timeout
        mine = [c for c in self.connections if (peer is None or c.peer == peer) and not c.done]
        silent = [c for c in mine if c.first_block is None and now - c.started >= budget]
        if silent:
            victim = min(silent, key=lambda c: c.started)
            why = f"no header or first block after {now - victim.started:.0f}s while the listener was full"
        else:
            slow = [c for c in mine if now - c.started >= budget and c.rate(now) < s.min_rate]
            if not slow:
                return False
            victim = min(slow, key=lambda c: c.rate(now))
            why = f"slower than --min-rate {human_size(s.min_rate)}/s while the listener was full"
        victim.finish(Status.INCOMPLETE, f"evicted: {why}")  # its bytes are kept, it is told why
        self.events.event("evicted", f"evicted {victim.peer}: {why}", peer=victim.peer, reason=why)
        return True

    def _space_low(self, s: Settings) -> bool:
        """The --min-free guard; says once when it starts refusing and once when it resumes."""
        if not s.min_free:
            return False
        try:
            free = shutil.disk_usage(s.dir).free
        except OSError:
            return False  # cannot tell: storing will say what is wrong
        low = free < s.min_free
        if low != self.low_space:
            self.low_space = low
            text = (
                f"free space under --min-free ({human_size(free)} left): refusing new captures"
                if low
                else f"free space back above --min-free ({human_size(free)}): accepting captures again"
            )
            self.events.event("space", text, low=low, free=free)
        return low

    def refused(self, peer: str, reason: str) -> None:
        """A `refused` event; a flood of the same refusal becomes one event and a count, not a log flood."""
        key = (peer, reason)
        seen = self.refusals.get(key)
        if seen is not None and time.monotonic() - seen[0] < REFUSED_WINDOW:
            seen[1] += 1
            return
        self.refusals[key] = [time.monotonic(), 0]
        self.events.event("refused", f"refused {peer}: {reason}", peer=peer, reason=reason, count=1)

    def _say_refusal_counts(self, now: float, final: bool) -> None:
        for (peer, reason), (since, count) in list(self.refusals.items()):
            if now - since < REFUSED_WINDOW and not final:
                continue
            del self.refusals[(peer, reason)]
            if count:
                text = f"refused {peer} {count} more time(s) in {REFUSED_WINDOW:.0f}s: {reason}"
                self.events.event("refused", text, peer=peer, reason=reason, count=count)

    def drain_refusals(self, loop: asyncio.AbstractEventLoop, s: Settings) -> bool:
        """May one more refused sender be read for a moment before its reset? (Bounded in number, within
        the open-file limit: listen.limits.)"""
        if self.draining >= draining_beside(s.max_connections):
            return False
        self.draining += 1
        loop.call_later(REFUSAL_DRAIN + 0.1, self._drained)
        return True

    def _drained(self) -> None:
        self.draining -= 1

    # rejected streams ------------------------------------------------------------------------------

    def reject(self, conn: Connection, reason: str, store: Store) -> Capture | None:
        """A rejected capture for this stream, or None when the peer's first rejection this minute
        already has one (its count goes up): a guessing flood leaves one directory a minute."""
        now = time.monotonic()
        agg = self.rejections.get(conn.peer)
        if agg is not None and now - agg.since < REJECT_WINDOW:
            agg.count += 1
            return None
        cap = store.new_capture(conn.peer, time.time())
        self.rejections[conn.peer] = Rejections(cap, now, reason)
        return cap

    def finalized(self, path: Path, manifest: Manifest, peer: str) -> None:
        """A capture is finalized: if it holds a peer's rejections, later counts go into this manifest."""
        agg = self.rejections.get(peer)
        if agg is not None and agg.capture.path == path:
            agg.capture = Capture(path, manifest)
            agg.written = 1

    def write_counts(self, *, final: bool = False) -> None:
        """Once a second and at the stop (final): the counts into the manifests; a window that ended is
        said."""
        now = time.monotonic()
        self._say_refusal_counts(now, final)
        for peer, agg in list(self.rejections.items()):
            if agg.written and agg.count > agg.written:
                agg.capture.manifest.rejections = agg.count
                with contextlib.suppress(OSError):
                    write_manifest(agg.capture.path, agg.capture.manifest)
                    agg.written = agg.count
            if now - agg.since >= REJECT_WINDOW and agg.written:
                del self.rejections[peer]
                if agg.count > 1:
                    self.events.event(
                        "rejected",
                        f"{agg.count} streams from {peer} rejected in {REJECT_WINDOW:.0f}s ({agg.reason}); "
                        f"counted in {agg.capture.path}",
                        peer=peer,
                        count=agg.count,
                        reason=agg.reason,
                        path=str(agg.capture.path),
                    )

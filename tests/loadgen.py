"""A fleet failing at once: replay the recorded bundles of tests/captures as many distinct machines.

Each sender behaves as busybox nc does in the hooks: connect, stream the bundle, half-close (SHUT_WR) at
the end of its input, then wait until the listener closes. busybox nc does not retry and exits 0 only when
the peer closed cleanly; so a sender here ends as one of:

- `sent`: the listener closed cleanly (nc exit 0, the collector prints "sent"): the bundle must be kept;
- `refused`: the connection was refused, reset or failed (nc exits non-zero: the sender can see it);
- `timeout`: no close within the timeout (the collector's watchdog would end nc: visible too).

Senders come from several addresses of 127.0.0.0/8 (also so that 10,000 connections do not run the one
source address out of ephemeral ports) and send a `machine=` identity of their own in the header line.
`python -m tests.loadgen --port P [--count N]` runs it alone against a listener.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import random
import resource
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rescue.listen.replay import build_replay
from rescue.listen.wire import header_line

CAPTURES = Path(__file__).resolve().parent / "captures"
SOURCES = tuple(f"127.0.0.{n}" for n in range(1, 17))
CHUNK = 16 * 1024


@dataclass(frozen=True)
class Bundle:
    """A recorded capture as its hooks sent it: the header fields, and the body after the header line."""

    name: str
    header: dict[str, str]
    body: bytes


def load_bundles(captures: Path = CAPTURES) -> list[Bundle]:
    bundles = []
    for manifest in sorted(captures.glob("*/manifest.json")):
        replay = build_replay(manifest.parent)
        # A capture that came without a header (typed by hand) is sent with one, as the hooks would.
        head, body = b"", replay.stream
        if replay.kind.startswith("header+"):
            head, _, body = replay.stream.partition(b"\n")
        fields = dict(w.split("=", 1) for w in head.decode().split()[1:] if "=" in w)
        fields.pop("token", None)
        bundles.append(Bundle(manifest.parent.name, fields, body))
    if not bundles:
        raise SystemExit(f"no recorded captures under {captures}")
    return bundles


def machine_id(n: int) -> str:
    return f"fleet-{n:06d}"


def stream_for(bundle: Bundle, machine: str) -> bytes:
    header = {**bundle.header, "machine": machine, "host": machine}
    return header_line(header, None) + bundle.body


@dataclass
class Outcome:
    machine: str
    bundle: str
    source: str
    result: str  # sent, refused, timeout
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    started: float = 0.0  # time.monotonic() of the first connect
    finished: float = 0.0  # time.monotonic() when the last sender ended
    peak_concurrent: int = 0

    def counts(self) -> Counter[str]:
        return Counter(o.result for o in self.outcomes)


async def send_like_busybox_nc(
    host: str, port: int, source: str, data: bytes, *, pace: float, timeout: float
) -> tuple[str, str]:
    """Stream data, half-close, wait for the peer to close. ("sent"|"refused"|"timeout", detail)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    peer_closed = asyncio.Event()

    async def read_until_close() -> None:
        # busybox nc reads the network all along and quits at its EOF, even with input still unsent.
        while await loop.sock_recv(sock, 4096):
            pass
        peer_closed.set()

    reader: asyncio.Task[None] | None = None
    try:
        sock.bind((source, 0))
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (host, port))
            reader = asyncio.create_task(read_until_close())
            view = memoryview(data)
            for off in range(0, len(view), CHUNK):
                if peer_closed.is_set():
                    break
                await loop.sock_sendall(sock, view[off : off + CHUNK])
                if pace:
                    await asyncio.sleep(pace)
            if not peer_closed.is_set():
                sock.shutdown(socket.SHUT_WR)
            await reader
        return "sent", ""
    except TimeoutError:
        return "timeout", f"no close within {timeout:.0f}s"
    except OSError as e:
        return "refused", errno.errorcode.get(e.errno or 0, str(e))
    finally:
        if reader is not None and not reader.done():
            reader.cancel()
        elif reader is not None and not reader.cancelled():
            reader.exception()  # a reset seen while still sending: already reported by the send
        sock.close()


async def run_fleet(
    host: str,
    port: int,
    count: int,
    *,
    concurrency: int = 2000,
    ramp: float = 2.0,
    link_rate: int = 64 * 1024,
    timeout: float = 300.0,
    seed: int = 14,
    first: int = 0,
) -> Run:
    """count machines, each sending one recorded bundle; at most `concurrency` at once, reached over `ramp`
    seconds; each stream paced to about link_rate bytes/s (0: as fast as loopback goes). Machines are
    numbered from `first`."""
    bundles = load_bundles()
    rng = random.Random(seed)
    run = Run()
    active = 0
    done = asyncio.Event()
    pace = CHUNK / link_rate if link_rate else 0.0

    async def one(n: int) -> None:
        nonlocal active
        bundle = rng.choice(bundles)
        machine, source = machine_id(first + n), SOURCES[n % len(SOURCES)]
        t0 = time.monotonic()
        try:
            result, detail = await send_like_busybox_nc(
                host, port, source, stream_for(bundle, machine), pace=pace, timeout=timeout
            )
        finally:
            active -= 1
        run.outcomes.append(Outcome(machine, bundle.name, source, result, detail, time.monotonic() - t0))
        if len(run.outcomes) == count:
            done.set()

    run.started = time.monotonic()
    tasks = set()
    for n in range(count):
        allowed = max(1, min(concurrency, int(concurrency * (time.monotonic() - run.started) / ramp)))
        while active >= allowed:
            await asyncio.sleep(0.005)
            allowed = max(1, min(concurrency, int(concurrency * (time.monotonic() - run.started) / ramp)))
        active += 1
        run.peak_concurrent = max(run.peak_concurrent, active)
        task = asyncio.create_task(one(n))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        if n % 64 == 63:
            await asyncio.sleep(0)  # let the connections started so far make progress
    if count:
        await done.wait()
    run.finished = time.monotonic()
    return run


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=2000)
    p.add_argument("--link-rate", type=int, default=64 * 1024, help="bytes/s per sender (0: unpaced)")
    args = p.parse_args()
    raise_fd_limit(args.concurrency + 256)
    run = asyncio.run(
        run_fleet(args.host, args.port, args.count, concurrency=args.concurrency, link_rate=args.link_rate)
    )
    print(
        f"{args.count} senders in {run.finished - run.started:.1f}s, peak {run.peak_concurrent} at once: "
        + ", ".join(f"{k} {v}" for k, v in sorted(run.counts().items()))
    )


if __name__ == "__main__":
    main()

"""A fleet failing at once (issue 14): 10,000 machines send their bundles within seconds of each other.

python -m tests.bench_burst [--count N] [--concurrency C] [--only baseline|current]

The load generator (tests/loadgen.py) replays the recorded bundles as distinct machines from 16 source
addresses, ramping to C connections at once. Each listener runs as a real `rescue listen --json` process
under systemd's default open-file limit (soft 1024; the hard limit of this shell), with its default
settings but `--max-per-peer C` for this checkout's (16 addresses hold more than 128 connections each).
Printed per listener: the time until every bundle is stored, fsynced, verified and diagnosed (its `capture`
event, written after the final manifest), the time until every byte was accepted, the peak
RSS of the listener process and of it with its worker processes, CPU seconds (its own and its children's,
from wait4), and the bundles lost (the sender saw a clean close but no complete capture holds them),
refused (the sender saw the failure), incomplete, and stored twice.

The baseline is the listener of BASELINE_COMMIT, run from a `git archive` of that commit; then the
listener of this checkout. Goals: all stored and diagnosed within 60 s, none lost, RSS <= 256 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rescue.errors import RescueError
from rescue.harness.listener_process import ListenerProcess
from tests.loadgen import Run, raise_fd_limit, run_fleet

REPO = Path(__file__).resolve().parent.parent
BASELINE_COMMIT = "3f19f15"  # main on 2026-12-07 before the fleet work (its listener is that of 752ec97)
GOAL_SECONDS, GOAL_RSS_MIB = 60.0, 256
SYSTEMD_SOFT_NOFILE = 1024


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo.extend(int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split())
        except OSError:
            continue
    return out


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler(threading.Thread):
    """The peak of the listener's RSS summed with its worker processes', sampled every 0.2 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_tree_kib, self._halt = pid, 0, threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.2):
            self.peak_tree_kib = max(self.peak_tree_kib, sum(rss_kib(p) for p in descendants(self.pid)))

    def stop(self) -> None:
        self._halt.set()
        self.join()


@dataclass
class Figures:
    label: str
    count: int
    run: Run
    all_done: float  # seconds from the first connect to the last capture event
    all_accepted: float  # seconds from the first connect to the last sender's end
    peak_rss_mib: float
    peak_tree_mib: float
    cpu_seconds: float
    stored: Counter[str]  # complete, incomplete, rejected: captures on disk by status
    lost: int
    refused: int
    duplicates: int
    undiagnosed: int

    def line(self) -> str:
        c = self.run.counts()
        return (
            f"   {self.label}: {self.count} machines (peak {self.run.peak_concurrent} at once): "
            f"all stored and diagnosed after {self.all_done:.1f} s "
            f"(bytes accepted after {self.all_accepted:.1f} s); "
            f"peak RSS {self.peak_rss_mib:.0f} MiB ({self.peak_tree_mib:.0f} MiB with workers); "
            f"{self.cpu_seconds:.0f} CPU-s; lost {self.lost}, refused {self.refused} (senders: {dict(c)}); "
            f"captures {dict(self.stored)}, stored twice {self.duplicates}, not diagnosed {self.undiagnosed}"
        )

    def verdict(self) -> str:
        ok = (
            self.all_done <= GOAL_SECONDS
            and self.lost == 0
            and self.refused == 0
            and self.peak_rss_mib <= GOAL_RSS_MIB
            and self.stored["complete"] == self.count
        )
        return (
            f"   goals (<= {GOAL_SECONDS:.0f} s, none lost or refused, RSS <= {GOAL_RSS_MIB} MiB): "
            f"{'ok' if ok else 'MISSED'}"
        )


def scan_captures(root: Path) -> dict[str, list[dict[str, object]]]:
    """machine -> the manifests stored for it (status, analysis present)."""
    found: dict[str, list[dict[str, object]]] = {}
    for path in root.rglob("manifest.json"):
        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        # A manifest left `receiving` has no header yet: keyed by its path, it counts under its status only.
        machine = (m.get("header") or {}).get("machine") or str(path)
        analysis = m.get("analysis") or {}
        found.setdefault(machine, []).append(
            {"status": m.get("status"), "diagnosed": bool(analysis) and "error" not in analysis}
        )
    return found


def wait_captures(lst: ListenerProcess, expected: int, quiet: float) -> float:
    """Read capture events until `expected` arrived or none for `quiet` seconds; the last one's time."""
    last, seen = 0.0, 0
    while seen < expected:
        try:
            event = lst.next_event(timeout=quiet)
        except RescueError:
            break
        if event.get("event") == "capture":
            seen += 1
            last = float(event["received_at"])
    return last


def stop_with_rusage(lst: ListenerProcess) -> float:
    """TERM the listener and reap it with wait4: CPU seconds of it and of the children it reaped."""
    lst.proc.send_signal(signal.SIGTERM)
    _, status, usage = os.wait4(lst.proc.pid, 0)
    lst.proc.returncode = os.waitstatus_to_exitcode(status)
    lst.stop()
    return usage.ru_utime + usage.ru_stime


def measure(
    label: str, work: Path, count: int, concurrency: int, tree: Path, extra: tuple[str, ...] = ()
) -> Figures:
    """One listener (`python -m rescue` run from `tree`, which comes first on its sys.path) under load."""
    captures = work / ("captures-" + label.replace(" ", "-"))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    wrap = ["prlimit", f"--nofile={SYSTEMD_SOFT_NOFILE}:{hard}", "--", "env", f"--chdir={tree}"]
    lst = ListenerProcess(captures, *extra, wrap=wrap)
    sampler = RssSampler(lst.proc.pid)
    sampler.start()
    try:
        run = asyncio.run(run_fleet("127.0.0.1", lst.port, count, concurrency=concurrency))
        last = wait_captures(lst, count, quiet=20.0)
        peak_rss = rss_kib(lst.proc.pid, "VmHWM")
    finally:
        sampler.stop()
        cpu = stop_with_rusage(lst)
    stored = scan_captures(captures)
    statuses = Counter(str(m["status"]) for ms in stored.values() for m in ms)
    lost = refused = 0
    for o in run.outcomes:
        kept = any(m["status"] == "complete" for m in stored.get(o.machine, []))
        if not kept:
            lost += o.result == "sent"
            refused += o.result != "sent"
    return Figures(
        label=label,
        count=count,
        run=run,
        all_done=max(last, run.finished) - run.started,
        all_accepted=run.finished - run.started,
        peak_rss_mib=peak_rss / 1024,
        peak_tree_mib=sampler.peak_tree_kib / 1024,
        cpu_seconds=cpu,
        stored=statuses,
        lost=lost,
        refused=refused,
        duplicates=sum(len(ms) - 1 for ms in stored.values() if len(ms) > 1),
        undiagnosed=sum(
            1 for ms in stored.values() for m in ms if m["status"] == "complete" and not m["diagnosed"]
        ),
    )


def time_summary(captures: Path, *extra: str) -> str:
    """`rescue summary` over the burst's captures: seconds, and the machines it counted."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "rescue", "summary", str(captures), "--json", *extra],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        return f"failed: {done.stderr.strip()}"
    doc = json.loads(done.stdout)
    return f"{seconds:.2f} s for {doc['captures']} captures of {doc['machines']} machines"


def baseline_tree(work: Path) -> Path | None:
    """BASELINE_COMMIT's rescue package, unpacked from git; None when this is no git checkout."""
    tree = work / "baseline"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", BASELINE_COMMIT, "rescue"], capture_output=True, check=False
    )
    if archive.returncode != 0:
        return None
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def conditions() -> str:
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} cores, load average {load:.1f} at the start (shared machine: figures are noisy)"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="burst benchmark")
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=2000)
    p.add_argument("--only", choices=("baseline", "current"))
    args = p.parse_args(argv if argv is not None else [])
    raise_fd_limit(args.concurrency + 512)
    print(f"   burst: {args.count} machines, {conditions()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="rescue-burst-", dir=os.environ.get("RESCUE_BENCH_DIR")) as d:
        work = Path(d)
        if args.only != "current":
            tree = baseline_tree(work)
            if tree is None:
                print("   baseline: skipped (not a git checkout); README has the recorded figures")
            else:
                figures = measure(f"baseline {BASELINE_COMMIT}", work, args.count, args.concurrency, tree)
                print(figures.line(), flush=True)
        if args.only != "baseline":
            # The fleet comes from 16 loopback addresses, up to concurrency/16 at once from each: more than
            # one address's default share (--max-per-peer 128) of a real listener's table.
            per_peer = ("--max-per-peer", str(args.concurrency))
            figures = measure("this listener", work, args.count, args.concurrency, REPO, per_peer)
            print(figures.line(), flush=True)
            print(figures.verdict(), flush=True)
            captures = work / "captures-this-listener"
            print(f"   rescue summary (goal <= 2 s): {time_summary(captures)}", flush=True)
            print(f"   rescue summary --rebuild (from the manifests): {time_summary(captures, '--rebuild')}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""The fleet index: one row per capture in DIR/.rescue-index.sqlite, kept by the listener, read by summary.

SQLite in WAL mode, so several listeners writing one capture directory (behind a load balancer) and a
`rescue summary` reading it do not block each other; each write is one short transaction, retried while
another writer holds the lock (busy_timeout). synchronous=NORMAL: a power cut may lose the last rows, never
damage the file, and the manifests stay the truth: `rebuild()` recreates the index from them.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

from rescue.capture.manifest import MANIFEST, Manifest, Status, read_manifest
from rescue.errors import RescueError

INDEX = ".rescue-index.sqlite"
SCHEMA_VERSION = 1
NO_ERROR = "none"  # the root cause of a capture whose analysis found nothing of error severity
NOT_ANALYSED = "not-analysed"  # the analysis failed or never ran
BUSY_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS captures (
    path TEXT PRIMARY KEY,  -- relative to DIR
    machine TEXT NOT NULL,
    peer TEXT NOT NULL,
    status TEXT NOT NULL,
    finding TEXT NOT NULL,
    title TEXT NOT NULL,
    kernel TEXT NOT NULL,
    generator TEXT NOT NULL,
    fix TEXT NOT NULL,
    seen TEXT NOT NULL  -- when the capture ended (ISO 8601, UTC: sorts as text)
);
CREATE INDEX IF NOT EXISTS by_group ON captures (status, finding, kernel, generator, machine);
CREATE INDEX IF NOT EXISTS by_seen ON captures (seen);
"""


@dataclass(frozen=True)
class Entry:
    path: str
    machine: str
    peer: str
    status: str
    finding: str
    title: str
    kernel: str
    generator: str
    fix: str
    seen: str

    @property
    def group(self) -> tuple[str, str, str]:
        return self.finding, self.kernel, self.generator


_COLUMNS = tuple(f.name for f in fields(Entry))


def entry_for(rel: str, m: Manifest) -> Entry:
    """The index row of one capture, from its manifest: the root cause is the first error finding that
    nothing else caused (the analysis lists causes before their consequences)."""
    analysis: dict[str, Any] = m.analysis or {}
    findings = [f for f in analysis.get("findings") or [] if isinstance(f, dict)]
    roots = [f for f in findings if f.get("severity") == "error" and not f.get("caused_by")]
    generator = str(analysis.get("generator") or "unknown")
    kernel = str(analysis.get("kernel") or m.header.get("kver") or m.header.get("kernel") or "unknown")
    finding, title, fix = NO_ERROR, "no boot failure found", ""
    if not analysis or "error" in analysis:
        finding, title = NOT_ANALYSED, str(analysis.get("error") or "not analysed")
    elif roots:
        root = roots[0]
        finding, title = str(root.get("id")), str(root.get("title", ""))
        fixes = root.get("fix") or {}
        fix = str(fixes.get(generator) or next(iter(fixes.values()), "")) if isinstance(fixes, dict) else ""
    machine = m.header.get("machine") or m.peer
    return Entry(
        rel, machine, m.peer, str(m.status), finding, title, kernel, generator, fix, m.ended or m.started
    )


class Index:
    """A connection to DIR's index. Use from one thread at a time (the listener gives it a thread)."""

    def __init__(self, root: Path, *, create: bool = True) -> None:
        self.root = root
        self.path = root / INDEX
        if not create and not self.path.exists():
            raise FileNotFoundError(self.path)
        try:
            self.db = sqlite3.connect(self.path, timeout=BUSY_MS / 1000, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as e:
            raise RescueError(
                f"{self.path}: the index is damaged ({e})", hint=f"rescue summary {root} --rebuild"
            ) from None

    def close(self) -> None:
        self.db.close()

    def add(self, entries: Iterable[Entry]) -> None:
        rows = [astuple(e) for e in entries]
        marks = ",".join("?" * len(_COLUMNS))
        with self.transaction():
            self.db.executemany(f"INSERT OR REPLACE INTO captures VALUES ({marks})", rows)

    def machines_in_group(self, group: tuple[str, str, str]) -> int:
        """Distinct machines whose complete captures have this (finding, kernel, generator)."""
        row = self.db.execute(
            "SELECT count(DISTINCT machine) FROM captures "
            "WHERE status='complete' AND finding=? AND kernel=? AND generator=?",
            group,
        ).fetchone()
        return int(row[0])

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as e:
            raise RescueError(
                f"{self.path}: the index is damaged ({e})", hint=f"rescue summary {self.root} --rebuild"
            ) from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")  # take the write lock now: waits (busy_timeout) for another
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")


def capture_dirs(root: Path) -> Iterator[Path]:
    """Every capture directory below root (ROOT/<machine or peer>/<capture>/manifest.json)."""
    for machine in sorted(p for p in root.iterdir() if p.is_dir()):
        for capture in sorted(machine.iterdir()):
            if (capture / MANIFEST).is_file():
                yield capture


def scan(root: Path) -> tuple[list[Entry], list[tuple[Path, str]]]:
    """Index rows from every manifest below root, and the captures that could not be read (and why)."""
    entries, problems = [], []
    for capture in capture_dirs(root):
        try:
            _, m = read_manifest(capture)
        except RescueError as e:
            problems.append((capture, str(e)))
            continue
        if m.status is not Status.RECEIVING:
            entries.append(entry_for(str(capture.relative_to(root)), m))
    return entries, problems


def rebuild(root: Path) -> tuple[int, list[tuple[Path, str]]]:
    """Recreate the index from the manifests; a new file renamed over the old, damaged or not.

    The old file's -wal and -shm go first: a stale WAL would be replayed into the new file.
    """
    if not root.is_dir():
        raise RescueError(f"{root}: no such capture directory")
    entries, problems = scan(root)
    tmp = root / f"{INDEX}.rebuild-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp, isolation_level=None)
    try:
        db.executescript(_SCHEMA)
        marks = ",".join("?" * len(_COLUMNS))
        db.execute("BEGIN")
        db.executemany(f"INSERT OR REPLACE INTO captures VALUES ({marks})", [astuple(e) for e in entries])
        db.execute("COMMIT")
    finally:
        db.close()
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    for suffix in ("-wal", "-shm"):
        (root / (INDEX + suffix)).unlink(missing_ok=True)
    os.replace(tmp, root / INDEX)
    Index(root).close()  # back to WAL mode, so listeners and readers share it
    return len(entries), problems

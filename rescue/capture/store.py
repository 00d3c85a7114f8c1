"""Capture directories: safe names, partial files that only become visible when complete, manifests.

Layout: ROOT/<machine or peer-ip>/<UTC yyyymmddThhmmssZ>-<seq>/ (named in identity.py) holding the
received files and manifest.json.
A file is written as NAME.partial and renamed to NAME after one fsync; a capture whose listener died
keeps its .partial files, and the next start marks it incomplete (see recover()).
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import hashlib
import os
import re
import stat
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rescue.capture import identity
from rescue.capture.manifest import (
    MANIFEST,
    MANIFEST_RESERVE,
    PARTIAL,
    FileEntry,
    Manifest,
    Status,
    read_manifest,
    write_manifest,
)
from rescue.errors import RescueError

MAX_COMPONENT_BYTES = 200  # room for the .partial suffix within NAME_MAX (255)
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
# The listener's spool of a tar stream lives in the capture directory while its members are extracted
# there: no member may take its name (or it would truncate the spool it is being read from).
SPOOL = "stream.tar"
_RESERVED = frozenset({MANIFEST, SPOOL, SPOOL + ".gz"})
MAX_SHA256SUMS = 4 << 20  # bytes of a SHA256SUMS member read: ~25,000 lines, far more than a bundle has
MAX_SUM_PROBLEMS = 50  # problems listed in the manifest; the rest counted


def utc_stamp(t: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t))


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def decode_name(raw: bytes, legacy: str = "gbk") -> tuple[str, str]:
    """Decode a foreign file name: UTF-8, else the legacy encoding, else escape the bytes.

    Returns (name, how) where how is "utf-8", the legacy codec's name, or "escaped".
    """
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    if legacy:
        try:
            name = raw.decode(legacy)
            # A legacy decode that yields control or unassigned characters explains nothing.
            if not any(unicodedata.category(c) in ("Cc", "Cn", "Co") for c in name):
                return name, codecs.lookup(legacy).name
        except UnicodeDecodeError:
            pass
    return raw.decode("ascii", errors="backslashreplace"), "escaped"


def safe_relpath(name: str) -> str | None:
    """A member name made safe to use below a capture directory, or None when it must be rejected.

    Rejects absolute paths and any ".." component; drops "." components; replaces control characters.
    """
    if name.startswith("/"):
        return None
    parts = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            return None
        part = _UNSAFE.sub("_", part)
        while len(part.encode()) > MAX_COMPONENT_BYTES:
            part = part[:-1]
        if part in _RESERVED or part.endswith(PARTIAL):
            part = "_" + part  # never shadow our own bookkeeping
        parts.append(part)
    return "/".join(parts) or None


class FileWriter:
    """Write one file as NAME.partial, hashing as it goes; commit() fsyncs once and renames it.

    staged=False writes under the final name at once, for a capture whose manifest is still to come: the
    manifest, written last, is what says the capture's files are whole (a rename per file saved).
    """

    def __init__(self, directory: Path, name: str, *, staged: bool = True) -> None:
        self.path = directory / name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(self.path.name + PARTIAL)
        # O_EXCL and O_NOFOLLOW: never reuse, truncate or follow a file that is already there.
        self._staged = staged
        where = self.partial if staged else self.path
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        self._fd = os.open(where, flags, 0o640)
        self._hash = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes | memoryview) -> None:
        """Write all of data; on an error, what did reach the file is counted and hashed all the same."""
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            self._hash.update(view[:n])
            self.bytes += n
            view = view[n:]

    def start_writeback(self) -> None:
        """Start writing what is buffered to disk, without waiting (Linux's fadvise DONTNEED does): the
        sync at the end of a long stream then has little left to do."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def commit(self, name: str | None = None, *, durable: bool = True) -> FileEntry:
        """fsync, close and rename to the final name. durable=False leaves the fsync to a group commit
        (capture.commit) that covers the file before anyone is told it is stored."""
        if self._fd >= 0 and durable:
            os.fsync(self._fd)
        self.close()
        written = self.partial if self._staged else self.path
        if name is not None:
            self.path = self.path.with_name(name)
        if written != self.path:
            os.replace(written, self.path)
        return FileEntry(self.path.name, self.bytes, self._hash.hexdigest())

    def keep_partial(self, *, durable: bool = True) -> FileEntry:
        """Leave the bytes as NAME.partial: received, but not complete."""
        if self._fd >= 0 and durable:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
        self.close()
        if not self._staged:  # cut short under its final name: it must not look whole
            os.replace(self.path, self.partial)
        return FileEntry(self.partial.name, self.bytes, self._hash.hexdigest())


@dataclass
class Capture:
    path: Path
    manifest: Manifest


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._seq = 0

    def check_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".rescue-probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise RescueError(f"cannot write to capture directory {self.root}: {e.strerror}") from None

    def new_capture(self, peer: str, started: float, header: dict[str, str] | None = None) -> Capture:
        """A new directory for one arrival, with a `receiving` manifest that recovery finds after a KILL
        (with the header's fields, so that a capture whose end never came still names its machine).

        Named by rescue.capture.identity: per machine when the header says which, else per peer address.
        """
        peer_dir = self.root / (safe_relpath(identity.machine_dir(header, peer)) or "unknown")
        peer_dir.mkdir(parents=True, exist_ok=True)
        if not _real_directory(peer_dir):
            raise OSError(errno.ELOOP, "not a directory of its own (a link?) inside the capture directory")
        while True:
            self._seq += 1
            path = peer_dir / identity.capture_name(started, f"{self._seq:04d}")
            try:
                path.mkdir()
            except FileExistsError:
                continue  # a capture of an earlier run in the same second
            cap = Capture(path, Manifest(peer=peer, started=iso(started), header=dict(header or {})))
            try:
                # Room reserved now for the final manifest, should the disk be full by then.
                write_manifest(path, cap.manifest, durable=False, reserve=MANIFEST_RESERVE)
            except OSError:
                with contextlib.suppress(OSError):
                    path.rmdir()
                raise
            return cap

    def recover(self) -> list[tuple[Path, str | None]]:
        """Mark captures left `receiving` by a listener that was killed as incomplete.

        Returns each capture it marked (problem None) and each manifest it could not read (the problem),
        so that nothing is passed over in silence.
        """
        found: list[tuple[Path, str | None]] = []
        for path in sorted(p for p in self.root.glob("*/*") if not p.name.startswith(".")):
            if not (_real_directory(path) and _real_directory(path.parent)):
                continue  # a link planted inside --dir: not ours to rewrite
            if not (path / MANIFEST).exists():
                # Killed between mkdir and the first manifest: the peer's directory names it.
                manifest = Manifest(peer=path.parent.name, started=iso(path.stat().st_mtime))
            else:
                try:
                    path, manifest = read_manifest(path)
                except RescueError as e:
                    found.append((path, str(e)))
                    continue
            if manifest.status is not Status.RECEIVING:
                continue
            files = [
                _describe(p, path)
                for p in sorted(path.rglob("*"))
                if p.is_file() and p.name not in (MANIFEST, MANIFEST + PARTIAL)
            ]
            manifest.status, manifest.reason = Status.INCOMPLETE, "the listener stopped during the transfer"
            whole = [f.name for f in files if f.name in (SPOOL, SPOOL + ".gz")]
            if whole:  # the stream had all arrived; its extraction or diagnosis was cut short
                manifest.reason = f"the listener stopped before it finished the capture ({whole[0]} is whole)"
            manifest.files = files
            write_manifest(path, manifest)
            found.append((path, None))
        return found


def _describe(path: Path, base: Path) -> FileEntry:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return FileEntry(str(path.relative_to(base)), path.stat().st_size, h.hexdigest())


def _real_directory(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


_SUM_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")


def verify_sha256sums(text: str | Iterable[str], files: dict[str, str]) -> tuple[str, list[str]]:
    """Check a SHA256SUMS member against the stored files' hashes: ("verified"|"mismatch", problems).

    Lines are taken one at a time (a file object streams) and the problems listed are bounded.
    """
    problems: list[str] = []
    checked = more = 0
    for line in text.splitlines() if isinstance(text, str) else text:
        m = _SUM_LINE.fullmatch(line.strip())
        if not m:
            continue
        want, name = m.group(1).lower(), safe_relpath(m.group(2)) or m.group(2)
        got = files.get(name)
        checked += 1
        problem = None
        if got is None:
            problem = f"{name}: listed but not received"
        elif got != want:
            problem = f"{name}: sha256 differs"
        if problem and len(problems) < MAX_SUM_PROBLEMS:
            problems.append(problem)
        elif problem:
            more += 1
    if more:
        problems.append(f"and {more} more")
    if checked == 0:
        return "mismatch", ["SHA256SUMS lists no files"]
    return ("verified" if not problems else "mismatch"), problems


def verify_sha256sums_file(path: Path, files: dict[str, str]) -> tuple[str, list[str]]:
    """verify_sha256sums over a stored SHA256SUMS, read line by line up to MAX_SHA256SUMS bytes."""
    with path.open("rb") as f:
        lines = _bounded_lines(f, MAX_SHA256SUMS)
        verdict, problems = verify_sha256sums(lines, files)
        if f.read(1):
            too_big = f"SHA256SUMS is larger than {MAX_SHA256SUMS >> 20} MiB: not read whole"
            return "mismatch", [*problems, too_big]
    return verdict, problems


def _bounded_lines(f: BinaryIO, limit: int) -> Iterator[str]:
    """Lines of at most 4 KiB each (longer ones are no sum line), until limit bytes were read."""
    left = limit
    while left > 0:
        line = f.readline(min(4096, left))
        if not line:
            return
        left -= len(line)
        while not line.endswith(b"\n") and left > 0:  # the rest of an overlong line: skipped
            rest = f.readline(min(4096, left))
            if not rest:
                break
            left -= len(rest)
            line = b""  # not a sum line
            if rest.endswith(b"\n"):
                break
        yield line.decode("utf-8", errors="replace")

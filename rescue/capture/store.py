"""Capture directories: safe names, partial files that only become visible when complete, manifests.

Layout: ROOT/<machine or peer-ip>/<UTC yyyymmddThhmmssZ>-<seq>/ (named in identity.py) holding the
received files and manifest.json.
A file is written as NAME.partial and renamed to NAME after one fsync; a capture whose listener died
keeps its .partial files, and the next start marks it incomplete (see recover()).
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import os
import re
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from rescue.capture import identity
from rescue.capture.manifest import (
    MANIFEST,
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
        if part == MANIFEST or part.endswith(PARTIAL):
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
        self._staged = staged
        where = self.partial if staged else self.path
        self._fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        self._hash = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes | memoryview) -> None:
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
        while True:
            self._seq += 1
            path = peer_dir / identity.capture_name(started, f"{self._seq:04d}")
            try:
                path.mkdir()
            except FileExistsError:
                continue  # a capture of an earlier run in the same second
            cap = Capture(path, Manifest(peer=peer, started=iso(started), header=dict(header or {})))
            write_manifest(path, cap.manifest, durable=False)
            return cap

    def recover(self) -> list[tuple[Path, str | None]]:
        """Mark captures left `receiving` by a listener that was killed as incomplete.

        Returns each capture it marked (problem None) and each manifest it could not read (the problem),
        so that nothing is passed over in silence.
        """
        found: list[tuple[Path, str | None]] = []
        for path in sorted(p for p in self.root.glob("*/*") if p.is_dir() and not p.name.startswith(".")):
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
            whole = [f.name for f in files if f.name in ("stream.tar", "stream.tar.gz")]
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


def verify_sha256sums(text: str, files: dict[str, str]) -> tuple[str, list[str]]:
    """Check a SHA256SUMS member against the stored files' hashes: ("verified"|"mismatch", problems)."""
    problems = []
    checked = 0
    for line in text.splitlines():
        m = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](.+)", line.strip())
        if not m:
            continue
        want, name = m.group(1).lower(), safe_relpath(m.group(2)) or m.group(2)
        got = files.get(name)
        checked += 1
        if got is None:
            problems.append(f"{name}: listed but not received")
        elif got != want:
            problems.append(f"{name}: sha256 differs")
    if checked == 0:
        return "mismatch", ["SHA256SUMS lists no files"]
    return ("verified" if not problems else "mismatch"), problems

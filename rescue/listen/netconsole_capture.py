"""netconsole.log on disk: a capture of its own, or a file inside the TCP bundle's capture of the same boot.

While a sender streams, the file is `netconsole.log.partial` (appended, hashed as it goes); when it goes
quiet or its kernel panics the file is fsynced and renamed `netconsole.log`, and the manifest lists it. More
messages later rename it back to `.partial` and append: a file under its final name is always whole as far
as the manifest says. Everything here runs on the event loop's thread except the analysis.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import time
from pathlib import Path

from rescue.capture.manifest import (
    MANIFEST,
    MANIFEST_RESERVE,
    PARTIAL,
    FileEntry,
    Kind,
    Manifest,
    Status,
    read_manifest,
    write_manifest,
    write_manifest_in_place,
)
from rescue.capture.store import Store, iso
from rescue.units import human_size

LOG = "netconsole.log"


FLUSH_AT = 64 * 1024  # bytes buffered before a write (else each tick of the endpoint writes)


class LogFile:
    """An append-only file whose name says whether it is whole: NAME.partial while written, NAME once done.

    Writes are buffered (up to FLUSH_AT, or until the endpoint's next tick): one system call per message
    would cost more than the message itself."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._hash = hashlib.sha256()
        self.bytes = 0  # written and buffered
        self.unwritten = 0  # bytes the disk refused (full): dropped, so the file and its hash agree
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)

    @property
    def partial(self) -> Path:
        return self.directory / (LOG + PARTIAL)

    @property
    def final(self) -> Path:
        return self.directory / LOG

    @property
    def open(self) -> bool:
        return self._fd >= 0

    def write(self, data: bytes) -> None:
        self._buffer.append(data)
        self._buffered += len(data)
        self.bytes += len(data)
        if self._buffered >= FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        data, self._buffer, self._buffered = b"".join(self._buffer), [], 0
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, data[written:])
        finally:  # what the disk did not take is dropped and counted: the manifest describes the file
            self._hash.update(data[:written])
            self.unwritten += len(data) - written
            self.bytes -= len(data) - written

    def commit(self) -> FileEntry:
        """fsync, close and give the file its final name."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):  # a full disk: counted in unwritten, said by the caller
                self.flush()
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            os.replace(self.partial, self.final)
        return self.entry()

    def entry(self) -> FileEntry:
        return FileEntry(LOG, self.bytes, self._hash.hexdigest())

    def reopen(self) -> None:
        """More to append after a commit: back to NAME.partial."""
        if self._fd < 0:
            os.replace(self.final, self.partial)
            self._fd = os.open(self.partial, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)

    def move(self, directory: Path) -> None:
        """Into another capture directory (the same file system: a rename)."""
        if self._fd >= 0:
            self.flush()
        src = self.partial if self._fd >= 0 else self.final
        os.replace(src, directory / src.name)
        self.directory = directory

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                self.flush()
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1


class NetCapture:
    """Where one sender's stream of one boot goes."""

    def __init__(self, store: Store, peer: str, header: dict[str, str], max_bytes: int, into: Path | None):
        self.peer = peer
        self.header = header
        self.max_bytes = max_bytes
        self.dropped = 0  # lines not written: over max_bytes
        self.analysis: dict[str, object] | None = None
        self.reason: str | None = None
        self.finished = False
        self.status = Status.RECEIVING
        if into is not None:
            self.path, self.own = into, False  # inside the bundle's capture of this boot
        else:
            cap = store.new_capture(peer, time.time(), header)  # DIR/<machine>/ when the identity line came
            self.path, self.own = cap.path, True
            self.manifest = cap.manifest
            self.manifest.kind, self.manifest.header = Kind.NETCONSOLE, header  # one dict: named later too
            # Padded, as the TCP path's: on a full disk the final manifest goes over these blocks.
            write_manifest(self.path, self.manifest, durable=False, reserve=MANIFEST_RESERVE)
        self.log = LogFile(self.path)

    def write(self, lines: list[str]) -> None:
        if not lines:
            return
        if self.finished:
            self.resume()
        data = ("\n".join(lines) + "\n").encode()
        if self.log.bytes + len(data) > self.max_bytes:
            if not self.dropped:
                self.log.write(f"rescue: netconsole: stopped at {human_size(self.max_bytes)}\n".encode())
            self.dropped += len(lines)
            return
        self.log.write(data)

    def resume(self) -> None:
        self.log.reopen()
        self.finished, self.status = False, Status.RECEIVING
        if self.own:
            self.manifest.status = Status.RECEIVING
            write_manifest(self.path, self.manifest, durable=False, reserve=MANIFEST_RESERVE)

    def finish(self, status: Status, reason: str, received: int) -> None:
        """Commit the file and write the manifest that lists it (analysis follows in record())."""
        if self.dropped:
            reason += f"; {self.dropped} lines over the size limit not kept"
        entry = self.log.commit()
        if self.log.unwritten:
            status = Status.INCOMPLETE
            reason = f"disk full: {human_size(self.log.unwritten)} of the stream not written; {reason}"
        self.finished, self.status, self.reason = True, status, reason
        if self.own:
            m = self.manifest
            m.status, m.reason, m.ended, m.stream_bytes = status, reason, iso(time.time()), received
            m.files = [entry]
            _write_final(self.path, m)
        else:
            self._update_bundle(entry, None)

    def record(self, analysis: dict[str, object]) -> Manifest | None:
        """The analysis of the finished capture into its manifest; None when the stream resumed meanwhile."""
        self.analysis = analysis
        if not self.finished:
            return None
        entry = self.log.entry()
        if self.own:
            self.manifest.analysis = analysis
            _write_final(self.path, self.manifest)
            return self.manifest
        return self._update_bundle(entry, analysis)

    def _update_bundle(self, entry: FileEntry, analysis: dict[str, object] | None) -> Manifest:
        _, m = read_manifest(self.path)
        m.files = [f for f in m.files if f.name not in (LOG, LOG + PARTIAL)] + [entry]
        m.header.setdefault("netconsole", self.peer)
        if analysis is not None:
            m.analysis = analysis
        _write_final(self.path, m)
        return m

    def join(self, bundle: Path) -> Path | None:
        """Move into the bundle's capture of the same boot; the old capture directory goes. Returns it."""
        old = self.path
        self.log.move(bundle)
        self.path = bundle
        if not self.own:
            return None
        self.own = False
        with contextlib.suppress(OSError):
            (old / MANIFEST).unlink()
            old.rmdir()
        if self.finished:
            self._update_bundle(self.log.entry(), None)
        return old


def _write_final(directory: Path, m: Manifest) -> None:
    """The manifest; on a full disk a compact one over the blocks of the one already there (the analysis
    left out), so it never stays `receiving` and never lies about the file."""
    try:
        write_manifest(directory, m)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        write_manifest_in_place(directory, m)

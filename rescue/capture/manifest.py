"""manifest.json: the one typed Manifest of a capture, and the one bounded reader every user goes through.

The listener writes it (a `receiving` manifest when a capture starts, the final one once), recovery rewrites
those a killed listener left, analyze and replay read it. The JSON shape is what the listener has always
written, so captures stored by older versions stay readable.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from rescue.errors import RescueError
from rescue.reading import load_json

MANIFEST = "manifest.json"
PARTIAL = ".partial"  # a file being written; renamed to its final name once complete
MAX_MANIFEST = 16 << 20  # what the listener writes is a few KiB; a larger one is not ours
# The `receiving` manifest is padded to this size, so the final one can overwrite those blocks in place
# when the disk is full by then (write_manifest_in_place).
MANIFEST_RESERVE = 8192


class Status(StrEnum):
    RECEIVING = "receiving"  # the listener is (or was, if it was killed) still receiving
    COMPLETE = "complete"
    INCOMPLETE = "incomplete"  # bytes kept, but the stream did not end cleanly: `reason` says why
    REJECTED = "rejected"  # refused (token): nothing of the body kept
    CORRUPT = "corrupt"  # all arrived, but the sender's SHA256SUMS does not match what arrived


class Kind(StrEnum):
    """How the stream arrived: what replay sends again. A `RESCUE/1` header line prefixes `header+`."""

    RAW = "raw"
    TAR = "tar"
    GZIP = "gzip"  # a gzip'd file that held no tar, kept as it came
    TAR_GZ = "tar.gz"
    HEADER = "header"  # a header and nothing after it (a rejected stream)
    HEADER_RAW = "header+raw"
    HEADER_TAR = "header+tar"
    HEADER_GZIP = "header+gzip"
    HEADER_TAR_GZ = "header+tar.gz"
    NETCONSOLE = "netconsole"  # kernel messages over UDP (listen.netconsole): no stream to replay

    @property
    def body(self) -> str:
        return self.value.removeprefix("header+")

    @classmethod
    def of(cls, body: str, *, header: bool) -> Kind:
        return cls(f"header+{body}" if header else body)


@dataclass
class FileEntry:
    name: str
    bytes: int
    sha256: str
    encoding: str = "utf-8"  # how the sender's name was decoded: utf-8, a legacy codec, or "escaped"

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "bytes": self.bytes, "sha256": self.sha256}
        if self.encoding != "utf-8":
            d["name_encoding"] = self.encoding
        return d


_OPTIONAL = ("sha256sums_problems", "skipped", "analysis", "manifest_error", "header_problems", "rejections")


@dataclass
class Manifest:
    peer: str
    started: str
    status: Status = Status.RECEIVING
    ended: str | None = None
    kind: Kind | None = None
    header: dict[str, str] = field(default_factory=dict)  # the RESCUE/1 fields, never the token
    stream_bytes: int | None = None  # body bytes off the wire
    files: list[FileEntry] = field(default_factory=list)
    reason: str | None = None
    sha256sums: str = "absent"  # verified, mismatch or absent
    sha256sums_problems: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  # tar members not extracted, and why
    analysis: dict[str, Any] | None = None
    manifest_error: str | None = None  # the final write failed (disk full): said in the event instead
    header_problems: list[str] = field(default_factory=list)  # fields of the header line not understood
    rejections: int = 0  # rejected: how many streams of this peer this one stands for (in one minute)
    version: int = 1

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"version": self.version, "peer": self.peer, "started": self.started}
        d["status"] = str(self.status)
        if self.status is Status.RECEIVING:
            return {**d, "header": self.header} if self.header else d
        d.update(ended=self.ended, kind=self.kind and str(self.kind), header=self.header)
        d["stream"] = {"bytes": self.stream_bytes}
        d["files"] = [f.to_json() for f in self.files]
        d.update(reason=self.reason, sha256sums=self.sha256sums)
        for key in _OPTIONAL:
            if getattr(self, key):
                d[key] = getattr(self, key)
        return d

    @classmethod
    def from_json(cls, data: Any, where: Path) -> Manifest:
        """A manifest from its JSON; RescueError naming `where` when it is not one rescue writes."""
        try:
            if not isinstance(data, dict):
                raise TypeError
            header = data.get("header") or {}
            stream = data.get("stream") or {}
            return cls(
                peer=str(data.get("peer", "?")),
                started=str(data.get("started", "")),
                status=Status(data.get("status", "complete")),
                ended=data.get("ended"),
                kind=Kind(data["kind"]) if data.get("kind") else None,
                header={str(k): str(v) for k, v in header.items()},
                stream_bytes=stream.get("bytes") if isinstance(stream, dict) else None,
                files=[_file_entry(f) for f in data.get("files") or []],
                reason=data.get("reason"),
                sha256sums=str(data.get("sha256sums", "absent")),
                sha256sums_problems=list(data.get("sha256sums_problems") or []),
                skipped=list(data.get("skipped") or []),
                analysis=data.get("analysis"),
                manifest_error=data.get("manifest_error"),
                header_problems=[str(p) for p in data.get("header_problems") or []],
                rejections=int(data.get("rejections") or 0),
                version=int(data.get("version", 1)),
            )
        except (TypeError, ValueError, KeyError, AttributeError):
            raise RescueError(
                f"{where}: not a capture manifest", hint="move it away to analyse the capture's files alone"
            ) from None


def write_manifest_in_place(directory: Path, manifest: Manifest) -> None:
    """The last resort when the disk is full: overwrite the blocks manifest.json already holds (the
    `receiving` one was padded to MANIFEST_RESERVE) with a compact manifest: no analysis, and as many
    file entries as fit, the rest counted."""
    fd = os.open(directory / MANIFEST, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        room = os.fstat(fd).st_size
        doc = manifest.to_json()
        doc.pop("analysis", None)
        files = list(doc.get("files", []))
        while True:
            data = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
            if len(data) <= room or not files:
                break
            files.pop()
            doc["files"] = files
            doc["files_not_listed"] = len(manifest.files) - len(files)
        if len(data) > room:
            keep = ("version", "peer", "started", "status", "reason", "files_not_listed")
            small = {k: doc[k] for k in keep if k in doc}
            data = json.dumps(small, separators=(",", ":")).encode()[:room]
        _write_all(fd, data.ljust(room - 1) + b"\n" if len(data) < room else data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_entry(f: Any) -> FileEntry:
    return FileEntry(str(f["name"]), int(f["bytes"]), str(f["sha256"]), str(f.get("name_encoding", "utf-8")))


def read_manifest(capture: Path) -> tuple[Path, Manifest]:
    """(capture directory, its manifest) for a capture directory or its manifest.json; bounded in size."""
    directory = capture.parent if capture.name == MANIFEST else capture
    path = directory / MANIFEST
    if not path.is_file():
        raise RescueError(f"{directory}: not a capture (no {MANIFEST})")
    return directory, Manifest.from_json(load_json(path, MAX_MANIFEST), path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_manifest(directory: Path, manifest: Manifest, *, durable: bool = True, reserve: int = 0) -> None:
    """Replace manifest.json atomically; durable also fsyncs the file and the directory.

    reserve pads the file with trailing white space (still valid JSON) to hold that many bytes.
    """
    tmp = directory / (MANIFEST + PARTIAL)
    data = json.dumps(manifest.to_json(), indent=2, ensure_ascii=False).encode() + b"\n"
    if len(data) < reserve:
        data += b" " * (reserve - len(data) - 1) + b"\n"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
        try:
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, directory / MANIFEST)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()  # no empty or cut manifest.json.partial left behind
        raise
    if durable:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

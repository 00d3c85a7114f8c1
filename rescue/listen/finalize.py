"""Finalize what one connection received, in a worker thread: commit, extract, verify, diagnose, manifest.

It works on the Received value alone (the connection is gone or going) and returns the capture with its
final manifest, written once and durably. The diagnosis gets the manifest in memory, not read back.
"""

from __future__ import annotations

import time
from typing import Any

from rescue.capture.extract import extract_tar, gzip_holds_tar
from rescue.capture.manifest import FileEntry, Kind, Status, write_manifest
from rescue.capture.store import Capture, FileWriter, iso, verify_sha256sums
from rescue.diagnose.analyze import analyze_path
from rescue.listen.config import Settings
from rescue.listen.connection import SPOOL, Received, io_reason


def finalize(received: Received, settings: Settings) -> Capture:
    cap = received.capture
    m = cap.manifest
    status, reason, kind = received.status, received.reason, received.kind
    files: list[FileEntry] = []
    sink = received.sink
    try:
        if sink is not None and kind.body == "raw":
            files.append(sink.commit() if status is Status.COMPLETE else sink.keep_partial())
        elif sink is not None:
            status, reason, kind, files = _unpack(received, sink, settings)
        hashes = {f.name: f.sha256 for f in files}
        if "SHA256SUMS" in hashes:
            text = (cap.path / "SHA256SUMS").read_text(errors="replace")
            m.sha256sums, m.sha256sums_problems = verify_sha256sums(text, hashes)
    except OSError as e:
        status, reason = Status.INCOMPLETE, io_reason(e)
    m.ended = iso(time.time())
    m.kind = kind
    m.header = {k: v for k, v in received.header.items() if k != "token"}
    m.stream_bytes = received.body_bytes
    m.files = files
    m.status, m.reason = status, reason
    if status is not Status.REJECTED and files:
        m.analysis = analyze_capture(cap)
    try:
        write_manifest(cap.path, m)
    except OSError as e:
        # Disk full even for the manifest: the files are there; say so rather than lose them quietly.
        m.manifest_error = e.strerror
    return cap


def _unpack(
    received: Received, spool: FileWriter, settings: Settings
) -> tuple[Status, str | None, Kind, list[FileEntry]]:
    """Extract a tar (or gzip'd tar) spool; keep the spool itself whenever extraction was not whole."""
    status, reason, kind = received.status, received.reason, received.kind
    spool.close()
    path = spool.partial
    gz = path.name.startswith(SPOOL + ".gz")
    if gz and gzip_holds_tar(path):
        kind = Kind.of("tar.gz", header=kind.value.startswith("header+"))
    elif gz:
        if status is not Status.COMPLETE:
            return status, reason, kind, [spool.keep_partial()]
        return status, reason, kind, [spool.commit(received.raw_name or "stream.gz")]
    result = extract_tar(
        path,
        received.capture.path,
        max_members=settings.max_members,
        legacy_encoding=settings.legacy_encoding,
    )
    received.capture.manifest.skipped = result.skipped
    files = result.files
    if result.error or status is not Status.COMPLETE:
        if status is Status.COMPLETE:
            status, reason = Status.INCOMPLETE, result.error
        files.append(spool.keep_partial())  # the wire bytes, for a person to look at
    else:
        path.unlink()
    return status, reason, kind, files


def analyze_capture(cap: Capture) -> dict[str, Any]:
    """The analysis of a finished capture, for its manifest; an analysis failure never loses the capture."""
    try:
        report = analyze_path(cap.path, manifest=cap.manifest)
        return {**report.to_json(), "headline": report.headline()}
    except Exception as e:
        return {"error": f"analysis failed: {e}"}

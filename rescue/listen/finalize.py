"""Finalize what one connection received, in a worker thread: commit, extract, verify, diagnose, manifest.

It works on the Received value alone (the connection is gone or going) and returns the capture with its
final manifest, written once and durably. The diagnosis gets the manifest in memory, not read back.
"""

from __future__ import annotations

import time
from typing import Any

from rescue.capture.extract import extract_tar, gzip_holds_tar
from rescue.capture.manifest import FileEntry, Kind, Status, write_manifest, write_manifest_in_place
from rescue.capture.store import SPOOL, Capture, FileWriter, iso, verify_sha256sums_file
from rescue.diagnose.analyze import analyze_path
from rescue.listen.config import Settings
from rescue.listen.connection import Received, io_reason


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
            m.sha256sums, m.sha256sums_problems = verify_sha256sums_file(cap.path / "SHA256SUMS", hashes)
    except OSError as e:
        status, reason = Status.INCOMPLETE, io_reason(e)
        if sink is not None and not files and sink.bytes:
            files.append(sink.keep_partial())  # the bytes that did arrive are still listed
    if status is Status.COMPLETE and m.sha256sums == "mismatch":
        status, reason = Status.CORRUPT, "SHA256SUMS does not match what arrived: " + m.sha256sums_problems[0]
    m.ended = iso(time.time())
    m.kind = kind
    m.header = {k: v for k, v in received.header.items() if k != "token"}
    m.header_problems = list(received.header_problems)
    m.stream_bytes = received.body_bytes
    m.files = files
    m.status, m.reason = status, reason
    if status is not Status.REJECTED and files:
        m.analysis = analyze_capture(cap)
    write_final_manifest(cap)
    return cap


def write_final_manifest(cap: Capture) -> None:
    """The final manifest, durably; when the disk is full, a compact one over the reserved blocks of the
    `receiving` one, so the manifest on disk never stays `receiving` and never lies about a capture."""
    m = cap.manifest
    m.manifest_error = None
    try:
        write_manifest(cap.path, m)
        return
    except OSError as e:
        m.manifest_error = e.strerror
    try:
        write_manifest_in_place(cap.path, m)
    except OSError as e:
        m.manifest_error = e.strerror  # the server tries again every second


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
        max_bytes=settings.max_bytes,
    )
    received.capture.manifest.skipped = result.skipped
    files = result.files
    if result.error or status is not Status.COMPLETE:
        if status is Status.COMPLETE:
            status, reason = Status.INCOMPLETE, result.error
            if result.disk_error is not None:
                reason = io_reason(result.disk_error)
        files.append(spool.keep_partial())  # the wire bytes, for a person to look at
    else:
        path.unlink()
    return status, reason, kind, files


def analyze_capture(cap: Capture) -> dict[str, Any]:
    """The analysis of a finished capture, for its manifest; an analysis failure never loses the capture."""
    try:
        report = analyze_path(cap.path, manifest=cap.manifest)
        headline = report.headline()
        if cap.manifest.status is Status.CORRUPT:
            # Said first: a diagnosis of files that are not what the machine sent may mislead.
            problems = len(cap.manifest.sha256sums_problems)
            headline = f"CORRUPT: SHA256SUMS does not match what arrived ({problems} problem(s)); {headline}"
        return {**report.to_json(), "headline": headline}
    except Exception as e:
        return {"error": f"analysis failed: {e}"}

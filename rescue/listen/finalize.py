"""Finalize what one connection received: extract, verify, diagnose, write the manifest once.

It runs in a worker process (listen.pipeline) on a Job: a small picklable value naming the capture
directory and the spool the connection left there (its bytes already durable). Members are written under
their final names without an fsync each, then the manifest: the pipeline's group commit (capture.commit)
makes the whole capture durable with one syncfs before anyone is told it is stored. Nothing here points
back to the connection or the event loop.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rescue.capture.extract import extract_tar, gzip_holds_tar
from rescue.capture.manifest import (
    PARTIAL,
    FileEntry,
    Kind,
    Manifest,
    Status,
    write_manifest,
    write_manifest_in_place,
)
from rescue.capture.store import SPOOL, iso, verify_sha256sums_file
from rescue.diagnose.analyze import analyze_path


def io_reason(e: OSError) -> str:
    return "disk full" if e.errno == errno.ENOSPC else f"cannot write: {e.strerror}"


@dataclass(frozen=True)
class Job:
    """One received stream, as the worker needs it; small, so that thousands may queue."""

    path: str  # the capture directory
    peer: str
    started: str
    kind: str  # as in the manifest: raw, tar, gzip, header+tar, ...
    status: str
    reason: str | None
    header: dict[str, str] = field(default_factory=dict)  # without the token
    body_bytes: int = 0
    spool: str | None = None  # the file the connection wrote (its final or its .partial name); None: none
    spool_sha256: str = ""
    raw_name: str | None = None
    max_members: int = 10_000
    max_bytes: int = 4 << 30  # extracted bytes too count against --max-bytes
    legacy_encoding: str = "gbk"
    header_problems: tuple[str, ...] = ()  # what the header line got wrong (never its text)


def finalize_job(job: Job) -> dict[str, Any]:
    """Turn a spool into a finished capture; returns the manifest as written (JSON form)."""
    path = Path(job.path)
    m = Manifest(peer=job.peer, started=job.started)
    status, reason, kind = Status(job.status), job.reason, Kind(job.kind)
    files: list[FileEntry] = []
    try:
        if job.spool is not None and kind.body == "raw":
            files.append(FileEntry(job.spool, job.body_bytes, job.spool_sha256))
        elif job.spool is not None:
            status, reason, kind, files = _unpack(job, m, status, reason, kind)
        hashes = {f.name: f.sha256 for f in files}
        if "SHA256SUMS" in hashes:
            m.sha256sums, m.sha256sums_problems = verify_sha256sums_file(path / "SHA256SUMS", hashes)
    except OSError as e:
        status, reason = Status.INCOMPLETE, io_reason(e)
        if job.spool is not None and not files and (path / job.spool).exists():
            files.append(FileEntry(job.spool, job.body_bytes, job.spool_sha256))  # what arrived, still listed
    if status is Status.COMPLETE and m.sha256sums == "mismatch":
        status, reason = Status.CORRUPT, "SHA256SUMS does not match what arrived: " + m.sha256sums_problems[0]
    m.ended = iso(time.time())
    m.kind = kind
    m.header = dict(job.header)
    m.header_problems = list(job.header_problems)
    m.stream_bytes = job.body_bytes
    m.files = files
    m.status, m.reason = status, reason
    if status is not Status.REJECTED and files:
        m.analysis = analyze_capture(path, m)
    extracted_spool = path / SPOOL if kind.body == "tar" and status is Status.COMPLETE else None
    write_final_manifest(path, m, spare=extracted_spool)
    if extracted_spool is not None and not m.manifest_error:
        # The wire bytes go only once the manifest lists what came of them.
        with contextlib.suppress(FileNotFoundError):
            extracted_spool.unlink()
    return m.to_json()


def write_final_manifest(
    path: Path, m: Manifest, *, spare: Path | None = None, durable: bool = False
) -> None:
    """The final manifest (made durable by the group commit unless durable). When the disk is full, the
    spare (an extracted spool: its members are all out) makes room first; failing that, a compact manifest
    goes over the reserved blocks of the `receiving` one, so the manifest on disk never stays `receiving`
    and never lies about a capture. manifest_error then says why the whole one is not written yet (the
    listener tries again every second)."""
    m.manifest_error = None
    try:
        try:
            write_manifest(path, m, durable=durable)
        except OSError as e:
            if e.errno != errno.ENOSPC or spare is None or not spare.exists():
                raise
            spare.unlink()
            write_manifest(path, m, durable=durable)
        return
    except OSError as e:
        m.manifest_error = e.strerror
    try:
        write_manifest_in_place(path, m)
    except OSError as e:
        m.manifest_error = e.strerror


def _unpack(
    job: Job, m: Manifest, status: Status, reason: str | None, kind: Kind
) -> tuple[Status, str | None, Kind, list[FileEntry]]:
    """Extract a tar (or gzip'd tar) spool; keep the spool itself whenever extraction was not whole."""
    assert job.spool is not None
    directory = Path(job.path)
    spool = directory / job.spool
    whole = FileEntry(job.spool, job.body_bytes, job.spool_sha256)
    gz = job.spool.startswith(SPOOL + ".gz")
    if gz and gzip_holds_tar(spool):
        kind = Kind.of("tar.gz", header=kind.value.startswith("header+"))
    elif gz:
        if status is not Status.COMPLETE:
            return status, reason, kind, [whole]
        name = job.raw_name or "stream.gz"
        os.replace(spool, directory / name)
        return status, reason, kind, [FileEntry(name, job.body_bytes, job.spool_sha256)]
    result = extract_tar(
        spool,
        directory,
        max_members=job.max_members,
        legacy_encoding=job.legacy_encoding,
        max_bytes=job.max_bytes,
        durable=False,
    )
    m.skipped = result.skipped
    files = result.files
    if result.error or status is not Status.COMPLETE:
        if status is Status.COMPLETE:
            status, reason = Status.INCOMPLETE, result.error
            if result.disk_error is not None:
                reason = io_reason(result.disk_error)
        if not spool.name.endswith(PARTIAL):  # the wire bytes, kept for a person to look at
            os.replace(spool, spool.with_name(spool.name + PARTIAL))
            whole = FileEntry(spool.name + PARTIAL, whole.bytes, whole.sha256)
        files.append(whole)
    elif spool.name != SPOOL:  # a whole gzip'd spool: the stream is what the members say
        with contextlib.suppress(FileNotFoundError):
            spool.unlink()
    return status, reason, kind, files


def analyze_capture(path: Path, manifest: Manifest) -> dict[str, Any]:
    """The analysis of a finished capture, for its manifest; an analysis failure never loses the capture."""
    try:
        report = analyze_path(path, manifest=manifest)
        headline = report.headline()
        if manifest.status is Status.CORRUPT:
            # Said first: a diagnosis of files that are not what the machine sent may mislead.
            problems = len(manifest.sha256sums_problems)
            headline = f"CORRUPT: SHA256SUMS does not match what arrived ({problems} problem(s)); {headline}"
        return {**report.to_json(), "headline": headline}
    except Exception as e:
        return {"error": f"analysis failed: {e}"}

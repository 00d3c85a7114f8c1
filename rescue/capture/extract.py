"""Tar members to files: regular files only, under safe names, each written whole or kept as .partial.

Links, devices and fifos, absolute names and names with ".." are skipped and listed, never created.
"""

from __future__ import annotations

import gzip
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from rescue.capture.manifest import PARTIAL, FileEntry
from rescue.capture.store import FileWriter, decode_name, safe_relpath

TAR_MAGIC_OFFSET = 257


def gzip_holds_tar(path: Path) -> bool:
    try:
        with gzip.open(path, "rb") as f:
            head = f.read(TAR_MAGIC_OFFSET + 5)
    except (OSError, EOFError, zlib.error):
        return False
    return head[TAR_MAGIC_OFFSET:] == b"ustar"


@dataclass
class TarResult:
    files: list[FileEntry] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None  # why extraction stopped early; None when the archive ended cleanly


_KINDS = {
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hard link",
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "fifo",
}


def extract_tar(
    spool: Path,
    dest: Path,
    *,
    max_members: int,
    legacy_encoding: str,
    durable: bool = True,
) -> TarResult:
    """Extract the regular files of a (possibly gzip'd, possibly truncated) tar below dest.

    Links, devices and fifos, absolute names and names with ".." are skipped and listed, never created.
    durable=False leaves the fsyncs to a group commit (capture.commit) of the whole capture.
    """
    result = TarResult()
    taken: set[str] = set()
    try:
        # "r|*": one pass, as the bytes arrived; surrogateescape keeps undecodable name bytes for us.
        with tarfile.open(spool, mode="r|*", encoding="utf-8", errors="surrogateescape") as tar:
            for count, member in enumerate(tar, start=1):
                if count > max_members:
                    result.error = f"more than {max_members} members; the rest was not extracted"
                    break
                raw = member.name.encode("utf-8", errors="surrogateescape")
                name, how = decode_name(raw, legacy_encoding)
                if member.isdir():
                    continue
                if not member.isreg():
                    result.skipped.append({"name": name, "reason": _KINDS.get(member.type, "special file")})
                    continue
                rel = safe_relpath(name)
                if rel is None:
                    result.skipped.append({"name": name, "reason": "absolute or '..' path"})
                    continue
                rel = _unique(rel, taken)
                source = tar.extractfile(member)
                if source is None:
                    continue
                try:
                    writer = FileWriter(dest, rel, staged=durable)
                except (NotADirectoryError, IsADirectoryError, FileExistsError):
                    result.skipped.append({"name": name, "reason": "clashes with another member's path"})
                    continue
                try:
                    while chunk := source.read(1 << 17):
                        writer.write(chunk)
                except BaseException:
                    # Keep what arrived of this member, under its .partial name.
                    partial = writer.keep_partial(durable=durable)
                    partial.name, partial.encoding = rel + PARTIAL, how
                    result.files.append(partial)
                    raise
                stored = writer.commit(durable=durable)
                stored.name, stored.encoding = rel, how
                result.files.append(stored)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        result.error = f"archive ends early or is damaged: {e}"
    return result


def _unique(rel: str, taken: set[str]) -> str:
    candidate, n = rel, 1
    while candidate in taken:
        n += 1
        candidate = f"{rel}~{n}"
    taken.add(candidate)
    return candidate

"""Stream kinds on the one port, told apart by their first bytes (DESIGN.md §3).

- header: a first line `RESCUE/1 key=value ...`, then a body of any other kind;
- tar: ustar magic at offset 257; gzip: gzip magic (a gzip'd tar, or a gzip'd file);
- raw: anything else, e.g. `cat dmesg.txt | nc HOST PORT`.
"""

from __future__ import annotations

import gzip
import re
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from rescue.capture.store import PARTIAL, FileWriter, StoredFile, decode_name, safe_relpath

HEADER_MAGIC = b"RESCUE/"
HEADER_VERSION = b"RESCUE/1"
MAX_HEADER = 4096
TAR_MAGIC_OFFSET = 257
GZIP_MAGIC = b"\x1f\x8b"
_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
_DMESG_START = re.compile(rb"^(<\d+>)?(\[\s*\d+\.\d+\]|Linux version )")


class HeaderError(ValueError):
    """The header line is present but unusable; the stream is rejected with this reason."""


def detect_kind(prefix: bytes, eof: bool) -> str | None:
    """ "header", "tar", "gzip" or "raw"; None while more bytes are needed to tell."""
    if prefix[: len(HEADER_MAGIC)] == HEADER_MAGIC[: len(prefix)] and prefix:
        if b"\n" in prefix[:MAX_HEADER]:
            return "header"
        if len(prefix) < MAX_HEADER and not eof:
            return None
        return "raw"  # no line end where a header would have one: plain data after all
    if prefix.startswith(GZIP_MAGIC):
        return "gzip"
    if len(prefix) >= TAR_MAGIC_OFFSET + 5:
        return "tar" if prefix[TAR_MAGIC_OFFSET : TAR_MAGIC_OFFSET + 5] == b"ustar" else "raw"
    if eof:
        return "raw"
    if len(prefix) < 2 and GZIP_MAGIC.startswith(prefix):
        return None
    return None


def parse_header(line: bytes) -> dict[str, str]:
    """`RESCUE/1 name=x token=y` -> {"name": "x", "token": "y"}; HeaderError when unusable."""
    try:
        text = line.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise HeaderError("header line is not UTF-8") from None
    words = text.split()
    if not words or words[0].encode() != HEADER_VERSION:
        raise HeaderError(f"unsupported protocol {words[0][:16] if words else ''!r} (expected RESCUE/1)")
    fields: dict[str, str] = {}
    for word in words[1:]:
        key, eq, value = word.partition("=")
        if not eq or not _KEY.fullmatch(key):
            raise HeaderError(f"bad header field {word[:40]!r}")
        fields[key] = value[:256]
    return fields


def looks_like_dmesg(prefix: bytes) -> bool:
    return bool(_DMESG_START.match(prefix.lstrip(b"\r\n")))


def gzip_holds_tar(path: Path) -> bool:
    try:
        with gzip.open(path, "rb") as f:
            head = f.read(TAR_MAGIC_OFFSET + 5)
    except (OSError, EOFError, zlib.error):
        return False
    return head[TAR_MAGIC_OFFSET:] == b"ustar"


@dataclass
class TarResult:
    files: list[StoredFile] = field(default_factory=list)
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
) -> TarResult:
    """Extract the regular files of a (possibly gzip'd, possibly truncated) tar below dest.

    Links, devices and fifos, absolute names and names with ".." are skipped and listed, never created.
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
                    writer = FileWriter(dest, rel)
                except (NotADirectoryError, IsADirectoryError, FileExistsError):
                    result.skipped.append({"name": name, "reason": "clashes with another member's path"})
                    continue
                try:
                    while chunk := source.read(1 << 17):
                        writer.write(chunk)
                except BaseException:
                    # Keep what arrived of this member, under its .partial name.
                    partial = writer.keep_partial()
                    partial.name, partial.encoding = rel + PARTIAL, how
                    result.files.append(partial)
                    raise
                stored = writer.commit()
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

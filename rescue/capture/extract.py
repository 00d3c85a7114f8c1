"""Tar members to files: regular files only, under safe names, each written whole or kept as .partial.

Links, devices and fifos, absolute names and names with ".." are skipped and listed, never created.
What is written is bounded (bytes, members, the size of names and sparse maps held in memory), whatever
the archive claims; an archive that stops without its end-of-archive block is said to be cut.
"""

from __future__ import annotations

import errno
import gzip
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from rescue.capture.manifest import PARTIAL, FileEntry
from rescue.capture.store import FileWriter, decode_name, safe_relpath

TAR_MAGIC_OFFSET = 257
BLOCK = tarfile.BLOCKSIZE
CHUNK = 1 << 16
MAX_META = 1 << 20  # a pax header or GNU long name held in memory; real ones are a few hundred bytes
MAX_SPARSE = 1 << 16  # sparse map entries of one member
# The disk failing stops the extraction; any other error concerns one member's name only.
_nti = tarfile.nti  # type: ignore[attr-defined]  # the octal/base-256 number of a header field
_DISK_FAILED = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})


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
    disk_error: OSError | None = None  # the disk failed (the capture's reason says so)
    written: int = 0


_KINDS = {
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hard link",
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "fifo",
}


class _TooLarge(tarfile.SubsequentHeaderError):  # type: ignore[name-defined,misc]
    """A header needing more memory than MAX_META or MAX_SPARSE (tarfile re-raises it as ReadError)."""


class _Bounded(tarfile.TarInfo):
    """tarfile's member parser, with what it reads into memory bounded and the last block remembered."""

    last_block: bytes | None = None  # set per TarFile through _tarinfo_for

    @classmethod
    def fromtarfile(cls, tf: tarfile.TarFile) -> Any:  # as CPython's, remembering buf
        fileobj: BinaryIO = tf.fileobj  # type: ignore[assignment]
        buf = fileobj.read(BLOCK)
        cls.last_block = buf
        obj = cls.frombuf(buf, tf.encoding, tf.errors)
        obj.offset = fileobj.tell() - BLOCK
        return obj._proc_member(tf)  # type: ignore[attr-defined]

    def _proc_gnulong(self, tf: tarfile.TarFile) -> Any:
        _cap(self.size, MAX_META, "long name")
        return super()._proc_gnulong(tf)  # type: ignore[misc]

    def _proc_pax(self, tf: tarfile.TarFile) -> Any:
        _cap(self.size, MAX_META, "pax header")
        return super()._proc_pax(tf)  # type: ignore[misc]

    def _proc_sparse(self, tf: tarfile.TarFile) -> Any:
        """Old GNU sparse, as CPython's but with the map bounded (its loop ends only with the data)."""
        structs, isextended, origsize = self._sparse_structs  # type: ignore[attr-defined]
        del self._sparse_structs  # type: ignore[attr-defined]
        fileobj: BinaryIO = tf.fileobj  # type: ignore[assignment]
        while isextended:
            _cap(len(structs), MAX_SPARSE, "sparse map")
            buf = fileobj.read(BLOCK)
            if len(buf) < BLOCK:
                raise tarfile.ReadError("cut inside a sparse map")
            for pos in range(0, 21 * 24, 24):
                try:
                    offset, numbytes = _nti(buf[pos : pos + 12]), _nti(buf[pos + 12 : pos + 24])
                except ValueError:
                    break
                if offset and numbytes:
                    structs.append((offset, numbytes))
            isextended = bool(buf[504])
        self.sparse = structs
        self.offset_data = fileobj.tell()
        tf.offset = self.offset_data + self._block(self.size)  # type: ignore[attr-defined]
        self.size = origsize
        return self

    def _proc_gnusparse_10(self, next: tarfile.TarInfo, pax_headers: Any, tf: tarfile.TarFile) -> Any:
        """GNU sparse 1.0, as CPython's but with the number of map entries bounded first."""
        fileobj: BinaryIO = tf.fileobj  # type: ignore[assignment]
        buf = fileobj.read(BLOCK)
        head, _, buf = buf.partition(b"\n")
        if not head.strip().isdigit():
            raise tarfile.ReadError("bad sparse map")
        fields = int(head)
        _cap(fields, MAX_SPARSE, "sparse map")
        numbers: list[int] = []
        while len(numbers) < fields * 2:
            if b"\n" not in buf:
                more = fileobj.read(BLOCK)
                if not more:
                    raise tarfile.ReadError("cut inside a sparse map")
                buf += more
                continue
            number, buf = buf.split(b"\n", 1)
            numbers.append(int(number))
        next.offset_data = fileobj.tell()
        next.sparse = list(zip(numbers[::2], numbers[1::2], strict=True))  # type: ignore[assignment]


def _cap(size: int, limit: int, what: str) -> None:
    if size > limit:
        raise _TooLarge(f"a {what} of {size:,} is more than the {limit:,} allowed")


def extract_tar(
    spool: Path,
    dest: Path,
    *,
    max_members: int,
    legacy_encoding: str,
    max_bytes: int | None = None,
    durable: bool = True,
) -> TarResult:
    """Extract the regular files of a (possibly gzip'd, possibly truncated) tar below dest.

    At most max_bytes are written in all (sparse holes and decompressed bytes count). A member's bytes
    that arrived are kept even when the archive is cut inside it (as NAME.partial). A member whose name
    cannot be used is stored under another name, and the next member is extracted all the same.
    durable=False leaves the fsyncs to a group commit (capture.commit) of the whole capture.
    """
    result = TarResult()
    taken: set[str] = set()
    budget = max_bytes if max_bytes is not None else 1 << 62

    class Parser(_Bounded):
        last_block = None

    count = 0
    try:
        # "r|*": one pass, as the bytes arrived; surrogateescape keeps undecodable name bytes for us.
        with tarfile.open(
            spool, mode="r|*", encoding="utf-8", errors="surrogateescape", tarinfo=Parser
        ) as tar:
            for count, member in enumerate(tar, start=1):
                if count > max_members:
                    result.error = f"more than {max_members} members; the rest was not extracted"
                    return result
                if not _extract_member(
                    tar, member, count, dest, legacy_encoding, taken, result, budget, durable
                ):
                    return result
            last = Parser.last_block
    except Exception as e:  # tarfile raises many kinds on hostile input: all mean damaged
        result.error = f"archive ends early or is damaged: {e}"
        return result
    if last is None or not last:
        result.error = "the archive ends without its end-of-archive block (cut between members)"
    elif len(last) < BLOCK:
        result.error = "the archive is cut inside a member header"
    elif last.count(0) != BLOCK:
        result.error = f"the archive is damaged after member {count} (a header that cannot be read)"
    return result


def _extract_member(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    count: int,
    dest: Path,
    legacy_encoding: str,
    taken: set[str],
    result: TarResult,
    budget: int,
    durable: bool,
) -> bool:
    """One member to a file (or a line in skipped); False when the extraction must stop."""
    raw = member.name.encode("utf-8", errors="surrogateescape")
    name, how = decode_name(raw, legacy_encoding)
    if member.isdir():
        return True
    if not member.isreg():
        result.skipped.append({"name": name, "reason": _KINDS.get(member.type, "special file")})
        return True
    rel = safe_relpath(name)
    if rel is None:
        result.skipped.append({"name": name, "reason": "absolute or '..' path"})
        return True
    try:
        writer, rel = _open_member(dest, _unique(rel, taken), name, count, taken, result, durable)
    except OSError as e:
        result.error, result.disk_error = f"cannot write: {e.strerror}", e
        return False
    try:
        cut = _copy(tar, member, writer, budget - result.written)
    except Exception as e:  # the disk failed, or the archive ended inside the member
        result.written += writer.bytes
        _keep(result, writer, rel, how, durable)  # what arrived of it is kept
        if isinstance(e, OSError) and e.errno in _DISK_FAILED:
            result.error, result.disk_error = f"cannot write: {e.strerror}", e
        else:
            result.error = f"archive ends early or is damaged: {e}"
        return False
    result.written += writer.bytes
    if cut:
        _keep(result, writer, rel, how, durable)
        result.error = "extracted files reached --max-bytes; the rest was not extracted"
        return False
    try:
        stored = _commit(writer, rel, taken, durable)
    except OSError as e:
        _keep(result, writer, rel, how, durable)
        result.error, result.disk_error = f"cannot write: {e.strerror}", e
        return False
    stored.encoding = how
    if stored.name != rel:
        result.skipped.append({"name": name, "reason": f"stored as {stored.name}: the name is taken"})
    result.files.append(stored)
    return True


def _open_member(
    dest: Path, rel: str, name: str, count: int, taken: set[str], result: TarResult, durable: bool
) -> tuple[FileWriter, str]:
    """A writer for the member, and the name it is stored under. A name that is taken (a member `d` after
    `d/x`) becomes rel~N; a name this file system refuses (a file where a directory is wanted, too long a
    path) becomes one of ours. Either way the bytes are kept and the sender's name goes to the manifest."""
    try:
        return FileWriter(dest, rel, staged=durable), rel
    except OSError as e:
        if e.errno in _DISK_FAILED:
            raise
        taken_by_dir = e.errno in (errno.EEXIST, errno.EISDIR)  # unstaged writers open the final name
        alt = _unique(rel if taken_by_dir else f"_member{count}", taken)
        why = "the name is taken" if taken_by_dir else e.strerror
    result.skipped.append({"name": name, "reason": f"stored as {alt}: {why}"})
    return FileWriter(dest, alt, staged=durable), alt


def _copy(tar: tarfile.TarFile, member: tarfile.TarInfo, writer: FileWriter, room: int) -> bool:
    """Copy a member's bytes; True when it was cut at room bytes.

    A plain member is read straight from the archive stream, so the bytes of a member the archive ends
    inside are written before the end is noticed (tarfile's reader drops the last short read).
    """
    if member.issparse():  # holes come out as zeros: only tarfile knows the map
        source = tar.extractfile(member)
        assert source is not None
        while chunk := source.read(min(CHUNK, room - writer.bytes + 1)):
            if writer.bytes + len(chunk) > room:
                writer.write(chunk[: room - writer.bytes])
                return True
            writer.write(chunk)
        return False
    stream: BinaryIO = tar.fileobj  # type: ignore[assignment]
    stream.seek(member.offset_data)  # forward only: where the data starts, after any headers
    left = member.size
    while left:
        if writer.bytes >= room:
            return True
        chunk = stream.read(min(CHUNK, left, room - writer.bytes))
        if not chunk:
            raise tarfile.ReadError("unexpected end of data")
        writer.write(chunk)
        left -= len(chunk)
    return False


def _keep(result: TarResult, writer: FileWriter, rel: str, how: str, durable: bool) -> None:
    partial = writer.keep_partial(durable=durable)
    partial.name, partial.encoding = rel + PARTIAL, how
    result.files.append(partial)


def _commit(writer: FileWriter, rel: str, taken: set[str], durable: bool) -> FileEntry:
    """Rename to rel, or to rel~N when rel became a directory (a member `d` after `d/x`)."""
    try:
        stored = writer.commit(durable=durable)
        stored.name = rel
        return stored
    except OSError as e:
        if e.errno not in (errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENOTEMPTY):
            raise
    alt = _unique(rel, taken)
    stored = writer.commit(Path(alt).name, durable=durable)
    stored.name = alt
    return stored


def _unique(rel: str, taken: set[str]) -> str:
    candidate, n = rel, 1
    while candidate in taken:
        n += 1
        candidate = f"{rel}~{n}"
    taken.add(candidate)
    return candidate

"""Read an initramfs the way the kernel unpacks it, without external tools.

An image is a sequence of segments: uncompressed newc cpio archives (the early microcode one comes first)
and compressed streams (gzip, zstd, xz, lzma, lz4 legacy, bzip2) that each hold one or more cpio archives,
with zero padding allowed between them. Later members overwrite earlier ones, as when the kernel unpacks.
Damage after the first segment is recorded in `problems` (the kernel would say "Initramfs unpacking
failed"), so that a truncated image can still be examined.
"""

from __future__ import annotations

import bz2
import contextlib
import lzma
import stat
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import lz4.block
import zstandard

from rescue.errors import RescueError
from rescue.image.cpio import MAGICS as CPIO_MAGICS
from rescue.image.cpio import CpioDamage, CpioRecord, scan_newc
from rescue.reading import read_bytes


class Compression(StrEnum):
    NONE = "cpio"
    GZIP = "gzip"
    ZSTD = "zstd"
    XZ = "xz"
    LZMA = "lzma"
    LZ4 = "lz4"
    BZIP2 = "bzip2"


_LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"
_LZ4_BLOCK = 8 << 20  # the legacy format's fixed uncompressed block size
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

# (magic, compression): what the kernel's decompress_method() recognises, in the same spirit.
_MAGICS: list[tuple[bytes, Compression]] = [
    (b"\x1f\x8b", Compression.GZIP),
    (b"\x1f\x9e", Compression.GZIP),
    (_ZSTD_MAGIC, Compression.ZSTD),
    (b"\xfd7zXZ\x00", Compression.XZ),
    (b"\x5d\x00\x00", Compression.LZMA),
    (_LZ4_LEGACY_MAGIC, Compression.LZ4),
    (b"BZh", Compression.BZIP2),
]
_UNSUPPORTED = {b"\x89LZO": "lzo"}


# Real images unpack to 30-300 MB; the cap keeps a decompression bomb (a few KB of zstd that expand to many
# GiB) from exhausting memory, since the whole unpacked image is held to be examined.
MAX_UNPACKED = 1 << 30
MAX_MEMBERS = 200_000  # a big dracut image with all firmware has about 10,000
_CHUNK = 1 << 20  # output is produced and counted in pieces of this size
_LZMA_MEMORY = 256 << 20  # the decoder's own memory (its dictionary, which the header sets); -9 needs 65 MiB


class _Truncated(Exception):
    """A compressed stream ended early; carries what was decoded up to there."""

    def __init__(self, output: bytes, message: str) -> None:
        super().__init__(message)
        self.output = output


class _TooBig(Exception):
    """A segment unpacks to more than the limit left."""


def _stream(
    make: Callable[[], zlib._Decompress | lzma.LZMADecompressor | bz2.BZ2Decompressor],
    name: str,
    data: memoryview,
    limit: int,
) -> tuple[bytes, int]:
    dec = make()
    parts: list[bytes] = []
    total = 0
    feed: bytes | memoryview = data
    try:
        while not dec.eof:
            piece = dec.decompress(feed, _CHUNK)
            total += len(piece)
            if total > limit:
                raise _TooBig
            parts.append(piece)
            # zlib hands back the input it has not used yet; lzma and bz2 keep it inside.
            feed = getattr(dec, "unconsumed_tail", b"")
            if len(piece) < _CHUNK and not feed:  # all input used and all output out
                break
    except (zlib.error, lzma.LZMAError, OSError, EOFError) as e:
        raise _Truncated(b"".join(parts), f"{name} data corrupt: {e}") from None
    out = b"".join(parts)
    if not dec.eof:
        raise _Truncated(out, f"{name} data truncated")
    return out, len(data) - len(dec.unused_data)


def _gzip(data: memoryview, limit: int) -> tuple[bytes, int]:
    return _stream(lambda: zlib.decompressobj(16 + zlib.MAX_WBITS), "gzip", data, limit)


def _xz(data: memoryview, limit: int) -> tuple[bytes, int]:
    return _stream(lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ, _LZMA_MEMORY), "xz", data, limit)


def _lzma(data: memoryview, limit: int) -> tuple[bytes, int]:
    return _stream(lambda: lzma.LZMADecompressor(lzma.FORMAT_ALONE, _LZMA_MEMORY), "lzma", data, limit)


def _bzip2(data: memoryview, limit: int) -> tuple[bytes, int]:
    return _stream(bz2.BZ2Decompressor, "bzip2", data, limit)


def _zstd(data: memoryview, limit: int) -> tuple[bytes, int]:
    # The kernel's unzstd reads consecutive frames as one stream; so do we. Output comes in _CHUNK pieces
    # whatever the frame header claims, so that the limit holds for a frame that lies about its size.
    parts: list[bytes] = []
    total = 0
    pos = 0
    dctx = zstandard.ZstdDecompressor()
    while bytes(data[pos : pos + 4]) == _ZSTD_MAGIC:
        end = _frame_end(data, pos)
        try:
            declared = zstandard.get_frame_parameters(data[pos : pos + 18]).content_size
        except zstandard.ZstdError:
            declared = 0  # a header cut short: the streaming path below says how
        if end is not None and 0 < declared <= limit - total:
            # The frame says its size: one allocation, no pieces to join. A frame that lies is an error
            # here (decompress() writes into exactly that much), never a bigger allocation.
            try:
                parts.append(dctx.decompress(data[pos:end], max_output_size=declared))
            except zstandard.ZstdError as e:
                raise _Truncated(b"".join(parts), f"zstd data corrupt: {e}") from None
            total += len(parts[-1])
            pos = end
            continue
        try:
            for piece in dctx.read_to_iter(data[pos:end], read_size=_CHUNK, write_size=_CHUNK):
                total += len(piece)
                if total > limit:
                    raise _TooBig
                parts.append(piece)
        except zstandard.ZstdError as e:
            raise _Truncated(b"".join(parts), f"zstd data corrupt: {e}") from None
        if end is None:  # the frame runs past the end of the file
            raise _Truncated(b"".join(parts), "zstd data truncated")
        pos = end
    return b"".join(parts), pos


def _frame_end(data: memoryview, pos: int) -> int | None:
    """Where the zstd frame at pos ends, walking its block headers; None when it runs past the data."""
    descriptor = data[pos + 4] if pos + 4 < len(data) else 0
    try:
        p = pos + zstandard.frame_header_size(bytes(data[pos : pos + 18]))
    except zstandard.ZstdError:
        return None
    while p + 3 <= len(data):
        header = data[p] | data[p + 1] << 8 | data[p + 2] << 16
        last, kind, size = header & 1, (header >> 1) & 3, header >> 3
        if kind == 3:
            return None
        p += 3 + (1 if kind == 1 else size)  # an RLE block stores one byte
        if last:
            p += 4 if descriptor & 0x04 else 0  # content checksum
            return p if p <= len(data) else None
    return None


def _lz4_legacy(data: memoryview, limit: int) -> tuple[bytes, int]:
    """lz4 -l output: magic, then blocks of (u32 LE compressed size, data), each up to 8 MiB unpacked.

    The format has no end marker; like the kernel's unlz4 we read blocks until the input ends, skipping a
    repeated magic (concatenated streams) and stopping at zero padding.
    """
    parts: list[bytes] = []
    pos = 4
    total = 0
    while pos + 4 <= len(data):
        chunk = bytes(data[pos : pos + 4])
        if chunk == _LZ4_LEGACY_MAGIC:
            pos += 4
            continue
        (size,) = struct.unpack("<I", chunk)
        if size == 0:
            break
        if pos + 4 + size > len(data):
            raise _Truncated(b"".join(parts), "lz4 data truncated")
        try:
            parts.append(lz4.block.decompress(data[pos + 4 : pos + 4 + size], uncompressed_size=_LZ4_BLOCK))
        except lz4.block.LZ4BlockError as e:
            raise _Truncated(b"".join(parts), f"lz4 data corrupt: {e}") from None
        total += len(parts[-1])
        if total > limit:
            raise _TooBig
        pos += 4 + size
    return b"".join(parts), pos


_DECODERS: dict[Compression, Callable[[memoryview, int], tuple[bytes, int]]] = {
    Compression.GZIP: _gzip,
    Compression.ZSTD: _zstd,
    Compression.XZ: _xz,
    Compression.LZMA: _lzma,
    Compression.LZ4: _lz4_legacy,
    Compression.BZIP2: _bzip2,
}


def unpack(kind: Compression, data: bytes, limit: int, name: str) -> bytes:
    """One compressed file (a .ko.xz in the image): RescueError when damaged or bigger than limit."""
    try:
        out, _ = _DECODERS[kind](memoryview(data), limit)
    except _Truncated as e:
        raise RescueError(f"{name}: cannot decompress: {e}") from None
    except _TooBig:
        raise RescueError(f"{name}: unpacks to more than {limit:,} bytes") from None
    return out


def detect(head: bytes) -> Compression | None:
    if head[:6] in CPIO_MAGICS:
        return Compression.NONE
    for magic, kind in _MAGICS:
        if head.startswith(magic):
            return kind
    return None


@dataclass(frozen=True)
class Segment:
    offset: int  # where it starts in the image file
    size: int  # bytes it occupies in the image file
    compression: Compression
    unpacked: int  # bytes of cpio data it holds
    members: int


@dataclass
class _Member:
    record: CpioRecord
    buffer: bytes


@dataclass
class Initrd:
    path: str
    size: int = 0
    segments: list[Segment] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what the kernel would fail to unpack
    _members: dict[str, _Member] = field(default_factory=dict)

    def names(self) -> Iterator[str]:
        return iter(self._members)

    def _member(self, name: str) -> _Member | None:
        return self._members.get(self.resolve(name))

    def resolve(self, name: str) -> str:
        """Follow symlinks in the image (e.g. lib -> usr/lib) to the member name that holds the data."""
        parts = [p for p in name.strip("/").split("/") if p not in ("", ".")]
        done: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if done:
                    done.pop()
                continue
            path = "/".join([*done, part])
            member = self._members.get(path)
            if member is not None and stat.S_ISLNK(member.record.mode) and hops < 40:
                hops += 1
                target = self._data(member).decode("utf-8", errors="surrogateescape")
                base = [] if target.startswith("/") else list(done)
                parts = [*base, *target.strip("/").split("/"), *parts]
                done = []
                continue
            done.append(part)
        return "/".join(done)

    @staticmethod
    def _data(member: _Member) -> bytes:
        r = member.record
        return member.buffer[r.data_start : r.data_start + r.size]

    def exists(self, name: str) -> bool:
        return self._member(name) is not None

    def is_file(self, name: str) -> bool:
        m = self._member(name)
        return m is not None and stat.S_ISREG(m.record.mode)

    def is_dir(self, name: str) -> bool:
        m = self._member(name)
        return m is not None and stat.S_ISDIR(m.record.mode)

    def read(self, name: str) -> bytes:
        m = self._member(name)
        if m is None or not stat.S_ISREG(m.record.mode):
            raise RescueError(f"{self.path}: no file {name} in the image")
        return self._data(m)

    def size_of(self, name: str) -> int:
        m = self._member(name)
        return m.record.size if m is not None else 0

    def read_text(self, name: str) -> str:
        return self.read(name).decode("utf-8", errors="replace") if self.is_file(name) else ""

    def listdir(self, name: str) -> list[str]:
        base = self.resolve(name)
        prefix = base + "/" if base else ""
        return sorted({n[len(prefix) :].split("/", 1)[0] for n in self._members if n.startswith(prefix)})


def _add_archives(image: Initrd, buf: bytes, where: str) -> int:
    """Add every cpio archive in an unpacked buffer (zero padding allowed between them); count members."""
    count = 0
    pos = 0
    view = memoryview(buf)
    while pos < len(buf):
        if buf[pos] == 0:
            pos = _skip_zeros(buf, pos)
            continue
        records: list[CpioRecord] = []
        try:
            pos = _scan(image, view, pos, records)
        except CpioDamage as e:
            image.problems.append(f"{where}: {e}")
            return count + _add(image, records, buf)
        count += _add(image, records, buf)
    return count


def _scan(image: Initrd, view: memoryview, pos: int, records: list[CpioRecord]) -> int:
    """scan_newc within the image's member budget; returns where the archive ends."""
    try:
        return scan_newc(view, pos, records, max_records=MAX_MEMBERS - len(image._members))[1]
    except CpioDamage:
        raise
    except RescueError:  # too many members
        raise RescueError(
            f"{image.path}: more than {MAX_MEMBERS:,} members; refusing (real images have a few thousand)"
        ) from None


def _add(image: Initrd, records: list[CpioRecord], buf: bytes) -> int:
    for r in records:
        if r.name not in ("", "."):
            image._members[r.name] = _Member(r, buf)
    return len(records)


def _skip_zeros(buf: bytes, pos: int) -> int:
    while pos < len(buf) and buf[pos] == 0:
        chunk = buf[pos : pos + 4096]
        stripped = len(chunk) - len(chunk.lstrip(b"\0"))
        pos += stripped
        if stripped < len(chunk):
            break
    return pos


def _too_big(path: str, what: str, limit: int) -> RescueError:
    return RescueError(
        f"{path}: {what} more than {limit / (1 << 20):g} MiB; refusing (a damaged image or a bomb?)",
        hint="check-image --max-unpacked SIZE raises the limit",
    )


def parse_initrd(data: bytes, path: str = "<image>", max_unpacked: int = MAX_UNPACKED) -> Initrd:
    """Parse an image in memory; RescueError when it is not one or unpacks to more than max_unpacked."""
    image = Initrd(path=path, size=len(data))
    view = memoryview(data)
    pos = 0
    unpacked = 0  # bytes decompressed so far, all segments together
    while pos < len(data):
        if data[pos] == 0:
            pos = _skip_zeros(data, pos)
            continue
        head = bytes(view[pos : pos + 8])
        kind = detect(head)
        where = f"segment {len(image.segments) + 1} at offset {pos}"
        if kind is None:
            what = next((n for m, n in _UNSUPPORTED.items() if head.startswith(m)), None)
            problem = f"{where}: {what} compression is not supported" if what else f"{where}: unknown data"
            if not image.segments:
                raise RescueError(f"{path}: not an initramfs ({problem})")
            image.problems.append(problem)
            break
        if kind is Compression.NONE:
            records: list[CpioRecord] = []
            try:
                end = _scan(image, view, pos, records)
            except CpioDamage as e:
                if not records and not image.segments:
                    raise RescueError(f"{path}: not an initramfs ({e})") from None
                image.problems.append(f"{where}: {e}")
                image.segments.append(
                    Segment(pos, len(data) - pos, kind, len(data) - pos, _add(image, records, data))
                )
                break
            _add(image, records, data)
            image.segments.append(Segment(pos, end - pos, kind, end - pos, len(records)))
            pos = end
            continue
        try:
            out, used = _DECODERS[kind](view[pos:], max_unpacked - unpacked)
        except _TooBig:
            raise _too_big(path, "unpacks to", max_unpacked) from None
        except _Truncated as e:
            image.problems.append(f"{where}: {e}")
            members = _add_archives(image, e.output, f"{where} ({kind})") if e.output else 0
            image.segments.append(Segment(pos, len(data) - pos, kind, len(e.output), members))
            break
        unpacked += len(out)
        members = _add_archives(image, out, f"{where} ({kind})")
        image.segments.append(Segment(pos, used, kind, len(out), members))
        pos += used
    if not image.segments:
        raise RescueError(f"{path}: empty file, not an initramfs")
    return image


def read_initrd(path: Path, max_unpacked: int = MAX_UNPACKED) -> Initrd:
    with contextlib.suppress(OSError):  # a big file is refused before it is read; errors come from reading
        if path.is_file() and path.stat().st_size > max_unpacked:
            raise _too_big(str(path), "the file holds", max_unpacked)
    data, more = read_bytes(path, max_unpacked)
    if more:
        raise _too_big(str(path), "the file holds", max_unpacked)
    return parse_initrd(data, str(path), max_unpacked)


def module_dirs(image: Initrd) -> dict[str, str]:
    """Kernel versions the image carries modules for -> their directory inside the image."""
    found: dict[str, str] = {}
    for base in ("lib/modules", "usr/lib/modules"):
        if not image.is_dir(base):
            continue
        for kver in image.listdir(base):
            moddir = image.resolve(f"{base}/{kver}")
            if image.is_dir(moddir) and moddir not in found.values():
                found[kver] = moddir
    return found

"""Decompressors for what initramfs images and kernel modules are packed with, bounded in output.

gzip, zstd, xz, lzma, lz4 (the kernel's legacy framing) and bzip2, each producing at most `limit` bytes in
pieces, so that a decompression bomb costs a bounded amount of memory and time; a stream cut short keeps
what was decoded (Truncated) so that a damaged image can still be examined.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from collections.abc import Callable
from enum import StrEnum

import lz4.block
import zstandard

from rescue.errors import RescueError
from rescue.image.cpio import MAGICS as CPIO_MAGICS


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
UNSUPPORTED = {b"\x89LZO": "lzo"}


# Real images unpack to 30-300 MB; the cap keeps a decompression bomb (a few KB of zstd that expand to many
# GiB) from exhausting memory, since the whole unpacked image is held to be examined.
_CHUNK = 1 << 20  # output is produced and counted in pieces of this size
_LZMA_MEMORY = 256 << 20  # the decoder's own memory (its dictionary, which the header sets); -9 needs 65 MiB


class Truncated(Exception):
    """A compressed stream ended early; carries what was decoded up to there."""

    def __init__(self, output: bytes, message: str) -> None:
        super().__init__(message)
        self.output = output


class TooBig(Exception):
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
                raise TooBig
            parts.append(piece)
            # zlib hands back the input it has not used yet; lzma and bz2 keep it inside.
            feed = getattr(dec, "unconsumed_tail", b"")
            if len(piece) < _CHUNK and not feed:  # all input used and all output out
                break
    except (zlib.error, lzma.LZMAError, OSError, EOFError) as e:
        raise Truncated(b"".join(parts), f"{name} data corrupt: {e}") from None
    out = b"".join(parts)
    if not dec.eof:
        raise Truncated(out, f"{name} data truncated")
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
                raise Truncated(b"".join(parts), f"zstd data corrupt: {e}") from None
            total += len(parts[-1])
            pos = end
            continue
        try:
            for piece in dctx.read_to_iter(data[pos:end], read_size=_CHUNK, write_size=_CHUNK):
                total += len(piece)
                if total > limit:
                    raise TooBig
                parts.append(piece)
        except zstandard.ZstdError as e:
            raise Truncated(b"".join(parts), f"zstd data corrupt: {e}") from None
        if end is None:  # the frame runs past the end of the file
            raise Truncated(b"".join(parts), "zstd data truncated")
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
            raise Truncated(b"".join(parts), "lz4 data truncated")
        try:
            parts.append(lz4.block.decompress(data[pos + 4 : pos + 4 + size], uncompressed_size=_LZ4_BLOCK))
        except lz4.block.LZ4BlockError as e:
            raise Truncated(b"".join(parts), f"lz4 data corrupt: {e}") from None
        total += len(parts[-1])
        if total > limit:
            raise TooBig
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
    except Truncated as e:
        raise RescueError(f"{name}: cannot decompress: {e}") from None
    except TooBig:
        raise RescueError(f"{name}: unpacks to more than {limit:,} bytes") from None
    return out


def detect(head: bytes) -> Compression | None:
    if head[:6] in CPIO_MAGICS:
        return Compression.NONE
    for magic, kind in _MAGICS:
        if head.startswith(magic):
            return kind
    return None


def decode(kind: Compression, data: memoryview, limit: int) -> tuple[bytes, int]:
    """Decompress the stream at the start of data: (output, bytes of input it used). TooBig past limit;
    Truncated (holding what was decoded) when the stream is cut short or damaged."""
    return _DECODERS[kind](data, limit)


def unsupported(head: bytes) -> str | None:
    """The name of a compression the kernel may know but this reader does not (lzo), else None."""
    return next((name for magic, name in UNSUPPORTED.items() if head.startswith(magic)), None)

"""The cpio "newc" format (what the kernel unpacks as an initramfs): read and write.

Reading works on one uncompressed archive and says where it ended, so that rescue.image.initrd can walk
concatenated segments (an early microcode cpio, then a compressed main archive).
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from rescue.errors import RescueError

MAGICS = (b"070701", b"070702")  # newc, and newc with checksums ("crc")
HEADER_LEN = 110
TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class CpioEntry:
    name: str  # without a leading "/" or "./"
    mode: int  # file type and permission bits, as in st_mode
    data: bytes = b""  # file contents; for a symlink, its target
    mtime: int = 0
    uid: int = 0
    gid: int = 0
    rdevmajor: int = 0
    rdevminor: int = 0

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def normalize_name(raw: str) -> str:
    name = raw
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


@dataclass(frozen=True)
class CpioRecord:
    """One member's header and where its data lies in the buffer (nothing copied)."""

    name: str  # without a leading "/" or "./"
    mode: int
    mtime: int
    uid: int
    gid: int
    rdevmajor: int
    rdevminor: int
    data_start: int
    size: int

    def entry(self, buf: bytes | memoryview) -> CpioEntry:
        data = bytes(memoryview(buf)[self.data_start : self.data_start + self.size])
        return CpioEntry(
            self.name, self.mode, data, self.mtime, self.uid, self.gid, self.rdevmajor, self.rdevminor
        )


class CpioDamage(RescueError):
    """The archive is truncated or its headers are corrupt (what the kernel would fail to unpack)."""


def scan_newc(
    buf: bytes | memoryview,
    offset: int = 0,
    records: list[CpioRecord] | None = None,
    max_records: int | None = None,
) -> tuple[list[CpioRecord], int]:
    """Parse one newc archive's headers from offset; return them and the offset just past its trailer.

    Big images (60+ MB unpacked) are listed without copying file contents; CpioRecord.entry() reads one.
    Records are appended to `records` as they are read, so a caller keeps what precedes damage.
    Damage raises CpioDamage; more than max_records members raise a plain RescueError (a hostile archive
    of millions of empty members would otherwise cost gigabytes of records).
    """
    view = memoryview(buf)
    records = [] if records is None else records
    pos = offset
    while True:
        header = bytes(view[pos : pos + HEADER_LEN])
        if len(header) < HEADER_LEN and header[:6] in MAGICS:
            raise CpioDamage(f"cpio archive truncated at offset {pos}")
        if len(header) < HEADER_LEN or header[:6] not in MAGICS:
            raise CpioDamage(f"not a newc cpio archive at offset {pos}")
        try:
            fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            raise CpioDamage(f"corrupt cpio header at offset {pos}") from None
        _ino, mode, uid, gid, _nlink, mtime, size, _maj, _min, rmaj, rmin, namesize, _check = fields
        name_start = pos + HEADER_LEN
        name_end = name_start + namesize
        data_start = name_end + _pad4(HEADER_LEN + namesize)
        data_end = data_start + size
        if data_end > len(view):
            raise CpioDamage(f"cpio archive truncated at offset {pos}")
        name = bytes(view[name_start : name_end - 1]).decode("utf-8", errors="surrogateescape")
        pos = data_end + _pad4(size)
        if name == TRAILER:
            return records, pos
        if max_records is not None and len(records) >= max_records:
            raise RescueError(f"more than {max_records:,} members in one cpio archive")
        records.append(CpioRecord(normalize_name(name), mode, mtime, uid, gid, rmaj, rmin, data_start, size))


def read_newc(buf: bytes | memoryview, offset: int = 0) -> tuple[list[CpioEntry], int]:
    """Parse one newc archive starting at offset; return its entries and the offset just past its trailer."""
    records, end = scan_newc(buf, offset)
    return [r.entry(buf) for r in records], end


def _header(ino: int, entry: CpioEntry | None, name: bytes, size: int) -> bytes:
    e = entry or CpioEntry(name="", mode=0)
    nlink = 2 if e.is_dir else 1
    fields = [
        ino,
        e.mode,
        e.uid,
        e.gid,
        nlink if entry else 1,
        e.mtime,
        size,
        0,
        0,
        e.rdevmajor,
        e.rdevminor,
        len(name) + 1,
        0,
    ]
    return b"070701" + b"".join(b"%08X" % f for f in fields)


def write_newc(entries: Iterable[CpioEntry], out: BinaryIO) -> None:
    """Write entries as one newc archive, parents before children as the caller gives them."""
    ino = 1
    for entry in entries:
        name = entry.name.encode("utf-8", errors="surrogateescape")
        _write_record(out, _header(ino, entry, name, len(entry.data)), name, entry.data)
        ino += 1
    _write_record(out, _header(0, None, TRAILER.encode(), 0), TRAILER.encode(), b"")


def _write_record(out: BinaryIO, header: bytes, name: bytes, data: bytes) -> None:
    out.write(header + name + b"\0" + b"\0" * _pad4(HEADER_LEN + len(name) + 1))
    out.write(data + b"\0" * _pad4(len(data)))

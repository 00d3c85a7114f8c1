"""Read an initramfs the way the kernel unpacks it, without external tools.

An image is a sequence of segments: uncompressed newc cpio archives (the early microcode one comes first)
and compressed streams (gzip, zstd, xz, lzma, lz4 legacy, bzip2) that each hold one or more cpio archives,
with zero padding allowed between them. Later members overwrite earlier ones, as when the kernel unpacks.
Damage after the first segment is recorded in `problems` (the kernel would say "Initramfs unpacking
failed"), so that a truncated image can still be examined.
"""

from __future__ import annotations

import contextlib
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rescue.errors import RescueError
from rescue.image.compression import Compression, TooBig, Truncated, decode, detect, unsupported
from rescue.image.cpio import CpioDamage, CpioRecord, scan_newc
from rescue.reading import read_bytes

MAX_UNPACKED = 1 << 30
MAX_MEMBERS = 200_000  # a big dracut image with all firmware has about 10,000


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
            what = unsupported(head)
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
            out, used = decode(kind, view[pos:], max_unpacked - unpacked)
        except TooBig:
            raise _too_big(path, "unpacks to", max_unpacked) from None
        except Truncated as e:
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

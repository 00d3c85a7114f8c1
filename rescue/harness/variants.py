"""A broken variant of a built initramfs: modules removed from the unpacked image, depmod, repacked.

Building an image with a generator takes 30-90 s under a busy machine; deriving a variant takes a few
seconds. The result is what a generator makes when a module is left out (mkinitramfs and dracut both run
depmod on the image last): the image's own modules.dep no longer names the module, so nothing in the image
shows the hole; only the kernel's metadata does. Early uncompressed segments (microcode) are kept as they
are; the main archive is written again as newc, zstd-compressed.
"""

from __future__ import annotations

import stat
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import zstandard

from rescue.errors import RescueError
from rescue.image.compression import Compression, decode, detect
from rescue.image.cpio import CpioEntry, normalize_name, read_newc
from rescue.image.initrd import parse_initrd
from rescue.kmod import module_name
from rescue.run import run

_MODULES_META = ("modules.dep", "modules.dep.bin", "modules.alias", "modules.alias.bin", "modules.softdep",
                 "modules.symbols", "modules.symbols.bin", "modules.devname", "modules.builtin.alias.bin",
                 "modules.builtin.bin")  # fmt: skip


def read_archives(buf: bytes) -> list[CpioEntry]:
    """Every entry of the cpio archives one after the other in buf (zero padding allowed between them)."""
    entries: list[CpioEntry] = []
    pos = 0
    while pos < len(buf):
        if buf[pos] == 0:
            pos += 1
            continue
        found, pos = read_newc(buf, pos)
        entries += found
    return entries


def without_modules(image: Path, out: Path, modules: Sequence[str]) -> Path:
    """Write image minus the named modules (with a consistent modules.dep) to out; out.

    Each segment keeps its form: initramfs-tools 0.151 puts the (already compressed) modules into an
    uncompressed cpio before the zstd one, and the kernel reads them all as one tree."""
    data = image.read_bytes()
    segments = []
    bodies = []
    for seg in parse_initrd(data, str(image)).segments:
        kind = detect(data[seg.offset : seg.offset + 8])
        if kind is None:
            raise RescueError(f"{image}: unknown compression at offset {seg.offset}")
        if kind is Compression.NONE:
            body = data[seg.offset : seg.offset + seg.size]
        else:
            body, _ = decode(kind, memoryview(data)[seg.offset :], 1 << 31)
        segments.append((kind, read_archives(body)))
        bodies.append((kind, body))
    names = {module_name(m) for m in modules}
    everything = [e for _, entries in segments for e in entries]
    dropped = {e.name for e in everything if _is_module(e) and module_name(e.name) in names}
    missing = names - {module_name(n) for n in dropped}
    if missing:
        raise RescueError(f"{image}: has no module {', '.join(sorted(missing))}")
    metadata = {name: e.data for name, e in _depmod([e for e in everything if e.name not in dropped]).items()}
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("wb") as f:
        for i, (kind, body) in enumerate(bodies):
            last = i == len(bodies) - 1
            raw = _filtered(body, dropped, metadata, add_missing=last)
            f.write(raw if kind is Compression.NONE else zstandard.ZstdCompressor(level=3).compress(raw))
    tmp.replace(out)
    return out


_HEADER = 110  # a newc header: magic and 13 fields of 8 hex digits


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def _filtered(buf: bytes, drop: set[str], replace: dict[str, bytes], *, add_missing: bool) -> bytes:
    """The newc archives of buf, record by record as they are (hard links keep their inode numbers),
    without the dropped names and with replaced contents; replace is consumed as names are met, and with
    add_missing what is left is added before the last trailer."""
    out = bytearray()
    pos = 0
    while pos < len(buf):
        if buf[pos] == 0:
            out.append(0)
            pos += 1
            continue
        head = buf[pos : pos + _HEADER]
        fields = [int(head[6 + 8 * k : 14 + 8 * k], 16) for k in range(13)]
        size, namesize = fields[6], fields[11]
        name_end = pos + _HEADER + namesize
        data_start = name_end + _pad4(_HEADER + namesize)
        end = data_start + size + _pad4(size)
        name = normalize_name(buf[pos + _HEADER : name_end - 1].decode("utf-8", "surrogateescape"))
        if name == "TRAILER!!!" and add_missing:
            for extra, data in list(replace.items()):
                out += _record(extra, stat.S_IFREG | 0o644, data, ino=0x7FFF0000 + len(replace))
                del replace[extra]
        if name in replace:
            data = replace.pop(name)
            fields[6] = len(data)
            out += _record(name, fields[1], data, ino=fields[0], header=fields)
        elif name not in drop:
            out += buf[pos:end]
        pos = end
    return bytes(out)


def _record(name: str, mode: int, data: bytes, *, ino: int, header: list[int] | None = None) -> bytes:
    fields = list(header) if header else [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, 0, 0]
    raw_name = name.encode("utf-8", "surrogateescape") + b"\0"
    fields[6], fields[11], fields[12] = len(data), len(raw_name), 0
    head = b"070701" + b"".join(b"%08X" % f for f in fields)
    return head + raw_name + b"\0" * _pad4(_HEADER + len(raw_name)) + data + b"\0" * _pad4(len(data))


def _is_module(entry: CpioEntry) -> bool:
    return entry.is_file and "/modules/" in entry.name and ".ko" in entry.name.rsplit("/", 1)[-1]


def _moddirs(entries: Iterable[CpioEntry]) -> set[str]:
    """The image's modules directories (lib/modules/KVER or usr/lib/modules/KVER) that hold modules.dep."""
    return {e.name.rsplit("/", 1)[0] for e in entries if e.is_file and e.name.endswith("/modules.dep")}


def _depmod(entries: list[CpioEntry]) -> dict[str, CpioEntry]:
    """Run depmod on each modules directory of the image, as the generators do last: the new metadata."""
    by_name = {e.name: e for e in entries}
    made: dict[str, CpioEntry] = {}
    for moddir in _moddirs(entries):
        version = moddir.rsplit("/", 1)[-1]
        with tempfile.TemporaryDirectory(prefix="rescue-variant-") as tmp:
            stage = Path(tmp) / "lib/modules" / version
            for e in entries:
                if e.is_file and e.name.startswith(moddir + "/"):
                    path = stage / e.name[len(moddir) + 1 :]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(e.data)
            run(["depmod", "-b", tmp, version])
            for meta in _MODULES_META:
                name = f"{moddir}/{meta}"
                if (stage / meta).is_file():
                    old = by_name.get(name)
                    mode = old.mode if old else stat.S_IFREG | 0o644
                    made[name] = CpioEntry(name, mode, (stage / meta).read_bytes())
    return made

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
from rescue.image.cpio import CpioEntry, read_newc, write_newc
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
    """Write image minus the named modules (with a consistent modules.dep) to out; out."""
    data = image.read_bytes()
    parsed = parse_initrd(data, str(image))
    main = parsed.segments[-1]
    kind = detect(data[main.offset : main.offset + 8])
    if kind is None:
        raise RescueError(f"{image}: unknown compression of the main archive")
    if kind is Compression.NONE:
        body = data[main.offset : main.offset + main.size]
    else:
        body, _ = decode(kind, memoryview(data)[main.offset :], 1 << 31)
    entries = read_archives(body)
    names = {module_name(m) for m in modules}
    dropped = [e.name for e in entries if e.is_file and _is_module(e.name) and module_name(e.name) in names]
    if {module_name(n) for n in dropped} != names:
        raise RescueError(f"{image}: has no module {', '.join(sorted(names - {module_name(n) for n in dropped}))}")
    kept = [e for e in entries if e.name not in dropped]
    kept = _depmod(kept)
    raw = _newc(kept)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data[: main.offset])
        f.write(zstandard.ZstdCompressor(level=3).compress(raw))
    tmp.replace(out)
    return out


def _is_module(name: str) -> bool:
    return "/modules/" in name and ".ko" in name.rsplit("/", 1)[-1]


def _moddirs(entries: Iterable[CpioEntry]) -> set[str]:
    """The image's modules directories (lib/modules/KVER or usr/lib/modules/KVER) that hold modules.dep."""
    return {e.name.rsplit("/", 1)[0] for e in entries if e.is_file and e.name.endswith("/modules.dep")}


def _depmod(entries: list[CpioEntry]) -> list[CpioEntry]:
    """Run depmod on each modules directory of the image, as the generators do last; new metadata in."""
    by_name = {e.name: e for e in entries}
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
                    by_name[name] = CpioEntry(name, mode, (stage / meta).read_bytes())
    return list(by_name.values())


def _newc(entries: list[CpioEntry]) -> bytes:
    import io

    buf = io.BytesIO()
    write_newc(entries, buf)
    return buf.getvalue()

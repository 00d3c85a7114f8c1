"""Just enough ELF to read a kernel module: its .modinfo, the symbols it imports and the ones it exports.

A module's own .modinfo `depends=` (written by modpost when the kernel was built) and its undefined
symbols still tell what it needs after depmod has rewritten an initramfs' modules.dep around a hole.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from rescue.errors import RescueError
from rescue.image.compression import Compression, unpack

_SHT_SYMTAB = 2
_STB_GLOBAL = 1
_SHN_UNDEF = 0


@dataclass(frozen=True)
class KernelModule:
    modinfo: dict[str, list[str]] = field(default_factory=dict)  # key -> values (alias, depends, softdep...)
    undefined: frozenset[str] = frozenset()  # global symbols it needs from the kernel or other modules
    exported: frozenset[str] = frozenset()  # symbols it exports (EXPORT_SYMBOL*)

    @property
    def depends(self) -> list[str]:
        return [d for v in self.modinfo.get("depends", []) for d in v.split(",") if d]


MAX_MODULE = 256 << 20  # the biggest modules (GPU drivers) unpack to a few tens of MB

_SUFFIXES = {".xz": Compression.XZ, ".zst": Compression.ZSTD, ".gz": Compression.GZIP}


def unpack_ko(name: str, data: bytes) -> bytes:
    """The ELF bytes of a module file, which may be stored as .ko, .ko.xz, .ko.zst or .ko.gz."""
    kind = next((k for suffix, k in _SUFFIXES.items() if name.endswith(suffix)), None)
    return data if kind is None else unpack(kind, data, MAX_MODULE, name)


def read_module(data: bytes) -> KernelModule:
    """Parse an ELF relocatable kernel module (32 or 64 bit, either byte order)."""
    if data[:4] != b"\x7fELF" or len(data) < 52:
        raise RescueError("not an ELF file")
    try:
        return _parse(data)
    except (struct.error, IndexError, OverflowError):  # offsets and indexes that point outside the file
        raise RescueError("corrupt ELF file") from None


def _parse(data: bytes) -> KernelModule:
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    if is64:
        shoff = struct.unpack_from(end + "Q", data, 0x28)[0]
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 0x3A)
        sec_fmt, sym_fmt, sym_size = end + "IIQQQQIIQQ", end + "IBBHQQ", 24
    else:
        shoff = struct.unpack_from(end + "I", data, 0x20)[0]
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 0x2E)
        sec_fmt, sym_fmt, sym_size = end + "IIIIIIIIII", end + "IIIBBH", 16
    try:
        sections = [struct.unpack_from(sec_fmt, data, shoff + i * shentsize) for i in range(shnum)]
    except struct.error:
        raise RescueError("truncated ELF section table") from None

    def body(index: int) -> bytes:
        sec = sections[index]
        return data[sec[4] : sec[4] + sec[5]]

    shstr = body(shstrndx) if shstrndx < len(sections) else b""

    def sec_name(sec: tuple[int, ...]) -> str:
        return _cstr(shstr, sec[0])

    modinfo: dict[str, list[str]] = {}
    undefined: set[str] = set()
    exported: set[str] = set()
    # A module has one of each; reading only the first keeps a forged table of thousands of sections that
    # all point at the same big one from costing time that grows with their product.
    done: set[str] = set()
    for index, sec in enumerate(sections):
        name = sec_name(sec) if sec[1] != _SHT_SYMTAB else ".symtab"
        if name in done:
            continue
        done.add(name)
        if name == ".modinfo":
            for item in body(index).split(b"\0"):
                key, eq, value = item.decode(errors="replace").partition("=")
                if eq:
                    modinfo.setdefault(key, []).append(value)
        elif name == "__ksymtab_strings":
            exported.update(s.decode(errors="replace") for s in body(index).split(b"\0") if s)
        elif sec[1] == _SHT_SYMTAB:
            strtab = body(sec[6])
            table = body(index)
            for off in range(sym_size, len(table) - sym_size + 1, sym_size):
                if is64:
                    st_name, st_info, _other, st_shndx, _value, _size = struct.unpack_from(
                        sym_fmt, table, off
                    )
                else:
                    st_name, _value, _size, st_info, _other, st_shndx = struct.unpack_from(
                        sym_fmt, table, off
                    )
                if st_shndx == _SHN_UNDEF and st_info >> 4 == _STB_GLOBAL and st_name:
                    undefined.add(_cstr(strtab, st_name))
    return KernelModule(modinfo, frozenset(undefined), frozenset(exported))


def _cstr(table: bytes, start: int) -> str:
    """The NUL-terminated name at start; names are short (KSYM_NAME_LEN 512), so look no further."""
    end = table.find(b"\0", start, start + 512)
    return table[start : end if end >= 0 else start + 512].decode(errors="replace")

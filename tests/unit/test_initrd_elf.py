"""Kernel module metadata read from real .ko files (this host's Debian kernel), plain and compressed."""

from __future__ import annotations

import shutil
import struct

import pytest

from rescue.errors import RescueError
from rescue.image import elf
from rescue.image.elf import read_module, unpack_ko
from rescue.kmod import ModuleDB
from rescue.run import run
from tests.conftest import require
from tests.host_kernel import HOST_MODDIR, ko

MODDIR = HOST_MODDIR


def _ko(rel: str) -> bytes:
    """The ELF bytes of a module of the installed kernel (compressed on disk from Debian's 6.12 on)."""
    path = MODDIR / ko(rel)
    require(path.is_file(), f"{path} is not installed")
    return unpack_ko(path.name, path.read_bytes())


def test_btrfs_needs_libcrc32c_by_modinfo_and_by_symbols() -> None:
    btrfs = read_module(_ko("kernel/fs/btrfs/btrfs.ko"))
    # The .modinfo depends= that depmod turned into this kernel's modules.dep (6.1 adds zstd_compress).
    assert set(btrfs.depends) == set(ModuleDB.load(MODDIR).deps_of["btrfs"]) and "libcrc32c" in btrfs.depends
    # 6.1's btrfs also imports crc32c_impl; every crc32c symbol it imports is libcrc32c's.
    wanted = {sym for sym in btrfs.undefined if sym.startswith("crc32c")}
    assert "crc32c" in wanted
    assert "pre: crypto-crc32c" in btrfs.modinfo["softdep"]
    libcrc32c = read_module(_ko("kernel/lib/libcrc32c.ko"))
    assert wanted <= libcrc32c.exported
    assert libcrc32c.depends == []
    assert not libcrc32c.undefined & libcrc32c.exported


@pytest.mark.parametrize(
    ("suffix", "argv"), [(".xz", ["xz", "-c"]), (".zst", ["zstd", "-q", "-c"]), (".gz", ["gzip", "-c"])]
)
def test_compressed_modules(suffix: str, argv: list[str]) -> None:
    require(shutil.which(argv[0]) is not None, f"{argv[0]} is not installed")
    raw = _ko("kernel/lib/libcrc32c.ko")
    packed = run(argv, input=raw).stdout
    assert unpack_ko("libcrc32c.ko" + suffix, packed) == raw
    with pytest.raises(RescueError, match="cannot decompress"):
        unpack_ko("libcrc32c.ko" + suffix, packed[: len(packed) // 2] + b"\0" * 8)


def test_not_elf() -> None:
    with pytest.raises(RescueError, match="not an ELF"):
        read_module(b"#!/bin/sh\n" * 10)
    with pytest.raises(RescueError, match="truncated"):
        read_module(_ko("kernel/lib/libcrc32c.ko")[:200])


def test_alias_resolution_with_globs() -> None:
    db = ModuleDB.parse(
        dep="kernel/fs/btrfs/btrfs.ko:\nkernel/drivers/block/virtio_blk.ko:\n",
        alias="alias fs-btrfs btrfs\nalias virtio:d00000002v* virtio_blk\nalias crypto-crc32c crc32c_intel\n",
        builtin_modinfo="crc32c_generic.alias=crypto-crc32c\0crc32c_generic.alias=crc32c\0",
    )
    assert db.resolve("fs-btrfs") == ("btrfs",)
    assert db.resolve("virtio:d00000002v00001AF4") == ("virtio_blk",)
    assert db.resolve("virtio:d00000003v00001AF4") == ()
    assert set(db.resolve("crypto-crc32c")) == {"crc32c_intel", "crc32c_generic"}


def test_a_hostile_module_is_a_rescue_error(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _ko("kernel/lib/libcrc32c.ko")
    with pytest.raises(RescueError, match="corrupt ELF"):
        read_module(raw[:60])  # a 64-bit header cut short
    # Point the symbol table's string table (sh_link) at a section that does not exist.
    forged = bytearray(raw)
    shoff = struct.unpack_from("<Q", raw, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", raw, 0x3A)
    for i in range(shnum):
        header = shoff + i * shentsize
        if struct.unpack_from("<I", raw, header + 4)[0] == 2:  # SHT_SYMTAB
            struct.pack_into("<I", forged, header + 0x28, 60000)
    with pytest.raises(RescueError, match="corrupt ELF"):
        read_module(bytes(forged))
    # A compressed module that unpacks to more than a module can be.
    monkeypatch.setattr(elf, "MAX_MODULE", 1 << 20)
    require(shutil.which("zstd") is not None, "zstd is not installed")
    bomb = run(["zstd", "-q", "-c"], input=b"\0" * (8 << 20)).stdout
    with pytest.raises(RescueError, match="unpacks to more than"):
        unpack_ko("libcrc32c.ko.zst", bomb)

"""Reading initramfs images: every compression the kernel takes, the early-cpio layout, damage.

Archives are built with rescue.image.cpio.write_newc and compressed by the real command-line tools mkinitramfs
and dracut use (gzip, zstd, xz, lzma, lz4 -l, bzip2).
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import tracemalloc
from pathlib import Path

import pytest

from rescue.errors import RescueError
from rescue.image import initrd
from rescue.image.compression import Compression
from rescue.image.cpio import CpioEntry, write_newc
from rescue.image.initrd import module_dirs, parse_initrd, read_initrd
from rescue.run import run
from tests.conftest import require

KVER = "6.1.0-99-test-amd64"
DIR = stat.S_IFDIR | 0o755
FILE = stat.S_IFREG | 0o644
LINK = stat.S_IFLNK | 0o777

# The CLI each generator calls for each compression (initramfs-tools' mkinitramfs; lz4 needs -l, the legacy
# format the kernel reads).
COMPRESSORS: dict[Compression, list[str]] = {
    Compression.GZIP: ["gzip", "-n", "-9", "-c"],
    Compression.ZSTD: ["zstd", "-q", "-1", "-c"],
    Compression.XZ: ["xz", "--check=crc32", "-c"],
    Compression.LZMA: ["lzma", "-9", "-c"],
    Compression.LZ4: ["lz4", "-9", "-l", "-c"],
    Compression.BZIP2: ["bzip2", "-9", "-c"],
}


def cpio(entries: list[CpioEntry]) -> bytes:
    out = io.BytesIO()
    write_newc(entries, out)
    return out.getvalue()


def compress(kind: Compression, data: bytes) -> bytes:
    argv = COMPRESSORS[kind]
    require(shutil.which(argv[0]) is not None, f"{argv[0]} is not installed")
    return run(argv, input=data).stdout


def main_archive(extra: bytes = b"") -> list[CpioEntry]:
    """A merged-/usr image: lib -> usr/lib, modules under usr/lib/modules/KVER."""
    moddir = f"usr/lib/modules/{KVER}"
    return [
        CpioEntry("usr", DIR),
        CpioEntry("usr/lib", DIR),
        CpioEntry("lib", LINK, b"usr/lib"),
        CpioEntry("usr/lib/modules", DIR),
        CpioEntry(moddir, DIR),
        CpioEntry(f"{moddir}/modules.dep", FILE, b"kernel/fs/btrfs/btrfs.ko: kernel/lib/libcrc32c.ko\n"),
        CpioEntry(f"{moddir}/kernel", DIR),
        CpioEntry(f"{moddir}/kernel/fs", DIR),
        CpioEntry(f"{moddir}/kernel/fs/btrfs", DIR),
        CpioEntry(f"{moddir}/kernel/fs/btrfs/btrfs.ko", FILE, b"\x7fELF" + extra),
        CpioEntry("init", FILE | 0o111, b"#!/bin/sh\nexec /sbin/init\n"),
    ]


def early_archive() -> list[CpioEntry]:
    return [
        CpioEntry("kernel", DIR),
        CpioEntry("kernel/x86", DIR),
        CpioEntry("kernel/x86/microcode", DIR),
        CpioEntry("kernel/x86/microcode/GenuineIntel.bin", FILE, b"microcode" * 100),
    ]


@pytest.mark.parametrize("kind", list(COMPRESSORS))
def test_each_compression_with_an_early_cpio(kind: Compression) -> None:
    early = cpio(early_archive())
    main = compress(kind, cpio(main_archive(b"payload" * 1000)))
    image = parse_initrd(early + main)
    assert [s.compression for s in image.segments] == [Compression.NONE, kind]
    assert image.segments[0].size == len(early) and image.segments[1].offset == len(early)
    assert image.segments[1].size == len(main)
    assert image.problems == []
    assert image.read("kernel/x86/microcode/GenuineIntel.bin") == b"microcode" * 100
    assert image.read(f"lib/modules/{KVER}/kernel/fs/btrfs/btrfs.ko") == b"\x7fELF" + b"payload" * 1000
    assert module_dirs(image) == {KVER: f"usr/lib/modules/{KVER}"}


def test_lz4_legacy_spans_several_8mib_blocks() -> None:
    big = os.urandom(9 << 20)  # incompressible: two legacy blocks
    image = parse_initrd(compress(Compression.LZ4, cpio(main_archive(big))))
    assert image.read(f"usr/lib/modules/{KVER}/kernel/fs/btrfs/btrfs.ko") == b"\x7fELF" + big


def test_concatenated_compressed_segments_with_padding_and_overrides() -> None:
    first = compress(Compression.GZIP, cpio([CpioEntry("etc", DIR), CpioEntry("etc/a", FILE, b"old")]))
    second = compress(
        Compression.XZ, cpio([CpioEntry("etc/a", FILE, b"new"), CpioEntry("etc/b", FILE, b"b")])
    )
    pad = b"\0" * (-len(first) % 4 + 512)
    image = parse_initrd(first + pad + second)
    assert [s.compression for s in image.segments] == [Compression.GZIP, Compression.XZ]
    assert image.read("etc/a") == b"new"  # later members overwrite earlier ones, as the kernel does
    assert image.read("etc/b") == b"b"
    assert image.listdir("etc") == ["a", "b"]


def test_several_archives_inside_one_stream_and_several_zstd_frames() -> None:
    one = cpio([CpioEntry("a", FILE, b"1")]) + b"\0" * 8 + cpio([CpioEntry("b", FILE, b"2")])
    frames = compress(Compression.ZSTD, one) + compress(Compression.ZSTD, cpio([CpioEntry("c", FILE, b"3")]))
    image = parse_initrd(frames)
    assert sorted(image.names()) == ["a", "b", "c"]
    assert len(image.segments) == 1 and image.segments[0].size == len(frames)


def test_uncompressed_only_image() -> None:
    image = parse_initrd(cpio(main_archive()))
    assert [s.compression for s in image.segments] == [Compression.NONE]
    assert image.is_dir("lib/modules") and image.is_file(f"lib/modules/{KVER}/modules.dep")


@pytest.mark.parametrize("kind", [Compression.GZIP, Compression.ZSTD, Compression.XZ, Compression.NONE])
def test_truncated_image_keeps_what_precedes_the_damage(kind: Compression) -> None:
    entries = [CpioEntry(f"f{i:03d}", FILE, os.urandom(4096)) for i in range(64)]
    raw = cpio(entries)
    data = raw if kind is Compression.NONE else compress(kind, raw)
    early = cpio(early_archive())
    image = parse_initrd(early + data[: len(data) // 2])
    assert image.problems, "a truncated image must be reported"
    assert "truncated" in image.problems[0] or "corrupt" in image.problems[0]
    names = set(image.names())
    assert "kernel/x86/microcode/GenuineIntel.bin" in names
    assert "f000" in names and "f063" not in names


def test_not_an_initramfs(tmp_path: Path) -> None:
    with pytest.raises(RescueError, match="not an initramfs"):
        parse_initrd(b"hello world, this is text\n" * 10)
    with pytest.raises(RescueError, match="empty"):
        parse_initrd(b"")
    with pytest.raises(RescueError, match="lzo compression is not supported"):
        parse_initrd(b"\x89LZO\0\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(RescueError, match=r"(?i)no such file"):
        read_initrd(tmp_path / "missing.img")


def test_garbage_after_a_good_segment_is_a_problem_not_an_error() -> None:
    image = parse_initrd(cpio(early_archive()) + b"GARBAGE!" * 4)
    assert image.is_file("kernel/x86/microcode/GenuineIntel.bin")
    assert image.problems and "unknown data" in image.problems[0]


def test_symlink_resolution_stays_inside_the_image() -> None:
    image = parse_initrd(
        cpio(
            [
                CpioEntry("usr", DIR),
                CpioEntry("usr/lib", DIR),
                CpioEntry("usr/lib/x", FILE, b"x"),
                CpioEntry("lib", LINK, b"/usr/lib"),
                CpioEntry("loop", LINK, b"loop"),
                CpioEntry("up", LINK, b"../../../usr"),
            ]
        )
    )
    assert image.read("lib/x") == b"x"
    assert image.read("up/lib/x") == b"x"
    assert not image.exists("loop/x")
    with pytest.raises(RescueError):
        image.read("lib/missing")


@pytest.mark.parametrize("kind", list(COMPRESSORS))
def test_a_decompression_bomb_stops_at_the_limit(kind: Compression) -> None:
    # 128 MiB of zeros compress to a few KiB; held to 2 MiB, memory must stay far below the 128.
    bomb = compress(kind, b"\0" * (128 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(RescueError, match="unpacks to more than 2 MiB"):
            parse_initrd(bomb, max_unpacked=2 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    dictionary = 64 << 20 if kind is Compression.LZMA else 0  # what lzma -9 makes its decoder allocate
    assert peak < (20 << 20) + dictionary  # lz4 unpacks 8 MiB blocks, twice that while one is made
    # Within the limit, the same stream is read (and found to hold no cpio archive).
    image = parse_initrd(bomb, max_unpacked=128 << 20)
    assert image.segments[0].unpacked == 128 << 20


def test_too_many_members(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(initrd, "MAX_MEMBERS", 50)
    entries = [CpioEntry(f"f{i}", FILE) for i in range(40)]
    assert len(list(parse_initrd(cpio(entries)).names())) == 40
    with pytest.raises(RescueError, match="more than 50 members"):
        parse_initrd(cpio(entries) + cpio([CpioEntry(f"g{i}", FILE) for i in range(20)]))

"""The test initramfs builder, on the host's installed Debian kernel (no download, no boot)."""

from __future__ import annotations

import gzip
import stat
from pathlib import Path

import pytest

from rescue.errors import RescueError
from rescue.harness.kernel import Kernel
from rescue.harness.kernel import host_kernel as installed_kernel
from rescue.harness.testinitrd import InitrdSpec, build_test_initrd, initrd_entries, root_fs_tree
from rescue.image.cpio import read_newc
from rescue.kmod import ModuleDB
from tests.conftest import require
from tests.host_kernel import KERNEL, MISSING, ko


def host_kernel() -> Kernel:
    require(KERNEL is not None and KERNEL.vmlinuz is not None, MISSING)
    kernel = installed_kernel()
    require((kernel.moddir / ko("kernel/fs/btrfs/btrfs.ko")).exists(), "the installed kernel has no btrfs.ko")
    return kernel


def test_module_files_follow_deps_and_drop_what_is_left_out() -> None:
    db = ModuleDB.parse(dep="kernel/a.ko: kernel/b.ko kernel/c.ko\nkernel/b.ko:\nkernel/c.ko: kernel/b.ko\n")
    assert db.closure_paths(["a"]) == ["kernel/a.ko", "kernel/b.ko", "kernel/c.ko"]
    assert db.closure_paths(["a"], leave_out=["c"]) == ["kernel/a.ko", "kernel/b.ko"]


def test_image_without_libcrc32c_looks_consistent(tmp_path: Path, busybox: str) -> None:
    kernel = host_kernel()
    spec = InitrdSpec(
        kernel, leave_out=["libcrc32c"], collector=False, files={"replay/stream.bin": b"payload"}
    )
    out = build_test_initrd(spec, tmp_path / "i.img")
    entries, _ = read_newc(gzip.decompress(out.read_bytes()))
    by_name = {e.name: e for e in entries}
    base = f"lib/modules/{kernel.version}"
    assert by_name["init"].is_file and by_name["init"].mode & 0o111
    assert f"{base}/{ko('kernel/fs/btrfs/btrfs.ko')}" in by_name
    assert f"{base}/{ko('kernel/lib/libcrc32c.ko')}" not in by_name
    # depmod ran on the chosen set: btrfs's line no longer names libcrc32c, like mkinitramfs's images.
    dep = by_name[f"{base}/modules.dep"].data.decode()
    btrfs_line = next(
        line for line in dep.splitlines() if line.startswith(ko("kernel/fs/btrfs/btrfs.ko") + ":")
    )
    assert "libcrc32c" not in btrfs_line and "xor.ko" in btrfs_line
    console = by_name["dev/console"]
    assert stat.S_ISCHR(console.mode) and (console.rdevmajor, console.rdevminor) == (5, 1)
    assert by_name["bin/ipconfig"].is_file
    assert any(n.startswith("lib/klibc-") and n.endswith(".so") for n in by_name)
    assert by_name["replay/stream.bin"].data == b"payload"
    # Parents come before children, as the kernel's unpacker needs.
    names = [e.name for e in entries]
    for i, name in enumerate(names):
        if "/" in name:
            assert name.rsplit("/", 1)[0] in names[:i], name


def test_unknown_module_is_a_clear_error() -> None:
    with pytest.raises(RescueError, match="no module no_such_mod"):
        initrd_entries(InitrdSpec(host_kernel(), modules=["no_such_mod"], collector=False))


def test_root_tree_has_the_mount_points_systemds_switch_root_moves(tmp_path: Path, busybox: str) -> None:
    # systemd moves /dev, /proc, /sys and /run onto the new root, which the initrd mounted read-only: a mount
    # point missing there fails the switch and systemd starts the initrd over.
    tree = root_fs_tree(tmp_path / "root")
    for mount_point in ("dev", "proc", "sys", "run"):
        assert (tree / mount_point).is_dir(), mount_point
    assert (tree / "etc" / "os-release").is_file()  # else "does not seem to be an OS tree"
    assert (tree / "sbin" / "init").stat().st_mode & 0o111

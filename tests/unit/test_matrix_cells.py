"""The realism matrix's cells (rescue.harness.matrix): what each failure removes, boots and expects, read from
the kernel's own modules.dep (written here in the shapes of Debian's 6.1 and 7.2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rescue.harness.kernel import Kernel
from rescue.harness.matrix import FAILURES, IMAGES, all_cells, btrfs_dependency, cell

DEP_6_1 = (
    "kernel/fs/btrfs/btrfs.ko: kernel/crypto/xor.ko kernel/lib/raid6/raid6_pq.ko kernel/lib/libcrc32c.ko\n"
)
DEP_7_2 = (
    "kernel/fs/btrfs/btrfs.ko.xz: kernel/lib/crypto/libblake2b.ko.xz kernel/lib/raid/raid6/raid6_pq.ko.xz "
    "kernel/lib/raid/xor/xor.ko.xz\n"
)


def kernel(tmp_path: Path, dep: str) -> Kernel:
    (tmp_path / "modules.dep").write_text(dep)
    return Kernel("k", "1", "v", tmp_path, tmp_path / "vmlinuz", tmp_path)


def test_btrfs_dependency_is_libcrc32c_where_btrfs_needs_it(tmp_path: Path) -> None:
    assert btrfs_dependency(kernel(tmp_path, DEP_6_1).moddir) == "libcrc32c"


def test_btrfs_dependency_on_7_x_is_the_first_of_its_modules_dep(tmp_path: Path) -> None:
    assert btrfs_dependency(kernel(tmp_path, DEP_7_2).moddir) == "libblake2b"


def test_a_kernel_whose_btrfs_needs_nothing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        btrfs_dependency(kernel(tmp_path, "kernel/fs/btrfs/btrfs.ko:\n").moddir)


def test_thirty_cells_each_with_its_own_failure(tmp_path: Path) -> None:
    k = kernel(tmp_path, DEP_7_2)
    cells = [cell(image, failure, k) for image, failure in all_cells()]
    assert len(cells) == 30 == len({c.name for c in cells})
    by_failure = {f: [c for c in cells if c.failure == f] for f in FAILURES}
    assert {c.drop for c in by_failure["btrfs-dep-missing"]} == {("libblake2b",)}
    assert {c.expected for c in by_failure["btrfs-dep-missing"]} == {"module-missing"}
    assert all("root=/dev/vdb" in c.cmdline for c in by_failure["root-device-missing"])
    assert {(c.drop, c.disk) for c in by_failure["fs-driver-missing"]} == {(("xfs",), "xfs")}
    assert {c.drop for c in by_failure["storage-driver-missing"]} == {("virtio_blk",)}
    assert all(c.drop == () and c.expected is None for c in by_failure["healthy"])


def test_every_systemd_image_bounds_its_wait_for_the_root(tmp_path: Path) -> None:
    k = kernel(tmp_path, DEP_6_1)
    for image in (i for i in IMAGES if i.systemd):
        args = cell(image, "root-device-missing", k).cmdline
        assert any(a.startswith(("rd.timeout=", "rescue.after=")) for a in args), args

"""The realism matrix: six kinds of image x five ways a boot goes, each cell one boot under qemu TCG.

Images: the hand-built busybox one; initramfs-tools and dracut (shell init, and systemd) of the host with
the host's kernel; initramfs-tools and dracut (systemd) of sid in a chroot with sid's kernel. Each
generator image is built once with the hooks (cached under `.cache/rescue/images`, keyed by what went into
it: generator, kernel, the hooks' files) and each broken variant derived from it by removing modules
(rescue.harness.variants). Failures: a module of btrfs's own closure missing, the root device missing, the
root file system's driver missing (xfs), the storage driver missing (virtio_blk), and a healthy boot.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rescue.errors import RescueError
from rescue.harness.apt import locked
from rescue.harness.imagebuild import build_dracut_image, build_initramfs_tools_image
from rescue.harness.kernel import Kernel, default_cache_dir, fetch_kernel, host_kernel
from rescue.harness.qemu import HOST_FROM_GUEST, Disk, VMSpec, default_accel, kernel_cmdline, make_btrfs_image
from rescue.harness.scenarios import BootResult, Harness
from rescue.harness.suitechroot import install_kernel, suite_chroot
from rescue.harness.testinitrd import InitrdSpec, build_test_initrd, root_fs_tree
from rescue.harness.variants import without_modules
from rescue.kmod import ModuleDB
from rescue.resources import hooks_dir
from rescue.run import run


@dataclass(frozen=True)
class ImageKind:
    name: str  # the cell's row, e.g. "dracut-112-systemd"
    generator: str  # "busybox" (hand-built), "initramfs-tools" or "dracut"
    suite: str | None = None  # None: the host's generator and kernel; else that suite's, in a chroot
    systemd: bool = False  # dracut with systemd in the initrd


IMAGES = (
    ImageKind("busybox", "busybox"),
    ImageKind("initramfs-tools-host", "initramfs-tools"),
    ImageKind("dracut-host", "dracut"),
    ImageKind("dracut-host-systemd", "dracut", systemd=True),
    ImageKind("initramfs-tools-sid", "initramfs-tools", "sid"),
    ImageKind("dracut-sid-systemd", "dracut", "sid", systemd=True),
)
FAILURES = (
    "btrfs-dep-missing",
    "root-device-missing",
    "fs-driver-missing",
    "storage-driver-missing",
    "healthy",
)
FS_DRIVER = "xfs"  # ext4 is built into Debian's cloud kernels; xfs is a module in 6.1 and 7.2 alike
STORAGE_DRIVER = "virtio_blk"
ROOT_WAIT = 10  # seconds a shell init waits for a root device that never comes (rd.retry, rescue.rootwait)
# systemd's wait (rd.timeout) starts before udevd does: under TCG sid's systemd initrd starts udevd 30-40 s
# into the boot, and on a loaded machine the disk's driver came at 60-100 s; a shorter wait sends evidence
# taken before the disk and the NIC had their drivers (and ends a good boot in the emergency shell).
SYSTEMD_WAIT = 90


@dataclass(frozen=True)
class Cell:
    image: ImageKind
    failure: str
    drop: tuple[str, ...]  # modules removed from the image
    disk: str  # the root disk: "btrfs" or "xfs"
    cmdline: tuple[str, ...]  # without rescue.host/rescue.port, which each boot adds
    expected: str | None  # the root cause the diagnosis must find (None: no error)

    @property
    def name(self) -> str:
        return f"{self.image.name}-{self.failure}"


def watchdog_in_hooks() -> bool:
    """The hooks start a watchdog early (rescue.after=S): then dracut+systemd needs no rd.timeout."""
    return (hooks_dir() / "collector" / "watchdog.sh").is_file()


def btrfs_dependency(moddir: Path) -> str:
    """The module of btrfs's own closure the btrfs-dep-missing cells remove: libcrc32c where btrfs needs it
    (before 6.14), else the first module btrfs depends on in the kernel's modules.dep (7.x: libblake2b)."""
    deps = ModuleDB.load(moddir).deps_of.get("btrfs", [])
    if not deps:
        raise ValueError(f"{moddir}: btrfs depends on no module")
    return "libcrc32c" if "libcrc32c" in deps else deps[0]


def cell(image: ImageKind, failure: str, kernel: Kernel) -> Cell:
    """What cell (image, failure) boots: which modules go, which disk, which command line, what to find."""
    root = ["root=/dev/vda", "rootfstype=btrfs"]
    drop: tuple[str, ...] = ()
    disk, expected = "btrfs", None
    if failure == "btrfs-dep-missing":
        drop = (btrfs_dependency(kernel.moddir),)
        expected = "btrfs-crc32c-missing" if drop == ("libcrc32c",) else "module-missing"
    elif failure == "root-device-missing":
        root, expected = ["root=/dev/vdb", "rootfstype=btrfs"], "root-device-missing"
    elif failure == "fs-driver-missing":
        drop, disk, root, expected = (
            (FS_DRIVER,),
            "xfs",
            ["root=/dev/vda", "rootfstype=xfs"],
            "fs-module-missing",
        )
    elif failure == "storage-driver-missing":
        drop, expected = (STORAGE_DRIVER,), "storage-driver-missing"
    elif failure != "healthy":
        raise ValueError(f"unknown failure {failure!r}")
    # A healthy boot waits as long as it takes: a bound there could only turn slowness into a failure.
    waits = _waits(image) if failure != "healthy" else []
    return Cell(image, failure, drop, disk, (*root, *waits), expected)


def _waits(image: ImageKind) -> list[str]:
    """Bound how long each init waits for a root that never comes, so a failure reaches the collector."""
    if image.generator == "busybox":
        return [f"rescue.rootwait={ROOT_WAIT // 3}"]
    if image.generator == "initramfs-tools":
        return ["rootdelay=1"]  # it still waits its minimum of 30 s
    if not image.systemd:
        return [f"rd.retry={ROOT_WAIT}"]
    # systemd waits for the root device without end: the hooks' watchdog sends anyway; without it,
    # rd.timeout turns the wait into the emergency path.
    return [f"rescue.after={SYSTEMD_WAIT}"] if watchdog_in_hooks() else [f"rd.timeout={SYSTEMD_WAIT}"]


def boot_args(c: Cell, port: int, *extra: str) -> list[str]:
    """The kernel command line of one boot of the cell. initramfs-tools runs no panic hooks with panic=."""
    panic = c.image.generator == "busybox"
    args = [*c.cmdline, f"rescue.host={HOST_FROM_GUEST}", f"rescue.port={port}", *extra]
    return kernel_cmdline(*args, panic=panic)


class Matrix:
    """Kernels, images and disks for the cells, shared through the cache by parallel test workers."""

    def __init__(
        self, workdir: Path, cache_dir: Path | None = None, collector_dir: Path | None = None
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.cache = cache_dir or default_cache_dir()
        self.collector_dir = collector_dir
        self._kernels: dict[str | None, Kernel] = {}

    def kernel(self, image: ImageKind) -> Kernel:
        if image.suite not in self._kernels:
            self._kernels[image.suite] = (
                host_kernel()
                if image.suite is None
                else fetch_kernel(cache_dir=self.cache, suite=image.suite)
            )
        return self._kernels[image.suite]

    def cell(self, image: ImageKind, failure: str) -> Cell:
        return cell(image, failure, self.kernel(image))

    def image(self, c: Cell) -> Path:
        """The cell's initramfs: hand-built, or the cached generator image minus the cell's modules."""
        kernel = self.kernel(c.image)
        if c.image.generator == "busybox":
            out = self.workdir / f"busybox-{'-'.join(c.drop) or 'full'}.img"
            if not out.exists():
                spec = InitrdSpec(kernel, leave_out=c.drop, collector_dir=self.collector_dir)
                build_test_initrd(spec, out)
            return out
        base = self.base_image(c.image)
        if not c.drop:
            return base
        out = base.with_name(f"{base.stem}-without-{'-'.join(c.drop)}.img")
        with locked(out.with_name(f".lock-{out.name}")):
            if not out.exists():
                without_modules(base, out, c.drop)
        return out

    def base_image(self, image: ImageKind) -> Path:
        kernel = self.kernel(image)
        out = self.cache / "images" / f"{image.name}-{kernel.version}-{self._hooks_digest()}.img"
        with locked(out.with_name(f".lock-{out.name}")):
            if not out.exists():
                self._build(image, kernel, out)
        return out

    def _build(self, image: ImageKind, kernel: Kernel, out: Path) -> None:
        root = None
        version = kernel.version
        if image.suite is not None:
            root = suite_chroot(self.cache, image.suite)
            version = install_kernel(root, kernel)
        tmp = out.with_name(f".{out.name}.tmp")
        # The port baked in is a placeholder: each boot names its listener with rescue.port= (cmdline wins).
        if image.generator == "initramfs-tools":
            build_initramfs_tools_image(tmp, version, host=HOST_FROM_GUEST, port=3333, root=root)
        else:
            build_dracut_image(
                tmp, version, host=HOST_FROM_GUEST, port=3333, systemd=image.systemd, root=root
            )
        os.replace(tmp, out)

    def _hooks_digest(self) -> str:
        """What of this checkout goes into a generator image: every file of hooks/ (and the collector)."""
        h = hashlib.sha256()
        dirs = [hooks_dir()] + ([self.collector_dir] if self.collector_dir else [])
        for directory in dirs:
            for path in sorted(p for p in directory.rglob("*") if p.is_file()):
                h.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes())
        return h.hexdigest()[:12]

    def disk(self, kind: str) -> Path:
        """A root disk: btrfs whose /sbin/init says it was reached, or xfs (only its driver matters)."""
        out = self.workdir / f"{kind}-root.img"
        if out.exists():
            return out
        if kind == "btrfs":
            return make_btrfs_image(root_fs_tree(self.workdir / "btrfs-root-tree"), out)
        mkfs = shutil.which("mkfs.xfs", path="/usr/sbin:/usr/bin:/sbin:/bin")
        if mkfs is None:
            raise RescueError("mkfs.xfs not found", hint="install xfsprogs (make deps)")
        with out.open("wb") as f:
            f.truncate(320 * 1024 * 1024)  # sparse; xfs wants at least 300 MB
        run([mkfs, "-q", "-f", out])
        return out

    def boot(
        self, c: Cell, port: int, *extra: str, until_sent: bool = True, timeout: float = 300
    ) -> BootResult:
        """One boot of the cell: until the collector's last line (a failure), or until qemu exits (healthy:
        the root's init reboots)."""
        kernel = self.kernel(c.image)
        spec = VMSpec(
            kernel=kernel.vmlinuz,
            initrd=self.image(c),
            cmdline=boot_args(c, port, *extra),
            disks=[Disk(self.disk(c.disk))],
            accel=default_accel(),
        )
        harness = Harness(self.workdir, kernel=kernel)
        name = c.name + "".join(f"-{e.replace('=', '')}" for e in extra)
        return (
            harness.boot_until_sent(spec, name, timeout)
            if until_sent
            else harness.boot_to_end(spec, name, timeout)
        )


def always_supported(image: ImageKind) -> bool:
    """Whether the image's hooks honour rescue.always=1 (send on every boot, before the root is mounted)."""
    if image.generator == "busybox":
        return "rescue.always" in (Path(__file__).parent / "guest" / "test-init.sh").read_text()
    files = [p for p in (hooks_dir() / image.generator).rglob("*") if p.is_file()]
    return any("rescue.always" in p.read_text(errors="replace") for p in files)


def all_cells(images: Sequence[ImageKind] = IMAGES) -> list[tuple[ImageKind, str]]:
    return [(image, failure) for image in images for failure in FAILURES]

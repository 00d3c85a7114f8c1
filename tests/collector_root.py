"""A fake root for running the collector outside an initramfs (RESCUE_PREFIX points at it).

The module tree is real: the .ko files of the root filesystem's closure are copied from the installed kernel
and `depmod -b` (kmod) writes modules.dep/softdep/alias for them, exactly as mkinitramfs does for an image.
Only /proc and blkid are fixtures, because the host's own would describe this machine, not a failed boot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rescue.kmod import ModuleDB
from tests.host_kernel import HOST_MODDIR, KVER

REPO = Path(__file__).resolve().parent.parent
COLLECTOR = REPO / "hooks" / "collector" / "collect.sh"  # net.sh and modcheck.awk beside it

# /proc/crypto as a 6.1 kernel with crc32c_generic built in shows it.
CRYPTO = """name         : crc32c
driver       : crc32c-generic
module       : kernel
priority     : 100
refcnt       : 1
selftest     : passed
internal     : no
type         : shash

name         : sha256
driver       : sha256-generic
module       : kernel
priority     : 100
refcnt       : 1
selftest     : passed
internal     : no
type         : shash
"""

BTRFS_UUID = "0f5bb0a8-4e5e-4c1e-9d0e-6b1b8c6d2a11"

# What the kernel says when btrfs.ko is loaded without libcrc32c (recorded on Debian's 6.1 kernel).
DMESG = f"""<6>[    0.000000] Linux version 6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org)
<5>[    0.000000] Kernel command line: console=ttyS0 root=UUID={BTRFS_UUID} rescue.token=s3cr3t-tok \
rd.iscsi.password=hunter2
<3>[    2.100000] btrfs: Unknown symbol crc32c (err -2)
<3>[    2.100100] btrfs: Unknown symbol crc32c_impl (err -2)
"""


@dataclass
class FakeRoot:
    path: Path
    dmesg: Path
    blkid: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "RESCUE_PREFIX": str(self.path),
            "RESCUE_DMESG": str(self.dmesg),
            "RESCUE_BLKID": str(self.blkid),
            # The host's network is not ours to configure: the listener is on 127.0.0.1.
            "RESCUE_IP": "none",
        }
        env.update(extra)
        return env

    @property
    def bundle(self) -> Path:
        return self.path / "run" / "rescue" / "bundle"


def build(
    base: Path,
    *,
    roots: Sequence[str] = ("btrfs",),
    drop: Iterable[str] = (),
    cmdline: str = "console=ttyS0 root=UUID={uuid} rescue.token=s3cr3t-tok rd.iscsi.password=hunter2",
    proc_modules: str = "",
) -> FakeRoot:
    """A fake root whose modules tree holds `roots` and their closure, minus `drop`."""
    root = base / "root"
    moddir = root / "lib" / "modules" / KVER
    moddir.mkdir(parents=True)
    for rel in ModuleDB.load(HOST_MODDIR).closure_paths(roots, drop):
        dest = moddir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(HOST_MODDIR / rel, dest)
    for name in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        shutil.copy2(HOST_MODDIR / name, moddir / name)
    subprocess.run(["depmod", "-b", str(root), KVER], check=True, capture_output=True)

    return add_fixtures(root, base, cmdline=cmdline, proc_modules=proc_modules)


def add_fixtures(
    root: Path,
    base: Path,
    *,
    cmdline: str = "console=ttyS0 root=UUID={uuid}",
    proc_modules: str = "",
    kver: str = KVER,
) -> FakeRoot:
    """Fixture /proc, /dev/disk, dmesg and blkid for a root (a fake one, or an unpacked real image)."""
    proc = root / "proc"
    (proc / "sys" / "kernel" / "random").mkdir(parents=True, exist_ok=True)
    (proc / "cmdline").write_text(cmdline.format(uuid=BTRFS_UUID) + "\n")
    (proc / "modules").write_text(proc_modules)
    (proc / "crypto").write_text(CRYPTO)
    (proc / "filesystems").write_text("nodev\tsysfs\nnodev\tproc\nnodev\ttmpfs\n\text4\n")
    (proc / "partitions").write_text("major minor  #blocks  name\n\n 254        0     131072 vda\n")
    (proc / "mounts").write_text("rootfs / rootfs rw 0 0\nproc /proc proc rw 0 0\n")
    (proc / "sys" / "kernel" / "osrelease").write_text(kver + "\n")
    (proc / "sys" / "kernel" / "hostname").write_text("broken host\n")
    (proc / "sys" / "kernel" / "random" / "boot_id").write_text("1b4e28ba-2fa1-11d2-883f-0016d3cca427\n")
    (root / "dev" / "disk" / "by-uuid").mkdir(parents=True, exist_ok=True)
    os.symlink("../../vda", root / "dev" / "disk" / "by-uuid" / BTRFS_UUID)
    (root / "run").mkdir(exist_ok=True)
    (root / "etc").mkdir(exist_ok=True)

    dmesg = base / "dmesg.fixture"
    dmesg.write_text(DMESG)
    blkid = base / "blkid.fixture"
    blkid.write_text(f'/dev/vda: UUID="{BTRFS_UUID}" UUID_SUB="7c1d" BLOCK_SIZE="4096" TYPE="btrfs"\n')
    return FakeRoot(root, dmesg, blkid)


def run_collector(
    busybox: str, fake: FakeRoot, *args: str, timeout: float = 60, collector: Path = COLLECTOR, **env: str
) -> subprocess.CompletedProcess[str]:
    """The collector (by default the checkout's) under busybox-static's ash, as the initramfs runs it."""
    return subprocess.run(
        [busybox, "ash", str(collector), *args],
        env=fake.env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )

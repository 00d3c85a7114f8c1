"""Record the real boot logs the analysis tests read (run by hand; the logs are committed).

    python -m tests.data.analyze.record [SCENARIO...]

Boots this host's Debian cloud kernel under qemu (TCG) with real mkinitramfs images and real btrfs disks,
and saves the serial console (kernel messages and initramfs-tools output) as <scenario>.console.log.
One qemu and one mkinitramfs at a time.
"""

from __future__ import annotations

import io
import shutil
import stat
import struct
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from rescue.image.cpio import CpioEntry, write_newc
from rescue.run import run
from tests.host_kernel import KERNEL, KVER
from tests.integration.images import build_dracut_image, build_initramfs_tools_image

HERE = Path(__file__).resolve().parent
VMLINUZ = KERNEL.vmlinuz if KERNEL and KERNEL.vmlinuz else Path("/boot/vmlinuz-(none)")
BUSYBOX = Path("/bin/busybox")

# The root file system's /sbin/init: say so and power off (a normal boot, for the no-false-alarm test).
INIT = """#!/bin/sh
echo "rescue-record: root file system mounted, init running"
/bin/busybox dmesg > /dev/null
/bin/busybox poweroff -f
"""


def btrfs_disk(work: Path, csum: str = "crc32c") -> Path:
    disk = work / f"disk-{csum}.img"
    if disk.exists():
        return disk
    root = work / f"root-{csum}"
    (root / "bin").mkdir(parents=True)
    for d in ("sbin", "dev", "proc", "sys", "run", "tmp"):
        (root / d).mkdir()
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    (root / "sbin" / "init").write_text(INIT)
    (root / "sbin" / "init").chmod(0o755)
    run(["truncate", "-s", "128M", disk])
    run(["mkfs.btrfs", "-q", "-f", "--csum", csum, "--rootdir", root, disk])
    return disk


# A hand-built initramfs reproducing the bug by hand, then printing `dmesg -r` as the
# collector does, between markers: a real busybox raw-level dmesg for the tests.
HAND_INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev
for m in xor raid6_pq zstd_compress btrfs; do /bin/busybox insmod /lib/modules/$m.ko; done
echo RESCUE-DMESG-BEGIN
/bin/busybox dmesg -r
echo RESCUE-DMESG-END
/bin/busybox poweroff -f
"""
HAND_MODULES = [
    "kernel/crypto/xor.ko",
    "kernel/lib/raid6/raid6_pq.ko",
    "kernel/lib/zstd/zstd_compress.ko",
    "kernel/fs/btrfs/btrfs.ko",
]


def hand_built(
    work: Path, init: str = HAND_INIT, modules: dict[str, bytes] | None = None, name: str = "hand.img"
) -> Path:
    directory = stat.S_IFDIR | 0o755
    entries = [
        CpioEntry("bin", directory),
        CpioEntry("lib", directory),
        CpioEntry("lib/modules", directory),
        CpioEntry("bin/busybox", stat.S_IFREG | 0o755, BUSYBOX.read_bytes()),
        CpioEntry("init", stat.S_IFREG | 0o755, init.encode()),
    ]
    if modules is None:
        modules = {Path(rel).name: (Path("/lib/modules") / KVER / rel).read_bytes() for rel in HAND_MODULES}
    for filename, data in modules.items():
        entries.append(CpioEntry(f"lib/modules/{filename}", stat.S_IFREG | 0o644, data))
    buf = io.BytesIO()
    write_newc(entries, buf)
    out = work / name
    out.write_bytes(run(["gzip", "-n", "-c"], input=buf.getvalue()).stdout)
    return out


# Modules that do not match the running kernel, made from the real ones by editing what the kernel checks:
# xor.ko's recorded CRC for ktime_get (the kernel then says it "disagrees about version of symbol"), and
# libcrc32c.ko's vermagic (with CRCs the kernel compares what follows the version number).
VERSION_INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev
for m in xor libcrc32c; do /bin/busybox insmod /lib/modules/$m.ko; done
echo RESCUE-DMESG-BEGIN
/bin/busybox dmesg -r
echo RESCUE-DMESG-END
/bin/busybox poweroff -f
"""


def _patch_crc(ko: bytes, symbol: bytes) -> bytes:
    shoff = struct.unpack_from("<Q", ko, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ko, 0x3A)
    secs = [struct.unpack_from("<IIQQQQIIQQ", ko, shoff + i * shentsize) for i in range(shnum)]
    names = ko[secs[shstrndx][4] : secs[shstrndx][4] + secs[shstrndx][5]]
    out = bytearray(ko)
    for sec in secs:
        if names[sec[0] : names.find(b"\0", sec[0])] == b"__versions":
            for off in range(sec[4], sec[4] + sec[5], 64):  # struct modversion_info: crc, name[56]
                if ko[off + 8 : off + 64].rstrip(b"\0") == symbol:
                    out[off : off + 4] = bytes(b ^ 0xFF for b in ko[off : off + 4])
                    return bytes(out)
    raise ValueError(f"no version entry for {symbol!r}")


def _unsigned(ko: bytes) -> bytes:
    """Drop the appended signature: an edited module's signature no longer verifies and the kernel would
    reject it for that; an unsigned one only taints a kernel that does not enforce signatures."""
    magic = b"~Module signature appended~\n"
    if not ko.endswith(magic):
        return ko
    (sig_len,) = struct.unpack(">I", ko[-len(magic) - 4 : -len(magic)])  # struct module_signature.sig_len
    return ko[: -(len(magic) + 12 + sig_len)]


def mismatched(work: Path) -> Path:
    moddir = Path("/lib/modules") / KVER / "kernel"
    xor = _patch_crc(_unsigned((moddir / "crypto" / "xor.ko").read_bytes()), b"ktime_get")
    crc = _unsigned((moddir / "lib" / "libcrc32c.ko").read_bytes()).replace(b" mod_unload ", b" mod_unl0ad ")
    return hand_built(work, VERSION_INIT, {"xor.ko": xor, "libcrc32c.ko": crc}, "version.img")


def boot(initrd: Path, append: str, disk: Path | None) -> str:
    argv: list[str | Path] = [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-m",
        "512",
        "-smp",
        "1",
        "-nographic",
        "-no-reboot",
        "-kernel",
        VMLINUZ,
        "-initrd",
        initrd,
        "-append",
        f"console=ttyS0 panic=-1 {append}",
    ]
    if disk:
        argv += ["-drive", f"file={disk},if=virtio,format=raw,cache=writeback"]
    proc = run(argv, check=False, timeout=300)
    return proc.stdout.decode("utf-8", errors="replace")


def scenarios(work: Path) -> dict[str, Callable[[], str]]:
    def normal() -> Path:
        out = work / "normal.img"
        return out if out.exists() else build_initramfs_tools_image(out, KVER)

    def nocrc() -> Path:
        return build_initramfs_tools_image(work / "nocrc.img", KVER, drop_modules=["libcrc32c"])

    def truncated() -> Path:
        data = normal().read_bytes()
        out = work / "truncated.img"
        out.write_bytes(data[: len(data) // 3])
        return out

    def dracut_nocrc() -> Path:
        return build_dracut_image(work / "dracut-nocrc.img", KVER, omit_drivers=["libcrc32c"])

    def dracut_normal() -> Path:
        out = work / "dracut.img"
        return out if out.exists() else build_dracut_image(out, KVER)

    root = "root=/dev/vda rootfstype=btrfs"
    return {
        "btrfs-crc32c-missing": lambda: boot(nocrc(), root, btrfs_disk(work)),
        "normal-btrfs-boot": lambda: boot(normal(), root, btrfs_disk(work)),
        "btrfs-xxhash-csum": lambda: boot(normal(), root, btrfs_disk(work, "xxhash")),
        "root-device-missing": lambda: boot(normal(), "root=/dev/vdb rootdelay=3", btrfs_disk(work)),
        "initramfs-truncated": lambda: boot(truncated(), root, btrfs_disk(work)),
        "busybox-insmod-btrfs": lambda: boot(hand_built(work), "quiet", None),
        "busybox-insmod-version-mismatch": lambda: boot(mismatched(work), "quiet", None),
        # rd.shell=0 rd.emergency=reboot: dracut reboots (qemu exits) instead of waiting on the console.
        # A file system type the kernel has no driver for (nilfs2 is not in the image).
        "dracut-unknown-fstype": lambda: boot(
            dracut_normal(),
            "root=/dev/vda rootfstype=nilfs2 rd.shell=0 rd.emergency=reboot",
            btrfs_disk(work),
        ),
        "dracut-btrfs-crc32c-missing": lambda: boot(
            dracut_nocrc(),
            f"{root} rd.shell=0 rd.emergency=reboot rd.retry=10 rd.timeout=20",
            btrfs_disk(work),
        ),
    }


def main(names: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="rescue-record-") as tmp:
        table = scenarios(Path(tmp))
        for name in names or list(table):
            log = table[name]()
            (HERE / f"{name}.console.log").write_text(log)
            if "RESCUE-DMESG-BEGIN\r\n" in log:
                dmesg = log.split("RESCUE-DMESG-BEGIN\r\n", 1)[1].split("RESCUE-DMESG-END", 1)[0]
                (HERE / f"{name}.dmesg-r.txt").write_text(dmesg.replace("\r\n", "\n"))
            print(f"{name}: {len(log.splitlines())} lines", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Record the real boot logs the analysis tests read (run by hand; the logs are committed).

    python -m tests.data.analyze.record [SCENARIO...]

Boots this host's Debian cloud kernel under qemu (TCG) with real mkinitramfs images and real btrfs disks,
and saves the serial console (kernel messages and initramfs-tools output) as <scenario>.console.log.
One qemu and one mkinitramfs at a time.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from rescue.run import run
from tests.integration.images import build_dracut_image, build_initramfs_tools_image

HERE = Path(__file__).resolve().parent
KVER = "6.1.0-56-cloud-amd64"
KERNEL = Path(f"/boot/vmlinuz-{KVER}")
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
        KERNEL,
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

    root = "root=/dev/vda rootfstype=btrfs"
    return {
        "btrfs-crc32c-missing": lambda: boot(nocrc(), root, btrfs_disk(work)),
        "normal-btrfs-boot": lambda: boot(normal(), root, btrfs_disk(work)),
        "btrfs-xxhash-csum": lambda: boot(normal(), root, btrfs_disk(work, "xxhash")),
        "root-device-missing": lambda: boot(normal(), "root=/dev/vdb rootdelay=3", btrfs_disk(work)),
        "initramfs-truncated": lambda: boot(truncated(), root, btrfs_disk(work)),
        # rd.shell=0 rd.emergency=reboot: dracut reboots (qemu exits) instead of waiting on the console.
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
            print(f"{name}: {len(log.splitlines())} lines", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

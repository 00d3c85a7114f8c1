"""qemu for the harness: argv from small pure functions, btrfs disk images, and a booted VM on a console.

TCG is the default. KVM only on explicit request (`accel="kvm"` or RESCUE_KVM=1): on these machines
/dev/kvm is a nested kvm_pvm where `-cpu host` aborts and other models hang after the decompressor, and a
probe boot would cost a timeout every run. `-cpu max` because crc32c_intel and friends need the CPU flags.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from rescue.errors import RescueError
from rescue.harness.console import Console
from rescue.run import run

QEMU = "qemu-system-x86_64"
HOST_FROM_GUEST = "10.0.2.2"  # qemu user networking maps this to the host's 127.0.0.1


class Accel(StrEnum):
    TCG = "tcg"
    KVM = "kvm"


def default_accel(env: Mapping[str, str] | None = None) -> Accel:
    """TCG unless the user opted in to KVM with RESCUE_KVM=1 (never probed: see the module comment)."""
    value = (os.environ if env is None else env).get("RESCUE_KVM", "")
    return Accel.KVM if value in ("1", "yes", "true") else Accel.TCG


@dataclass(frozen=True)
class Disk:
    path: Path
    fmt: str = "raw"


@dataclass(frozen=True)
class VMSpec:
    kernel: Path
    initrd: Path
    cmdline: Sequence[str] = ()
    disks: Sequence[Disk] = ()
    memory_mb: int = 512
    cpus: int = 1
    accel: Accel = Accel.TCG
    network: bool = True
    extra: Sequence[str] = field(default_factory=tuple)


def qemu_path(value: str | Path) -> str:
    """qemu splits option values on commas; a literal comma in a file name is written twice."""
    return str(value).replace(",", ",,")


def machine_args(accel: Accel, memory_mb: int, cpus: int) -> list[str]:
    if accel is Accel.KVM:
        return ["-accel", "kvm", "-cpu", "host", "-m", str(memory_mb), "-smp", str(cpus)]
    return ["-accel", "tcg", "-cpu", "max", "-m", str(memory_mb), "-smp", str(cpus)]


def console_args() -> list[str]:
    # The serial port on stdio and nothing else: no monitor multiplexed in (its Ctrl-A escapes would eat
    # bytes), no VGA, no default devices. -no-reboot turns the guest's reboot and panic=-1 into qemu exiting.
    return ["-nodefaults", "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot"]


def boot_args(kernel: Path, initrd: Path, cmdline: Sequence[str]) -> list[str]:
    return ["-kernel", qemu_path(kernel), "-initrd", qemu_path(initrd), "-append", " ".join(cmdline)]


def net_args(enabled: bool = True) -> list[str]:
    if not enabled:
        return ["-nic", "none"]
    return ["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"]


def disk_args(disks: Sequence[Disk]) -> list[str]:
    # cache=writeback: the O_SYNC-like modes make every guest write a host fsync, slow on btrfs by design.
    args: list[str] = []
    for disk in disks:
        args += ["-drive", f"file={qemu_path(disk.path)},if=virtio,format={disk.fmt},cache=writeback"]
    return args


def kernel_cmdline(*extra: str, console: str = "ttyS0", panic: bool = True) -> list[str]:
    """panic=-1 reboots at once on a panic, which -no-reboot turns into qemu exiting instead of hanging.

    panic=False leaves it out: initramfs-tools runs no scripts/panic hooks at all when panic= is given.
    """
    return [f"console={console}", *(["panic=-1"] if panic else []), *extra]


def qemu_argv(spec: VMSpec) -> list[str]:
    return [
        QEMU,
        *machine_args(spec.accel, spec.memory_mb, spec.cpus),
        *console_args(),
        *boot_args(spec.kernel, spec.initrd, spec.cmdline),
        *net_args(spec.network),
        *disk_args(spec.disks),
        *spec.extra,
    ]


def make_btrfs_image(rootdir: Path, image: Path, size_mb: int = 128) -> Path:
    """A btrfs filesystem holding rootdir, in a plain file (mkfs.btrfs --rootdir needs no loop device)."""
    mkfs = shutil.which("mkfs.btrfs", path=os.environ.get("PATH", "") + ":/sbin:/usr/sbin")
    if mkfs is None:
        raise RescueError("mkfs.btrfs: command not found", hint="install btrfs-progs (make deps)")
    with image.open("wb") as f:
        f.truncate(size_mb * 1024 * 1024)
    run([mkfs, "-q", "-f", "--rootdir", rootdir, image])
    return image


@contextmanager
def boot(spec: VMSpec, *, log_path: Path | None = None) -> Iterator[Console]:
    """Start qemu on a console; on leaving, stop it (politely if it is still running, then by force)."""
    if shutil.which(QEMU) is None:
        raise RescueError(f"{QEMU}: command not found", hint="install qemu-system-x86 (make deps)")
    console = Console.spawn(qemu_argv(spec), log_path=log_path)
    try:
        yield console
    finally:
        console.close()

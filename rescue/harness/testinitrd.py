"""The hand-built test initramfs: busybox-static, klibc ipconfig, chosen modules, the collector, an /init.

Built entry by entry with rescue.image.cpio.write_newc and gzip'd, in well under a second. Modules are the
closure of the roots (modules.dep and softdeps, through rescue.kmod.ModuleDB) minus what the scenario
leaves out; `depmod` then runs on the chosen set, as mkinitramfs does, so a left-out libcrc32c leaves an
image whose own modules.dep looks consistent, which is the trap the real bug sets.
"""

from __future__ import annotations

import gzip
import io
import shutil
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rescue.errors import RescueError
from rescue.harness.kernel import Kernel
from rescue.image.cpio import CpioEntry, write_newc
from rescue.kmod import ModuleDB
from rescue.resources import collector_files, guest_dir
from rescue.run import run

BUSYBOX = Path("/bin/busybox")
KLIBC_BIN = Path("/usr/lib/klibc/bin")
# What a btrfs-root machine's initramfs needs: the virtio devices qemu gives it, and the root filesystem.
# ata_piix: the IDE controller every qemu `pc` machine has, which real images (MODULES=most) drive too.
DEFAULT_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "ata_piix", "btrfs")
NETCONSOLE_MODULES = ("netconsole", "configfs")  # what the hooks' build scripts add for netconsole.sh
LONG_MESSAGE = "rescue-test: long " + "Grüße aus dem Kernel, " * 30 + "end"
_DIRS = ("bin", "sbin", "dev", "etc", "lib", "lib/rescue", "newroot", "proc", "root", "run", "sys", "tmp",
         "usr", "usr/bin", "usr/sbin", "var")  # fmt: skip


@dataclass(frozen=True)
class InitrdSpec:
    kernel: Kernel
    modules: Sequence[str] = DEFAULT_MODULES
    leave_out: Sequence[str] = ()  # module names to drop from the closure, e.g. ("libcrc32c",)
    collector: bool = True  # include the collector (hooks/collector/*) as /lib/rescue/*
    collector_dir: Path | None = None  # another collector than the checkout's hooks/collector
    config: Mapping[str, str] = field(default_factory=dict)  # /etc/rescue.conf (RESCUE_HOST=...)
    files: Mapping[str, bytes] = field(default_factory=dict)  # extra files: path in the image -> contents


def _dir(name: str) -> CpioEntry:
    return CpioEntry(name=name, mode=stat.S_IFDIR | 0o755)


def _file(name: str, data: bytes, mode: int = 0o644) -> CpioEntry:
    return CpioEntry(name=name, mode=stat.S_IFREG | mode, data=data)


def _parents(name: str) -> list[str]:
    parts = name.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def klibc_entries() -> list[CpioEntry]:
    """klibc's ipconfig and the shared object it is linked against (its ELF interpreter)."""
    ipconfig = KLIBC_BIN / "ipconfig"
    libs = sorted(Path("/usr/lib").glob("klibc-*.so")) or sorted(Path("/lib").glob("klibc-*.so"))
    if not ipconfig.is_file() or not libs:
        raise RescueError("klibc ipconfig not found", hint="install klibc-utils (make deps)")
    return [
        _file("bin/ipconfig", ipconfig.read_bytes(), 0o755),
        _file(f"lib/{libs[0].name}", libs[0].read_bytes(), 0o755),
    ]


def module_entries(kernel: Kernel, roots: Sequence[str], leave_out: Sequence[str]) -> list[CpioEntry]:
    """The chosen modules and the metadata `depmod` writes for exactly them."""
    db = ModuleDB.load(kernel.moddir)
    unknown = [r for r in roots if not db.resolve(r)]
    if unknown:
        raise RescueError(f"kernel {kernel.version} has no module {', '.join(unknown)}")
    base = f"lib/modules/{kernel.version}"
    with tempfile.TemporaryDirectory(prefix="rescue-mods-") as tmp:
        stage = Path(tmp) / base
        stage.mkdir(parents=True)
        for rel in db.closure_paths(roots, leave_out):
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(kernel.moddir / rel, stage / rel)
        for meta in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
            if (kernel.moddir / meta).is_file():
                shutil.copyfile(kernel.moddir / meta, stage / meta)
        run(["depmod", "-b", tmp, kernel.version])
        entries = []
        for path in sorted(stage.rglob("*")):
            name = f"{base}/{path.relative_to(stage)}"
            entries.append(_dir(name) if path.is_dir() else _file(name, path.read_bytes()))
        return entries


def collector_entries(
    config: Mapping[str, str], directory: Path | None = None, kernel: Kernel | None = None
) -> list[CpioEntry]:
    conf = "".join(f"{k}={v}\n" for k, v in config.items())
    files = [_file(f"lib/rescue/{f.name}", f.read_bytes(), 0o755) for f in collector_files(directory)]
    if kernel is not None:
        # What the generators' build hooks bake in: the kernel's PCI and virtio aliases, so the collector
        # names the driver of a device even when that driver was left out of the image.
        table = (kernel.moddir / "modules.alias").read_text(errors="replace").splitlines(keepends=True)
        aliases = "".join(a for a in table if a.startswith(("alias pci:", "alias virtio:")))
        files.append(_file("lib/rescue/kernel.alias", aliases.encode()))
    return [*files, _file("etc/rescue.conf", conf.encode())]


def initrd_entries(spec: InitrdSpec) -> list[CpioEntry]:
    if not BUSYBOX.is_file():
        raise RescueError(f"{BUSYBOX} not found", hint="install busybox-static (make deps)")
    files = [
        _file("init", (guest_dir() / "test-init.sh").read_bytes(), 0o755),
        _file("bin/busybox", BUSYBOX.read_bytes(), 0o755),
        CpioEntry(name="bin/sh", mode=stat.S_IFLNK | 0o777, data=b"busybox"),
        *klibc_entries(),
        *module_entries(spec.kernel, spec.modules, spec.leave_out),
        *(collector_entries(spec.config, spec.collector_dir, spec.kernel) if spec.collector else []),
        *(_file(name.lstrip("/"), data) for name, data in spec.files.items()),
    ]
    # The kernel opens /dev/console before /init runs, before devtmpfs is mounted: it must be in the archive.
    devices = [
        CpioEntry(name="dev/console", mode=stat.S_IFCHR | 0o600, rdevmajor=5, rdevminor=1),
        CpioEntry(name="dev/null", mode=stat.S_IFCHR | 0o666, rdevmajor=1, rdevminor=3),
    ]
    dirs = dict.fromkeys(_DIRS)
    for entry in files:
        dirs.update(dict.fromkeys(_parents(entry.name)))
    explicit = {e.name for e in files if e.is_dir}
    return [*(_dir(d) for d in dirs if d not in explicit), *devices, *files]


def build_test_initrd(spec: InitrdSpec, out: Path) -> Path:
    """Write the gzip'd newc archive for spec to out (atomically: a temp file renamed at the end)."""
    buf = io.BytesIO()
    write_newc(initrd_entries(spec), buf)
    tmp = out.with_name(out.name + ".tmp")
    # Level 1: the archive is mostly modules and busybox; better compression buys little and costs boot time.
    tmp.write_bytes(gzip.compress(buf.getvalue(), compresslevel=1, mtime=0))
    tmp.replace(out)
    return out


def root_fs_tree(target: Path, marker: str = "rescue-test: root init reached", crash: bool = False) -> Path:
    """A root filesystem tree whose /sbin/init prints marker and reboots: proof the root was mounted.
    With crash, the init crashes the kernel on purpose instead (sysrq c: a NULL dereference, then a panic)."""
    (target / "bin").mkdir(parents=True, exist_ok=True)
    (target / "sbin").mkdir(exist_ok=True)
    # systemd's switch-root moves /dev, /proc, /sys and /run onto the new root, which the initrd mounted
    # read-only, so it cannot create a missing one: without /run the switch fails (252: "Failed to mount
    # /run to /sysroot/run", 262: "Failed to resolve /sysroot//run") and systemd, still in the initrd,
    # executes the initrd's init instead (dracut 059: systemd again, the initrd in a loop).
    for d in ("dev", "proc", "sys", "run", "etc"):
        (target / d).mkdir(exist_ok=True)
    # systemd in an initrd switches only into a tree with an os-release file ("not an OS tree").
    (target / "etc" / "os-release").write_text('ID=rescue-test\nNAME="rescue test root"\n')
    shutil.copyfile(BUSYBOX, target / "bin" / "busybox")
    (target / "bin" / "busybox").chmod(0o755)
    init = target / "sbin" / "init"
    end = ""
    if crash:
        # First one message longer than a netconsole datagram (1000 bytes; the kernel escapes each byte of
        # the UTF-8 as \xNN), so a stream of this boot carries fragments.
        end = (
            "/bin/busybox mount -t proc proc /proc\n"
            f"echo '<6>{LONG_MESSAGE}' >/dev/kmsg\n"
            "echo c >/proc/sysrq-trigger\n"
        )
    init.write_text(f"#!/bin/busybox sh\necho '{marker}'\n{end}/bin/busybox reboot -f\n")
    init.chmod(0o755)
    return target

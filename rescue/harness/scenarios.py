"""The scenarios: boot the test initramfs (or a generator's image) under qemu and see what the host gets.

Used by tests/vm, `make demo` and the benchmarks. A boot always ends: the guest's /init ends with
`reboot -f` (or the kernel panics with panic=-1) and qemu -no-reboot exits. The guest says what it did in
lines starting with "rescue-test: "; the verdict is those lines plus what the listener received.
"""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rescue.deadline import Deadline
from rescue.errors import RescueError
from rescue.harness.console import Console
from rescue.harness.kernel import Kernel, host_kernel
from rescue.harness.qemu import (
    HOST_FROM_GUEST,
    Accel,
    Disk,
    VMSpec,
    boot,
    default_accel,
    kernel_cmdline,
    make_btrfs_image,
)
from rescue.harness.testinitrd import (
    DEFAULT_MODULES,
    NETCONSOLE_MODULES,
    InitrdSpec,
    build_test_initrd,
    root_fs_tree,
)

MARKER = re.compile(r"rescue-test: ([^\r\n]*)")
# The collector's last word: after it, a generator's image only sits at its shell.
COLLECTOR_START = re.compile(r"rescue: collecting evidence")
COLLECTOR_DONE = re.compile(r"rescue: (sent \d+ bytes to \S+|send failed[^\r\n]*)")
# Or the kernel's end: without panic= on the command line (initramfs-tools) a panic would hang until the
# deadline.
KERNEL_PANIC = re.compile(r"end Kernel panic - not syncing: [^\r\n]*")
COLLECTOR_LINE = re.compile(r"^rescue: ([^\r\n]*)", re.MULTILINE)
END = re.compile(r"rescue-test: end: ([^\r\n]*)")
ROOT_REACHED = "root init reached"
SHELL_PROMPT = r"\(initramfs\) "
BOOT_TIMEOUT = 120.0  # TCG on a busy 2-core machine; a normal boot takes 4-10 s

# The seed's manual recipe, as typed at the rescue shell (scenario 1).
WAIT_LINK = (
    'n=0; while [ "$(cat /sys/class/net/eth0/operstate)" != up ] && [ $n -lt 100 ]; '
    "do sleep 0.1; n=$((n+1)); done; cat /sys/class/net/eth0/operstate"
)


@dataclass
class BootResult:
    markers: list[str]  # every "rescue-test: ..." message, in order, without the prefix
    end: str | None  # the init's last word ("end: ..."), None when it never got there
    exit_status: int | None  # qemu's
    seconds: float  # from starting qemu to qemu's exit
    log_path: Path
    commands: list[tuple[str, str, int]] = field(default_factory=list)  # typed at the console: cmd, out, rc
    collector_started: float | None = None  # time.monotonic() when the collector said it starts

    @property
    def collector_lines(self) -> list[str]:
        return COLLECTOR_LINE.findall(self.log_path.read_text(errors="replace"))

    @property
    def root_reached(self) -> bool:
        return ROOT_REACHED in self.markers


def markers_in(log: str) -> list[str]:
    """The guest's messages; each is printed twice at most (kmsg and console), keep the first of a run."""
    found: list[str] = []
    for m in MARKER.finditer(log):
        text = m.group(1).strip()
        if not found or found[-1] != text:
            found.append(text)
    return found


class Harness:
    """Images and boots for the scenarios, all below one work directory (images are built once each)."""

    def __init__(
        self,
        workdir: Path,
        *,
        kernel: Kernel | None = None,
        accel: Accel | None = None,
        collector_dir: Path | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self._kernel = kernel
        self.accel = accel or default_accel()
        self.collector_dir = collector_dir
        self.cache_dir = cache_dir

    @property
    def kernel(self) -> Kernel:
        if self._kernel is None:
            self._kernel = host_kernel()
        return self._kernel

    def initrd(
        self,
        name: str,
        *,
        leave_out: Sequence[str] = (),
        collector: bool = True,
        files: dict[str, bytes] | None = None,
        modules: Sequence[str] = DEFAULT_MODULES,
    ) -> Path:
        out = self.workdir / f"{name}.img"
        if not out.exists():
            spec = InitrdSpec(
                self.kernel,
                modules=modules,
                leave_out=leave_out,
                collector=collector,
                files=files or {},
                collector_dir=self.collector_dir,
            )
            build_test_initrd(spec, out)
        return out

    def btrfs_root(self, crash: bool = False) -> Path:
        """A btrfs disk whose /sbin/init says ROOT_REACHED and reboots (with crash: crashes the kernel)."""
        name = "btrfs-root-crash" if crash else "btrfs-root"
        out = self.workdir / f"{name}.img"
        if not out.exists():
            tree = root_fs_tree(self.workdir / f"{name}-tree", crash=crash)
            make_btrfs_image(tree, out)
        return out

    def spec(
        self, initrd: Path, *cmdline: str, disks: Sequence[Path] = (), kernel: Path | None = None
    ) -> VMSpec:
        return VMSpec(
            kernel=kernel or self.kernel.vmlinuz,
            initrd=initrd,
            cmdline=kernel_cmdline(*cmdline),
            disks=[Disk(d) for d in disks],
            accel=self.accel,
        )

    def boot_to_end(self, spec: VMSpec, log_name: str, timeout: float = BOOT_TIMEOUT) -> BootResult:
        """Boot and wait, under one deadline, for qemu to exit; the markers come from the console log."""
        log_path = self.workdir / f"{log_name}.console.log"
        start = time.monotonic()
        with boot(spec, log_path=log_path) as console:
            status = console.wait_exit(timeout)
            log = console.log
        return self._result(log, status, start, log_path)

    def manual_recipe(self, port: int, log_name: str = "manual", timeout: float = BOOT_TIMEOUT) -> BootResult:
        """Scenario 1: at the "(initramfs)" prompt, type the recipe that sends dmesg to the host."""
        # No collector in this image: the machine is one without the hooks, and the admin types the recipe.
        spec = self.spec(self.initrd("plain", collector=False), "rescue.test=shell")
        log_path = self.workdir / f"{log_name}.console.log"
        start = time.monotonic()
        deadline = Deadline(timeout)
        commands: list[tuple[str, str, int]] = []

        def left() -> float:
            return max(1.0, deadline.remaining)

        with boot(spec, log_path=log_path) as console:
            console.setup_shell(SHELL_PROMPT, left())
            for cmd in (
                "dmesg > dmesg.txt",
                "ip link set eth0 up",
                WAIT_LINK,
                "ipconfig -t 10 eth0",
                f"cat dmesg.txt | nc {HOST_FROM_GUEST} {port}",
            ):
                out, rc = console.run(cmd, left())
                commands.append((cmd, out, rc))
                if rc != 0:
                    raise console.fail(f"{cmd!r} exited {rc}")
            # Leave the shell: the init then reboots, and qemu exits.
            console.sendline("exit")
            status = console.wait_exit(left())
            log = console.log
        result = self._result(log, status, start, log_path)
        result.commands = commands
        return result

    def broken_btrfs(self, port: int, log_name: str = "broken-btrfs") -> BootResult:
        """Scenario 2: btrfs root, libcrc32c left out of the image: the collector must send by itself."""
        img = self.initrd("no-libcrc32c", leave_out=["libcrc32c"])
        return self.boot_to_end(self.spec(img, *self._root_args(port), disks=[self.btrfs_root()]), log_name)

    def good_btrfs(self, port: int, log_name: str = "good-btrfs") -> BootResult:
        """Scenario 3: the same root with a complete image: it mounts, its init runs, nothing is sent."""
        img = self.initrd("full")
        return self.boot_to_end(self.spec(img, *self._root_args(port), disks=[self.btrfs_root()]), log_name)

    def missing_root(self, port: int, log_name: str = "missing-root") -> BootResult:
        """Scenario 4: root= names a disk the machine does not have."""
        img = self.initrd("full")
        return self.boot_to_end(self.spec(img, *self._root_args(port, root="/dev/vdb")), log_name)

    # --- netconsole: the kernel log streamed over UDP (hooks/collector/netconsole.sh) ----------------------

    def netconsole_crash(self, port: int, log_name: str = "netconsole-crash") -> BootResult:
        """netconsole armed in the initramfs; the root mounts and its init crashes the kernel (sysrq c)."""
        img = self.initrd("netconsole", modules=(*DEFAULT_MODULES, *NETCONSOLE_MODULES))
        args = [*self._root_args(port), "rescue.netconsole=1"]
        return self.boot_to_end(self.spec(img, *args, disks=[self.btrfs_root(crash=True)]), log_name)

    def netconsole_missing_root(self, port: int, log_name: str = "netconsole-missing-root") -> BootResult:
        """netconsole armed, then the root device never appears: the bundle and the stream of one boot."""
        img = self.initrd("netconsole", modules=(*DEFAULT_MODULES, *NETCONSOLE_MODULES))
        args = [*self._root_args(port, root="/dev/vdb"), "rescue.netconsole=1"]
        return self.boot_to_end(self.spec(img, *args), log_name)

    def send_from_guest(self, name: str, stream: bytes, port: int) -> BootResult:
        """Boot an image holding stream at /replay/stream.bin; busybox nc sends it to the host's port."""
        img = self.initrd(f"replay-{name}", collector=False, files={"replay/stream.bin": stream})
        spec = self.spec(img, "rescue.test=send", f"rescue.host={HOST_FROM_GUEST}", f"rescue.port={port}")
        return self.boot_to_end(spec, f"replay-{name}")

    # --- scenarios 5 and 6: images made by the real generators with the hooks (rescue.harness.imagebuild) ---

    def generator_kernel(self) -> tuple[str, Path]:
        """(version, vmlinuz) for the generator images, which are built from the host's /lib/modules:
        the harness's kernel when the host has its modules (the usual case), else the host's own."""
        if (Path("/lib/modules") / self.kernel.version / "modules.dep").is_file():
            return self.kernel.version, self.kernel.vmlinuz
        installed = host_kernel()
        return installed.version, installed.vmlinuz

    def generator_image(self, generator: str, drop: Sequence[str] = ("libcrc32c",)) -> Path:
        """An initramfs-tools or dracut image for generator_kernel(), hooks in, drop modules removed."""
        # Imported here: the image builders need the hooks and the generators, the other scenarios do not.
        imagebuild = importlib.import_module("rescue.harness.imagebuild")
        out = self.workdir / (f"{generator}-without-{'-'.join(drop)}.img" if drop else f"{generator}.img")
        if out.exists():
            return out
        # The port baked in is a placeholder: each boot names its listener with rescue.port= (cmdline wins).
        kw: dict[str, Any] = {"host": HOST_FROM_GUEST, "port": 3333, "drop_modules": list(drop)}
        if generator == "initramfs-tools":
            return Path(
                imagebuild.build_initramfs_tools_image(out, self.generator_kernel()[0], modules="most", **kw)
            )
        if generator == "dracut":
            return Path(imagebuild.build_dracut_image(out, self.generator_kernel()[0], **kw))
        raise RescueError(f"unknown generator {generator!r}")

    def boot_until_sent(self, spec: VMSpec, log_name: str, timeout: float = BOOT_TIMEOUT) -> BootResult:
        """Boot a generator's image until its collector has sent (or given up), then stop qemu.

        Such an image ends at its own rescue shell, not with a reboot: the collector's last line is the end.
        """
        log_path = self.workdir / f"{log_name}.console.log"
        start = time.monotonic()
        end = re.compile(f"{COLLECTOR_DONE.pattern}|{KERNEL_PANIC.pattern}")
        started = None
        with boot(spec, log_path=log_path) as console:
            match = console.wait_for(re.compile(f"{COLLECTOR_START.pattern}|{end.pattern}"), timeout)
            if match and COLLECTOR_START.fullmatch(match.group(0)):
                started = time.monotonic()  # the start of what the bench's "collector -> diagnosis" counts
                match = console.wait_for(end, max(1.0, timeout - (started - start)))
            log = console.log
        result = self._result(log, None, start, log_path)
        result.end = match.group(0) if match else None
        result.collector_started = started
        return result

    def mkinitramfs_broken_btrfs(self, port: int, log_name: str = "mkinitramfs-broken-btrfs") -> BootResult:
        """Scenario 5: a real mkinitramfs image with the hooks, without libcrc32c, on a btrfs root."""
        img = self.generator_image("initramfs-tools")
        args = kernel_cmdline(*self._root_args(port), panic=False)
        spec = replace(
            self.spec(img, disks=[self.btrfs_root()], kernel=self.generator_kernel()[1]), cmdline=args
        )
        return self.boot_until_sent(spec, log_name)

    def mkinitramfs_missing_root(
        self, port: int, log_name: str = "mkinitramfs-missing-root", netconsole: bool = False
    ) -> BootResult:
        """Scenario 5b: a complete image; root= names a missing disk (rootdelay keeps the wait short).
        With netconsole, rescue.netconsole=1 arms it from the image's init-premount script."""
        img = self.generator_image("initramfs-tools", drop=())
        extra = ["rescue.netconsole=1"] if netconsole else []
        args = kernel_cmdline(*self._root_args(port, root="/dev/vdb"), "rootdelay=1", *extra, panic=False)
        spec = replace(
            self.spec(img, disks=[self.btrfs_root()], kernel=self.generator_kernel()[1]), cmdline=args
        )
        return self.boot_until_sent(spec, log_name)

    def dracut_broken_btrfs(self, port: int, log_name: str = "dracut-broken-btrfs") -> BootResult:
        """Scenario 6: the same with a dracut image (its emergency hook runs the collector).

        dracut's systemd waits for the root device without end by default, and a btrfs device never becomes
        "ready" for systemd while btrfs.ko cannot load: rd.timeout turns that wait into the emergency path.
        """
        img = self.generator_image("dracut")
        args = kernel_cmdline(*self._root_args(port), "rd.timeout=10", panic=False)
        spec = replace(
            self.spec(img, disks=[self.btrfs_root()], kernel=self.generator_kernel()[1]), cmdline=args
        )
        return self.boot_until_sent(spec, log_name)

    @staticmethod
    def _root_args(port: int, root: str = "/dev/vda") -> list[str]:
        return [f"root={root}", "rootfstype=btrfs", f"rescue.host={HOST_FROM_GUEST}", f"rescue.port={port}"]

    @staticmethod
    def _result(log: str, status: int | None, start: float, log_path: Path) -> BootResult:
        end = END.search(log)
        return BootResult(
            markers_in(log), end.group(1).strip() if end else None, status, time.monotonic() - start, log_path
        )


__all__ = ["BootResult", "Console", "Harness", "markers_in"]

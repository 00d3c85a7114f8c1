"""The watchdog under qemu, in real generator images with the hooks: no keyboard, no command-line edits.

- initramfs-tools with panic=10 and a root that never appears because virtio_blk was left out of the image:
  panic() reboots without running scripts/panic, yet the bundle arrives by itself (the watchdog's default,
  20 s, is before initramfs-tools gives up at 30 s), and the diagnosis names virtio_blk (devices.txt).
- dracut with systemd in the initrd and no rd.timeout=: systemd waits for the root without end, yet the
  watchdog unit sends.
- dracut's shell init with its default rd.retry (180 s before it gives up): the watchdog, started from a
  cmdline hook, sends while the initqueue still waits.
- a good boot of the mkinitramfs image: nothing is sent and no watchdog process outlives the switch to the
  real root.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from rescue.harness.imagebuild import build_dracut_image
from rescue.harness.qemu import HOST_FROM_GUEST, make_btrfs_image
from rescue.harness.qemu import kernel_cmdline as cmdline
from rescue.harness.scenarios import Harness
from rescue.harness.testinitrd import root_fs_tree
from tests.conftest import Listener
from tests.vm.helpers import assert_nothing_else_arrived, assert_stored_intact, text
from tests.vm.test_recipe import need

pytestmark = [pytest.mark.vm, pytest.mark.image]

# qemu gives the VM a DMI product_uuid only when told: then machine= is that, not the MAC.
VM_UUID = "8d3c2f0e-5b6a-4c1d-9e7f-0a1b2c3d4e5f"


def send_args(listener: Listener) -> list[str]:
    return [f"rescue.host={HOST_FROM_GUEST}", f"rescue.port={listener.port}"]


def check_watchdog_bundle(listener: Listener, generator: str, systemd: bool = False) -> dict[str, Any]:
    event = listener.wait_for("capture", 60)
    man = assert_stored_intact(event)
    assert man["sha256sums"] == "verified"
    info = text(event, "info.txt").splitlines()
    assert "REASON=watchdog" in info and f"GENERATOR={generator}" in info, info
    assert "root-device-missing" in event["findings"], event
    event["analysis"] = man["analysis"]
    header = man["header"]
    # systemd in the initrd writes /etc/machine-id from qemu's uuid: the image's machine-id comes first.
    machine = VM_UUID.replace("-", "") if systemd else VM_UUID
    assert header["machine"] == machine and header["uuid"] == VM_UUID, header
    assert Path(event["path"]).parent.name == machine
    assert header["mac"] == "52:54:00:12:34:56" and header["boot"] and header["kver"], header
    # The build host's name, baked in (the initramfs itself only knows "(none)").
    baked = re.sub(r"[^A-Za-z0-9._-]", "_", Path("/etc/hostname").read_text().strip())
    assert header.get("host") == baked and baked not in ("", "(none)"), header
    assert f"rescue: boot={header['boot']} machine={machine}" in text(event, "dmesg.txt")
    return event


def test_initramfs_tools_with_panic_set_sends_by_itself(harness: Harness, listener: Listener) -> None:
    need("mkinitramfs", "initramfs-tools")
    img = harness.generator_image("initramfs-tools", drop=("virtio_blk",))
    spec = replace(
        harness.spec(img, disks=[harness.btrfs_root()], kernel=harness.generator_kernel()[1]),
        cmdline=cmdline("root=/dev/vda", "rootfstype=btrfs", "panic=10", *send_args(listener), panic=False),
        extra=("-uuid", VM_UUID),
    )
    result = harness.boot_until_sent(spec, "watchdog-mkinitramfs-panic")
    assert result.end and result.end.startswith("rescue: sent"), result.log_path
    log = result.log_path.read_text(errors="replace")
    fired = log.index("the root filesystem is not mounted after 20s")
    assert "Gave up waiting" not in log[:fired]  # it started while the boot still waited for the root
    event = check_watchdog_bundle(listener, "initramfs-tools")
    devices = text(event, "devices.txt")
    assert "modalias=virtio:d00000002v00001AF4 module=virtio_blk in_image=no" in devices, devices
    storage = next(f for f in event["analysis"]["findings"] if f["id"] == "storage-driver-missing")
    assert storage["params"]["module"] == ["virtio_blk"], storage


def dracut_root_missing(harness: Harness, listener: Listener, *, systemd: bool, after: int) -> str:
    """A dracut image with the hooks (systemd in the initrd or its shell init) booted with root=/dev/vdb
    and rescue.after=AFTER, until its collector sent; the console log."""
    need("dracut", "dracut-core")
    name = "dracut-systemd" if systemd else "dracut-shell"
    img = harness.workdir / f"{name}.img"
    kver = harness.generator_kernel()[0]
    if not img.exists():
        build_dracut_image(img, kver, host=HOST_FROM_GUEST, port=3333, systemd=systemd)
    # A generous collector timeout: under TCG on a busy machine the collector shares one slow CPU with
    # udev's coldplug.
    args = ("root=/dev/vdb", f"rescue.after={after}", "rescue.timeout=120", *send_args(listener))
    spec = replace(
        harness.spec(img, kernel=harness.generator_kernel()[1]),
        cmdline=cmdline(*args, panic=False),
        extra=("-uuid", VM_UUID),
    )
    result = harness.boot_until_sent(spec, f"watchdog-{name}", timeout=300)
    assert result.end and result.end.startswith("rescue: sent"), result.log_path
    return result.log_path.read_text(errors="replace")


def test_dracut_with_systemd_and_no_rd_timeout_sends_by_itself(harness: Harness, listener: Listener) -> None:
    # rescue.after=40 rather than the default 60 s: the same path, less CI time.
    log = dracut_root_missing(harness, listener, systemd=True, after=40)
    assert "systemd" in log and "rd.timeout" not in log.split("Kernel command line")[1].split("\n")[0]
    check_watchdog_bundle(listener, "dracut", systemd=True)


def test_dracut_shell_init_sends_before_it_gives_up(harness: Harness, listener: Listener) -> None:
    # No rd.retry, no rd.timeout: dracut's own wait (180 s); rescue.after=30 for less CI time, same path.
    log = dracut_root_missing(harness, listener, systemd=False, after=30)
    fired = log.index("the root filesystem is not mounted after 30s")
    assert "Could not boot" not in log[:fired] and "rd.retry" not in log  # dracut still waited
    assert "systemd[1]" not in log  # the shell init, not systemd
    check_watchdog_bundle(listener, "dracut")


def test_good_boot_sends_nothing_and_leaves_no_watchdog(
    harness: Harness, listener: Listener, tmp_path: Path
) -> None:
    need("mkinitramfs", "initramfs-tools")
    img = harness.generator_image("initramfs-tools", drop=())
    # A root whose init counts what is left of the watchdog (its shell and its sleep) after switch_root.
    tree = root_fs_tree(tmp_path / "tree")
    (tree / "sbin" / "init").write_text(
        "#!/bin/busybox sh\n"
        "n=$(/bin/busybox ps -o pid,args | /bin/busybox grep -c -e '[w]atchdog.sh' -e '[s]leep ')\n"
        'echo "rescue-test: watchdog processes: $n"\n'
        "echo 'rescue-test: root init reached'\n/bin/busybox reboot -f\n"
    )
    disk = make_btrfs_image(tree, tmp_path / "good-root.img")
    before = len(listener.events)
    spec = replace(
        harness.spec(img, disks=[disk], kernel=harness.generator_kernel()[1]),
        cmdline=cmdline("root=/dev/vda", "rootfstype=btrfs", *send_args(listener)),
    )
    result = harness.boot_to_end(spec, "watchdog-good-boot")
    assert result.root_reached, result.log_path
    assert "watchdog processes: 0" in result.markers, result.markers
    assert not result.collector_lines, result.collector_lines
    assert_nothing_else_arrived(listener, before)

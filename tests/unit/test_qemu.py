"""qemu argv builders: pure functions, checked without booting anything."""

from __future__ import annotations

from pathlib import Path

from rescue.harness.qemu import (
    Accel,
    Disk,
    VMSpec,
    boot_args,
    console_args,
    default_accel,
    disk_args,
    kernel_cmdline,
    machine_args,
    net_args,
    qemu_argv,
    qemu_path,
)


def test_tcg_is_the_default_and_uses_cpu_max() -> None:
    assert machine_args(Accel.TCG, 512, 1) == ["-accel", "tcg", "-cpu", "max", "-m", "512", "-smp", "1"]
    assert default_accel({}) is Accel.TCG
    assert default_accel({"RESCUE_KVM": "0"}) is Accel.TCG


def test_kvm_only_on_explicit_opt_in() -> None:
    assert default_accel({"RESCUE_KVM": "1"}) is Accel.KVM
    args = machine_args(Accel.KVM, 256, 2)
    assert args[:2] == ["-accel", "kvm"]
    assert args[-4:] == ["-m", "256", "-smp", "2"]


def test_console_is_serial_on_stdio_without_monitor_and_no_reboot() -> None:
    args = console_args()
    assert args[args.index("-serial") + 1] == "stdio"
    assert args[args.index("-monitor") + 1] == "none"
    assert "-no-reboot" in args


def test_boot_args_join_the_cmdline_into_one_argument() -> None:
    args = boot_args(
        Path("/k/vmlinuz"), Path("/i/initrd,1.img"), ["console=ttyS0", "panic=-1", "root=/dev/vda"]
    )
    assert args == ["-kernel", "/k/vmlinuz", "-initrd", "/i/initrd,,1.img", "-append",
                    "console=ttyS0 panic=-1 root=/dev/vda"]  # fmt: skip


def test_user_network_with_virtio_nic() -> None:
    assert net_args() == ["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"]
    assert net_args(False) == ["-nic", "none"]


def test_disks_are_virtio_raw_writeback_with_commas_escaped() -> None:
    assert disk_args([Disk(Path("/t/a.img")), Disk(Path("/t/b,c.img"))]) == [
        "-drive", "file=/t/a.img,if=virtio,format=raw,cache=writeback",
        "-drive", "file=/t/b,,c.img,if=virtio,format=raw,cache=writeback",
    ]  # fmt: skip
    assert qemu_path("x,y,z") == "x,,y,,z"


def test_cmdline_panics_into_a_reboot_on_the_serial_console() -> None:
    assert kernel_cmdline("root=/dev/vda") == ["console=ttyS0", "panic=-1", "root=/dev/vda"]


def test_full_argv_is_the_concatenation_in_order() -> None:
    spec = VMSpec(kernel=Path("/k"), initrd=Path("/i"), cmdline=["console=ttyS0"], disks=[Disk(Path("/d"))])
    argv = qemu_argv(spec)
    assert argv[0] == "qemu-system-x86_64"
    assert argv[1:9] == machine_args(Accel.TCG, 512, 1)
    assert argv.index("-kernel") < argv.index("-netdev") < argv.index("-drive")
    assert all(isinstance(a, str) for a in argv)


def test_cmdline_can_leave_panic_out_for_initramfs_tools() -> None:
    # initramfs-tools runs no scripts/panic hooks at all when panic= is on the command line.
    assert kernel_cmdline("root=/dev/vda", panic=False) == ["console=ttyS0", "root=/dev/vda"]


def test_guest_markers_are_read_from_the_console_log() -> None:
    from rescue.harness.scenarios import markers_in

    log = (
        "[    2.1] rescue-test: waiting for root /dev/vda\r\n"
        "rescue-test: waiting for root /dev/vda\r\n"  # the same line from kmsg and the console: kept once
        "noise rescue-test: end: root not mounted\r\n"
    )
    assert markers_in(log) == ["waiting for root /dev/vda", "end: root not mounted"]


def test_btrfs_image_from_a_directory_without_loop_devices(tmp_path: Path) -> None:
    import shutil

    from rescue.harness.qemu import make_btrfs_image
    from tests.conftest import require

    require(
        shutil.which("mkfs.btrfs", path="/sbin:/usr/sbin:/bin:/usr/bin") is not None, "btrfs-progs missing"
    )
    tree = tmp_path / "tree"
    (tree / "sbin").mkdir(parents=True)
    (tree / "sbin" / "init").write_text("#!/bin/sh\n")
    image = make_btrfs_image(tree, tmp_path / "d.img", size_mb=128)
    data = image.read_bytes()
    assert len(data) == 128 * 1024 * 1024
    assert data[0x10040:0x10048] == b"_BHRfS_M"  # the btrfs superblock magic, at 64 KiB + 0x40

"""Alarming lines of boots that went on (verbatim from tests/data/public decoys) raise no error, and the
cross-line rules (a failure cleared by a later line, support lines promoted) hold."""

from __future__ import annotations

import pytest

from rescue.diagnose.analyze import analyze_text

DECOYS = [
    # b-059: an unsigned out-of-tree module taints the kernel, and loads
    "[ 2518.680187] hello: module verification failed: "
    "signature and/or required key missing - tainting kernel",
    # b-062
    "[    2.576444] PKCS#7 signature not signed with a trusted key",
    # b-063..b-067: the btrfs banner
    "Btrfs loaded, crc32c=crc32c-intel",
    # b-084: mdadm finds nothing to assemble on a machine without arrays
    "bootstrap_1 | mdadm: No arrays found in config file or automatically",
    # b-033: ext3 and ext2 probing an ext4 root before ext4 mounts it
    "Begin: Attaching nbd0 ... "
    "EXT3-fs (nbd0): error: couldn't mount because of unsupported optional features (240)",
    # b-101: a build warning, not a boot
    "W: /sbin/fsck.xfs doesn't exist, can't install to initramfs",
    # b-088: a user-space crash of init is not a kernel oops
    "traps: init[1] general protection ip:b7677b33 sp:bfa5762c error:0 in libc-2.26.so[b752d000+1c5000]",
    # a-083: NixOS waited for its root, which then appeared
    "waiting for device /dev/rivergod/root to appear...",
    # a-099: busybox modprobe says this of a module built into the kernel, and the boot goes on
    "modprobe: module virtio_blk not found in modules.dep",
]


@pytest.mark.parametrize("line", DECOYS)
def test_alarming_lines_of_healthy_boots_raise_no_error(line: str) -> None:
    report = analyze_text(line + "\n")
    assert not [f.id for f in report.findings if f.severity == "error"], report.to_json()


def test_a_wrong_passphrase_then_the_right_one_is_no_failure() -> None:
    # a-043: dropbear unlock, a typo first
    text = (
        "cryptsetup: ERROR: crypt: cryptsetup failed, bad password or options?\n"
        "Please unlock disk crypt:\n"
        "cryptsetup: crypt: set up successfully\n"
    )
    assert [f.id for f in analyze_text(text).findings] == []


def test_unknown_block_0_0_with_an_unpacked_initramfs_is_not_initramfs_missing() -> None:
    text = (
        "[    0.5] Trying to unpack rootfs image as initramfs...\n"
        'Please append a correct "root=" boot option; here are the available partitions:\n'
        "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n"
    )
    assert [f.id for f in analyze_text(text).findings] == ["root-mount-failed"]


def test_modules_devname_alone_is_no_mismatch_but_with_a_missing_root_it_is() -> None:
    devname = "Warning: /lib/modules/4.10.8-1-ARCH/modules.devname not found - ignoring\n"
    assert analyze_text(devname).findings == []
    text = devname + "ERROR: device '/dev/sda11' not found. Skipping fsck.\n"
    ids = [(f.id, f.caused_by) for f in analyze_text(text).findings]
    assert ids == [
        ("initramfs-kernel-mismatch", None),
        ("root-device-missing", "initramfs-kernel-mismatch"),
    ]


def test_an_lv_on_a_failed_array_yields_to_the_array() -> None:
    # a-059
    text = (
        "mdadm: unexpected failure opening /dev/md0\n"
        "Gave up waiting for root file system device.\n"
        "ALERT! /dev/mapper/eldir-root does not exist. Dropping to a shell!\n"
    )
    ids = [f.id for f in analyze_text(text).findings]
    assert "raid-assembly-failed" in ids and "lvm-volume-missing" not in ids


def test_btrfs_crc32c_fix_names_the_driver_of_that_kernel_not_libcrc32c_by_reflex() -> None:
    # The >= 6.14 form (reported on 6.18): crc32c is a library there; the crypto driver is crc32c-cryptoapi.
    lines = (
        "[   12.1] BTRFS error (device vda): error allocating crc32c hash for checksum\n"
        "[   12.2] BTRFS error (device vda): open_ctree failed: -2\n"
    )
    new = analyze_text("[    0.0] Linux version 7.2.13+deb14-cloud-amd64 (gcc)\n" + lines).findings[0]
    assert new.id == "btrfs-crc32c-missing" and "crc32c_cryptoapi" in new.fix["initramfs-tools"]
    assert "libcrc32c" not in new.fix["dracut"]
    old = analyze_text("[    0.0] Linux version 6.1.0-57-cloud-amd64 (gcc)\n" + lines).findings[0]
    assert "crc32c_generic" in old.fix["initramfs-tools"]


def test_a_storage_driver_that_cannot_load_explains_the_missing_root() -> None:
    # b-046 (sd_mod without t10_pi), with the root mkinitcpio then waits for in vain (a-096)
    text = (
        "sd_mod: Unknown symbol t10_pi_type1_crc (err -2)\n"
        "ERROR: device '/dev/sda' not found. Skipping fsck.\n"
    )
    found = {f.id: f for f in analyze_text(text).findings}
    assert set(found) == {"module-unknown-symbol", "storage-driver-missing", "root-device-missing"}
    assert found["storage-driver-missing"].params["module"] == ["sd_mod"]
    assert found["storage-driver-missing"].caused_by == "module-unknown-symbol"
    assert found["root-device-missing"].caused_by == "storage-driver-missing"
    # alone, the module is the whole story (and busybox's modules.dep line needs a failed boot)
    assert [f.id for f in analyze_text(text.splitlines()[0] + "\n").findings] == ["module-unknown-symbol"]
    lone = "modprobe: module ahci not found in modules.dep\n"
    assert [f.id for f in analyze_text(lone + text.splitlines()[1] + "\n").findings] == [
        "module-missing",
        "storage-driver-missing",
        "root-device-missing",
    ]
    # a virtio disk's driver does not keep /dev/sda away
    other = "modprobe: module virtio_blk not found in modules.dep\n"
    assert "storage-driver-missing" not in {f.id for f in analyze_text(other + text.splitlines()[1]).findings}


def test_a_root_the_kernel_looks_for_after_a_failed_unpack_is_no_finding() -> None:
    # a-017: the initrd is truncated; the kernel then tries root= itself
    text = (
        "[    1.800889] RAMDISK: EOF while reading compressed data\n"
        "[    1.800892] uncompression error\n"
        '[    1.802731] VFS: Cannot open root device "(null)" or unknown-block(0,0): error -6\n'
    )
    assert [f.id for f in analyze_text(text).findings] == ["initramfs-unpack-failed"]


def test_a_damaged_root_that_mount_refuses_is_a_failed_root_mount_too() -> None:
    # a-035: Fedora CoreOS, XFS damaged on first boot
    text = (
        "[   10.650680] XFS (vda4): Corruption of in-memory data detected.  Shutting down filesystem\n"
        "[   10.679940] ignition-ostree-mount-sysroot[521]: mount: /sysroot: mount(2) system call failed: "
        "Structure needs cleaning.\n"
    )
    found = {f.id: f for f in analyze_text(text).findings}
    assert set(found) == {"fs-corrupt", "root-mount-failed"}
    assert found["root-mount-failed"].caused_by == "fs-corrupt"
    assert [e.line for e in found["root-mount-failed"].evidence] == [2]


def test_a_2_6_kernel_gets_its_crc32c_module_by_its_old_name() -> None:
    # b-001 (Debian 2.6.32): libcrc32c cannot insert while crc32c.ko is away
    text = (
        "[    0.0] Linux version 2.6.32-5-686 (Debian 2.6.32-29)\n"
        "insmod: error inserting '../lib/libcrc32c.ko': -1 Unknown symbol in module\n"
    )
    crc = analyze_text(text).findings[0]
    assert crc.id == "btrfs-crc32c-missing"
    assert "echo crc32c >>" in crc.fix["initramfs-tools"] and "crc32c_generic" not in crc.fix["dracut"]

"""rescue analyze: each rule on the real message its program prints, linking, input forms, output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rescue.cli import main as cli_main
from rescue.diagnose import findings, inputs
from rescue.diagnose.analyze import analyze_path, analyze_text
from rescue.diagnose.rules import RULES
from rescue.diagnose.rules.base import GENERATORS
from rescue.errors import RescueError
from tests.data import RECORDED_KERNEL

# Lines as the kernel (6.1 format strings), initramfs-tools 0.142, dracut 059 and busybox print them.
# Each maps to the finding it must raise and the params it must name.
RULE_CASES: list[tuple[str, str, dict[str, str]]] = [
    # kernel/module/main.c: pr_warn("%s: Unknown symbol %s (err %d)\n") -- measured on 6.1
    ("[    8.903056] btrfs: Unknown symbol crc32c (err -2)", "btrfs-crc32c-missing", {"symbol": "crc32c"}),
    (
        "<4>[    8.904253] btrfs: Unknown symbol crc32c_impl (err -2)",
        "btrfs-crc32c-missing",
        {"symbol": "crc32c_impl"},
    ),
    (
        "modprobe: can't load module libcrc32c (kernel/lib/libcrc32c.ko): No such file or directory",
        "btrfs-crc32c-missing",
        {"missing": "libcrc32c"},
    ),
    (
        "[   12.000001] ext4: Unknown symbol jbd2_journal_start (err -2)",
        "module-unknown-symbol",
        {"module": "ext4", "symbol": "jbd2_journal_start"},
    ),
    (
        "modprobe: can't load module virtio_blk (kernel/drivers/block/virtio_blk.ko): "
        "unknown symbol in module, or unknown parameter",
        "module-unknown-symbol",
        {"module": "virtio_blk"},
    ),
    # kernel/module/version.c: pr_warn("%s: disagrees about version of symbol %s\n")
    (
        "[    3.1] dm9000: disagrees about version of symbol platform_driver_register",
        "module-version-mismatch",
        {"module": "dm9000", "symbol": "platform_driver_register"},
    ),
    (
        "[    3.2] nvidia: version magic '6.1.0-55-amd64 SMP preempt mod_unload modversions ' should be "
        "'6.1.0-56-cloud-amd64 SMP preempt mod_unload modversions '",
        "module-version-mismatch",
        {"module": "nvidia"},
    ),
    # fs/filesystems.c: pr_warn_once("request_module fs-%.*s succeeded, but still no fs?\n")
    ("[    5.0] request_module fs-btrfs succeeded, but still no fs?", "fs-module-missing", {"fs": "btrfs"}),
    ("mount: /root: unknown filesystem type 'xfs'.", "fs-module-missing", {"fs": "xfs"}),
    ("Mount unknown filesystem type \u2018ext4\u2019", "fs-module-missing", {"fs": "ext4"}),  # b-076
    # drivers/base/firmware_loader/main.c
    (
        "[    4.5] Direct firmware load for amdgpu/green_sardine_dmcub.bin failed with error -2",
        "firmware-missing",
        {"firmware": "amdgpu/green_sardine_dmcub.bin"},
    ),
    # fs/btrfs/disk-io.c btrfs_init_csum_hash(): btrfs_err(... "error allocating %s hash for checksum")
    (
        "[    9.7] BTRFS error (device vda): error allocating xxhash64 hash for checksum",
        "btrfs-csum-unsupported",
        {"csum": "xxhash64", "device": "vda"},
    ),
    (
        "[    9.7] BTRFS error (device vda): error allocating crc32c hash for checksum",
        "btrfs-crc32c-missing",
        {},
    ),
    # init/initramfs.c: "Initramfs unpacking failed: %s"; init/main.c: panic("No working init found. ...") is
    # init-missing alone (with an unpacking failure, that is the finding: tests/data/analyze)
    (
        "[    1.2] Initramfs unpacking failed: ZSTD-compressed data is truncated",
        "initramfs-unpack-failed",
        {"reason": "ZSTD-compressed data is truncated"},
    ),
    (
        "[    2.0] Kernel panic - not syncing: No working init found.  Try passing init= option to kernel.",
        "init-missing",
        {},
    ),
    # do_mounts.c, the device there (a-087: ELIBBAD); util-linux mount (a-033, a-044); booster (b-009)
    (
        '> VFS: Cannot open root device "sda1" or unknown-block(8,1): error -80',
        "root-mount-failed",
        {"device": "sda1", "err": "-80"},
    ),
    (
        "[   26.240304] archlinux mount[1165]: mount: /sysroot: fsconfig system call failed: "
        "ext4: Unknown parameter 'realtime'.",
        "root-mount-failed",
        {"target": "/sysroot"},
    ),
    (
        ">   mount: /new_root: wrong fs type, bad option, bad superblock on /dev/vda2, missing codepage or "
        "helper program, or other error.",
        "root-mount-failed",
        {"device": "/dev/vda2"},
    ),
    ("mount(/dev/vdb): no such file or directory", "root-mount-failed", {"device": "/dev/vdb"}),
    # b-049: postmarketOS mkinitfs building its image
    (
        "modprobe: WARNING: Module drm_kms_helper not found in directory /lib/modules/4.6.0-rc1",
        "module-missing",
        {"module": "drm_kms_helper"},
    ),
    # init/do_mounts_rd.c (a-017, a-084)
    ("[    1.800889] RAMDISK: EOF while reading compressed data", "initramfs-unpack-failed", {}),
    (">  RAMDISK:Couldn't find valid RAM disk image starting at 0.", "initramfs-unpack-failed", {}),
    ("Initramfs failed : junk in compressed archive.", "initramfs-unpack-failed", {}),  # a-020
    # initramfs-tools scripts/local local_device_setup(): panic "ALERT!  ${dev_id} does not exist. ..."
    (
        "ALERT!  UUID=4e1f6a55-7d8c-4a8e-9a53-0d2f4d6f9b11 does not exist.  Dropping to a shell!",
        "root-device-missing",
        {"device": "UUID=4e1f6a55-7d8c-4a8e-9a53-0d2f4d6f9b11"},
    ),
    ("Gave up waiting for root file system device.  Common problems:", "root-device-missing", {}),
    # dracut-dev-lib.sh wait_for_dev(): warn "\"$1\" does not exist"; dracut-lib.sh emergency_shell
    (
        '[  190.1] dracut Warning: "/dev/disk/by-uuid/4e1f6a55" does not exist',
        "root-device-missing",
        {"device": "/dev/disk/by-uuid/4e1f6a55"},
    ),
    ("dracut Warning: Could not boot.", "root-device-missing", {}),
    # init/do_mounts.c (6.1) mount_block_root(): a device the kernel knows but cannot open
    (
        '[    2.9] VFS: Cannot open root device "sda2" or unknown-block(8,2): error -6',
        "root-device-missing",
        {"device": "sda2"},
    ),
    # ... and one it cannot even name: the kernel looked for the root itself, so no initramfs ran
    (
        '[    2.9] VFS: Cannot open root device "vda" or unknown-block(0,0): error -6',
        "initramfs-missing",
        {"device": "vda", "block": "unknown-block(0,0)"},
    ),
    # initramfs-tools scripts/local local_mount_root(); busybox mount's message
    ("Failed to mount /dev/vda as root file system.", "root-mount-failed", {"device": "/dev/vda"}),
    (
        "mount: mounting /dev/vda on /root failed: Invalid argument",
        "root-mount-failed",
        {"reason": "Invalid argument"},
    ),
    # dracut 95rootfs-block/mount-root.sh
    (
        "[   30.0] dracut Warning: Failed to mount -t btrfs -o ro /dev/vda /sysroot",
        "root-mount-failed",
        {"fs": "btrfs"},
    ),
    (
        "[    3.0] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(8,2)",
        "root-mount-failed",
        {"block": "unknown-block(8,2)"},
    ),
    # the panic alone on unknown-block(0,0), with no sign of an image (cloud-hypervisor#963, a-038)
    (
        "[    3.0] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)",
        "initramfs-missing",
        {"block": "unknown-block(0,0)"},
    ),
    (
        "modprobe: FATAL: Module virtio_blk not found in directory /lib/modules/6.1.0-56-cloud-amd64",
        "module-missing",
        {"module": "virtio_blk"},
    ),
    # Rules for the forms the public corpus (tests/data/public) shows; each line verbatim from a log there.
    (
        "modprobe: ERROR: could not insert 'zfs': Key was rejected by service",
        "module-signature-rejected",
        {"module": "zfs"},
    ),
    (
        "[    9.340472] Lockdown: systemd-modules: unsigned module loading is restricted",
        "module-signature-rejected",
        {},
    ),
    ("[    0.106881] BUG: kernel NULL pointer dereference, address: 00000020", "kernel-oops", {}),
    ("[   13.708042] Internal error: Oops: 96000005 [#1] SMP", "kernel-oops", {}),
    (
        "ERROR: Root device mounted successfully, but /sbin/init does not exist.",
        "init-missing",
        {"init": "/sbin/init"},
    ),
    (
        "run-init: can't execute '/sbin/init': No such file or directory",
        "init-missing",
        {"init": "/sbin/init"},
    ),
    (
        "panic: open /usr/lib/modules/5.9.14-arch1-1/booster.alias: no such file or directory",
        "initramfs-kernel-mismatch",
        {"kver": "5.9.14-arch1-1"},
    ),
    ("cryptsetup: cryptsetup failed, bad password or options?", "crypt-unlock-failed", {}),
    ('volume group "vg01" not found', "lvm-volume-missing", {}),
    ('Volume group "ubuntu-vg" not found', "lvm-volume-missing", {"vg": "ubuntu-vg"}),
    (
        "mdadm: /dev/md1 assembled from 1 drive - not enough to start the array",
        "raid-assembly-failed",
        {"device": "/dev/md1"},
    ),
    ("md1 : inactive sdb1[1](S)", "raid-assembly-failed", {"array": "md1"}),
    (
        "Message: cannot import 'rpool': pool may be in use from other system",
        "zfs-import-failed",
        {"pool": "rpool"},
    ),
    (
        "[   10.650680] XFS (vda4): Corruption of in-memory data detected.  Shutting down filesystem",
        "fs-corrupt",
        {"device": "vda4"},
    ),
    ("BTRFS error (device bcache0): parent transid verify failed on", "fs-corrupt", {"device": "bcache0"}),
    ("/dev/sda1: UNEXPECTED INCONSISTENCY; RUN fsck MANUALLY.", "fsck-failed", {}),
    ("[    2.144928] dracut Warning: e2fsck returned with 16", "fsck-failed", {"code": "16"}),
    ("Gave up waiting for suspend/resume device", "resume-device-missing", {}),
    # init/do_mounts.c with no initramfs: the kernel's own hint, then its panic (absorbed into the cause)
    (
        'Please append a correct "root=" boot option; here are the available partitions:\n'
        "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)",
        "initramfs-missing",
        {"block": "unknown-block(0,0)"},
    ),
    ("[    0.740641] virtio-fs: tag <root> not found", "storage-driver-missing", {"module": "virtio_pci"}),
    # module-init-tools insmod (b-001), kmod insmod (b-045), a 2.6.13 kernel without "(err %d)" (b-090)
    (
        "insmod: error inserting '../lib/libcrc32c.ko': -1 Unknown symbol in module",
        "btrfs-crc32c-missing",
        {"missing": "crc32c"},
    ),
    (
        "insmod: ERROR: could not insert module /usr/src/fl2000_drm/fl2000.ko: Unknown symbol in module",
        "module-unknown-symbol",
        {"module": "fl2000"},
    ),
    (
        "Sep 20 00:58:53 localhost kernel: crc32c: Unknown symbol crc32c_le",
        "module-unknown-symbol",
        {"module": "crc32c", "symbol": "crc32c_le"},
    ),
    # fs/ext4/super.c, fs/f2fs/super.c (b-002, a-087: crc32c; b-071: crc32)
    (
        "[   23.486479] Mobile-PC kernel: F2FS-fs (sda6): Cannot load crc32 driver.",
        "module-missing",
        {"module": "crc32"},
    ),
    ("[    1.486902] EXT4-fs (sda2): Cannot load crc32c driver.", "module-missing", {"module": "crc32c"}),
    (
        "[  192.336428] dracut-initqueue[543]: Warning: dracut-initqueue: timeout, "
        "still waiting for following initqueue hooks:",
        "root-device-missing",
        {},
    ),
    ("ERROR: device '/dev/sda11' not found. Skipping fsck.", "root-device-missing", {"device": "/dev/sda11"}),
    # booster init/main.go: errRootMountTimeout, as its manual quotes it
    ("booster: Timeout waiting for root filesystem", "root-device-missing", {}),
    (
        "[  102.917137] localhost systemd[1]: "
        "Timed out waiting for device dev-disk-by\\x2dlabel-OS_T640.device.",
        "root-device-missing",
        {},
    ),
    ("Jul 28 02:50:18 fedora-uefi systemd[1]: Failed to mount /sysroot.", "root-mount-failed", {}),
    # mkinitcpio init_functions: err "Failed to mount '$root' on real root" (the log cut it short)
    ("ERROR: Failed to mount 'UUID=0b30", "root-mount-failed", {"device": "UUID=0b30"}),
    ("    device-mapper: unknown target type: crypt", "module-missing", {"module": "crypt"}),
]


@pytest.mark.parametrize(("line", "rule_id", "params"), RULE_CASES)
def test_each_rule_fires_on_its_real_message(line: str, rule_id: str, params: dict[str, str]) -> None:
    report = analyze_text(line + "\n")
    assert [f.id for f in report.findings] == [rule_id], report.to_json()
    finding = report.findings[0]
    assert finding.evidence[0].line == 1
    for key, value in params.items():
        assert value in finding.params[key], (key, finding.params)
    assert set(finding.fix) == set(GENERATORS)  # initramfs-tools, dracut, mkinitcpio, booster
    assert all(finding.fix.values())


def test_every_rule_has_a_case() -> None:
    # softdep: the modcheck test below; devices.txt: tests/unit/test_rules_devices.py
    covered = {case[1] for case in RULE_CASES} | {"module-softdep-missing", "device-driver-missing"}
    assert covered == {r.id for r in RULES}


def test_rule_table_is_consistent() -> None:
    ids = [r.id for r in RULES]
    assert len(ids) == len(set(ids))
    graph = {r.id: {c.id for c in r.caused_by} for r in RULES}
    for rule in RULES:
        assert rule.severity in findings.SEVERITIES
        assert graph[rule.id] <= set(ids), rule.id
        for m in rule.matches:
            assert m.source in ("log", "modcheck")
            assert m.needle and m.needle in m.regex.pattern.replace("\\", ""), (rule.id, m.needle)

    def reaches(start: str, goal: str, seen: frozenset[str] = frozenset()) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph[start])

    assert not any(reaches(r, r) for r in graph), "a rule is (indirectly) its own cause"


# Logs of healthy boots are full of alarming words; none of these is a failure.
HARMLESS = """\
[    0.412000] Btrfs loaded, crc32c=crc32c-generic, zoned=yes, fsverity=yes
[    1.020000] BTRFS: device fsid 0b8e2a4e-1b5e-4f39-9a59-0c6f7f7d2b1a devid 1 transid 6 /dev/vda scanned by btrfs (180)
[    1.120000] BTRFS info (device vda): using crc32c (crc32c-generic) checksum algorithm
[    1.130000] BTRFS info (device vda): disk space caching is enabled
[    0.700000] cfg80211: Loading compiled-in X.509 certificates for regulatory database
[    0.710000] platform regulatory.0: Direct firmware load for regulatory.db failed with error -2
[    0.720000] cfg80211: failed to load regulatory.db
[    0.800000] PM: Image not found (code -22)
[    0.900000] RAS: Correctable Errors collector initialized.
[    0.950000] device-mapper: core: CONFIG_IMA_DISABLE_HTABLE is disabled. Duplicate IMA measurements will not be recorded in the IMA log.
[    1.000000] raid6: using avx2x2 recovery algorithm
[    1.300000] EXT4-fs (vda1): mounted filesystem with ordered data mode. Quota mode: none.
[    1.400000] systemd[1]: Failed to look up module alias 'autofs4': Function not implemented
WARNING: failed to open /dev/btrfs-control, skipping device registration: No such file or directory
Begin: Will now check root file system ... fsck from util-linux 2.38.1
[    1.500000] random: crng init done
[    1.600000] Unknown kernel command line parameters "BOOT_IMAGE=/vmlinuz", will be passed to user space.
[    1.700000] usbcore: registered new interface driver usbhid
[    1.800000] ACPI: PM: failed to power off
"""  # noqa: E501


def test_harmless_lines_of_a_healthy_boot_raise_nothing() -> None:
    report = analyze_text(HARMLESS)
    assert report.findings == []
    assert not report.has_errors
    assert report.headline() == "no known boot failure found"


def test_consequences_link_to_their_cause() -> None:
    log = (
        "[    8.2] raid456: Unknown symbol crc32c (err -2)\n"
        "[    8.9] btrfs: Unknown symbol crc32c (err -2)\n"
        "modprobe: can't load module btrfs (kernel/fs/btrfs/btrfs.ko): unknown symbol in module, or unknown "
        "parameter\n"
        "mount: mounting /dev/vda on /root failed: No such device\n"
        "Failed to mount /dev/vda as root file system.\n"
    )
    report = analyze_text(log)
    ids = [(f.id, f.caused_by) for f in report.findings]
    assert ids[0] == ("btrfs-crc32c-missing", None)
    assert ("root-mount-failed", "btrfs-crc32c-missing") in ids
    assert ("module-unknown-symbol", "btrfs-crc32c-missing") in ids  # raid456: the same missing libcrc32c
    assert len(report.root_causes) == 1
    assert report.headline().startswith("error: btrfs cannot load")
    # The modprobe line about btrfs is evidence of the crc32c finding, not a finding of its own.
    crc = report.findings[0]
    assert any("can't load module btrfs" in e.text for e in crc.evidence)


def test_version_mismatch_explains_its_unknown_symbol() -> None:
    log = (
        "[    3.1] dm9000: disagrees about version of symbol platform_driver_register\n"
        "[    3.1] dm9000: Unknown symbol platform_driver_register (err -22)\n"
        "[    3.2] e1000e: Unknown symbol pci_enable_msi (err -2)\n"
    )
    report = analyze_text(log)
    by_module = {(f.id, f.params["module"][0]): f.caused_by for f in report.findings}
    assert by_module[("module-unknown-symbol", "dm9000")] == "module-version-mismatch"
    assert by_module[("module-unknown-symbol", "e1000e")] is None  # unrelated: its own root cause
    assert by_module[("module-version-mismatch", "dm9000")] is None


def test_a_root_mount_failure_on_its_own_is_the_root_cause() -> None:
    report = analyze_text("Failed to mount /dev/vda as root file system.\n")
    assert [(f.id, f.caused_by) for f in report.findings] == [("root-mount-failed", None)]


def test_console_noise_is_handled() -> None:
    """Carriage returns, colours, raw levels, kernel lines in the middle of shell output."""
    log = (
        "Loading, please wait...\r\n"
        "Begin: Running /scripts/local-premount ... [    8.903056] btrfs: Unknown symbol crc32c (err -2)\r\n"
        "\x1b[0;1;31mFailed to mount /dev/vda as root file system.\x1b[0m\r\n"
        "<3>[    9.1] ext4: Unknown symbol jbd2_foo (err -2)\r\r\n"
    )
    report = analyze_text(log, "console.log")
    found = {f.id: f for f in report.findings}
    assert set(found) == {"btrfs-crc32c-missing", "root-mount-failed", "module-unknown-symbol"}
    assert found["btrfs-crc32c-missing"].evidence[0].line == 2
    assert found["btrfs-crc32c-missing"].evidence[0].text.startswith("[    8.903056] btrfs:")
    assert "\x1b" not in found["root-mount-failed"].evidence[0].text
    assert found["module-unknown-symbol"].evidence[0].line == 4
    assert report.generator == "initramfs-tools"


def test_syslog_and_journal_prefixes() -> None:
    log = "Nov 25 16:00:01 host kernel: btrfs: Unknown symbol crc32c (err -2)\n"
    assert analyze_text(log).findings[0].id == "btrfs-crc32c-missing"


MODCHECK = """\
# rescue modcheck 1
fstype btrfs source=ROOTFSTYPE
need btrfs root - loaded
need libcrc32c dep btrfs missing
need crypto-crc32c softdep btrfs builtin crc32c_generic
need xxhash64 softdep btrfs missing
crypto crc32c present driver=crc32c-generic
result fail missing=libcrc32c
"""


def _capture(tmp_path: Path, files: dict[str, str], manifest: dict[str, object] | None = None) -> Path:
    cap = tmp_path / "10.0.2.15" / "20261125T160000Z-1"
    cap.mkdir(parents=True)
    for name, text in files.items():
        (cap / name).write_text(text)
    if manifest is not None:
        (cap / "manifest.json").write_text(json.dumps(manifest))
    return cap


def test_capture_directory_uses_modcheck_and_info(tmp_path: Path) -> None:
    cap = _capture(
        tmp_path,
        {
            "modcheck.txt": MODCHECK,
            "info.txt": f"KERNEL={RECORDED_KERNEL}\nGENERATOR=dracut\nROOTFSTYPE=btrfs\n",
            "dmesg.txt": "[    8.9] btrfs: Unknown symbol crc32c (err -2)\n",
            "crypto.txt": "name         : crc32c\ndriver       : crc32c-generic\n",
        },
        {"status": "complete", "header": {"kernel": RECORDED_KERNEL}, "files": []},
    )
    report = analyze_path(cap)
    assert report.kernel == RECORDED_KERNEL
    assert report.generator == "dracut"
    crc = report.findings[0]
    assert crc.id == "btrfs-crc32c-missing"
    assert {e.file for e in crc.evidence} == {"modcheck.txt", "dmesg.txt"}
    assert (
        "libcrc32c" in crc.fix["dracut"] and f"dracut --force --kver {RECORDED_KERNEL}" in crc.fix["dracut"]
    )
    assert crc.fix["initramfs-tools"].endswith(f"update-initramfs -u -k {RECORDED_KERNEL}")
    soft = [f for f in report.findings if f.id == "module-softdep-missing"]
    assert soft and soft[0].severity == "info" and soft[0].params["module"] == ["xxhash64"]
    text = report.render()
    assert "fix (dracut)" in text and "fix (initramfs-tools)" not in text  # the generator in use only


def test_modcheck_about_ext4_does_not_blame_btrfs(tmp_path: Path) -> None:
    cap = _capture(tmp_path, {"modcheck.txt": "need ext4 root - loaded\nneed crc32c softdep ext4 missing\n"})
    ids = [f.id for f in analyze_path(cap).findings]
    assert "btrfs-crc32c-missing" not in ids
    assert ids == ["module-softdep-missing"]


def test_incomplete_capture_is_analysed_and_noted(tmp_path: Path) -> None:
    cap = _capture(
        tmp_path,
        {"dmesg.txt": "btrfs: Unknown symbol crc32c (err -2)\n"},
        {"status": "incomplete", "reason": "connection reset"},
    )
    report = analyze_path(cap)
    assert report.findings[0].id == "btrfs-crc32c-missing"
    assert any("incomplete" in n for n in report.notes)


def test_json_document_is_stable(tmp_path: Path) -> None:
    path = tmp_path / "dmesg.txt"
    path.write_text("btrfs: Unknown symbol crc32c (err -2)\nFailed to mount /dev/vda as root file system.\n")
    doc = analyze_path(path).to_json()
    assert json.loads(json.dumps(doc)) == doc
    assert set(doc) >= {"version", "source", "kernel", "generator", "findings", "counts", "has_errors"}
    assert doc["version"] == 1 and doc["has_errors"] is True
    f0 = doc["findings"][0]
    assert set(f0) >= {"id", "severity", "title", "evidence", "fix", "caused_by"}
    assert f0["evidence"][0] == {
        "file": "dmesg.txt",
        "line": 1,
        "text": "btrfs: Unknown symbol crc32c (err -2)",
    }
    assert doc["findings"][1]["caused_by"] == "btrfs-crc32c-missing"
    assert analyze_path(path).to_json() == doc  # same input, same document


def test_human_output_fits_80_columns_and_puts_the_root_cause_first(tmp_path: Path) -> None:
    path = tmp_path / "console.log"
    path.write_text(
        "Begin: Mounting root file system ... Begin: Running /scripts/local-premount ... "
        "[    8.903056] btrfs: Unknown symbol crc32c (err -2)\n"
        "mount: mounting /dev/disk/by-uuid/0b8e2a4e-1b5e-4f39-9a59-0c6f7f7d2b1a on /root failed: "
        "No such device\n"
    )
    text = analyze_path(path).render()
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), [ln for ln in lines if len(ln) > 80]
    first = next(i for i, ln in enumerate(lines) if ln.startswith("ERROR"))
    assert "btrfs" in lines[first]
    assert text.index("btrfs-crc32c-missing") < text.index("root-mount-failed")
    assert "echo libcrc32c >> /etc/initramfs-tools/modules" in text


def test_flood_of_repeats_is_capped(tmp_path: Path) -> None:
    log = "".join(f"[{i:5d}.000000] e1000e: Unknown symbol sym{i} (err -2)\n" for i in range(100))
    f = analyze_text(log).findings[0]
    assert len(f.evidence) == findings.MAX_EVIDENCE
    assert f.omitted == 100 - findings.MAX_EVIDENCE


def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RescueError, match="no such file"):
        analyze_path(tmp_path / "nope")
    binary = tmp_path / "stream.bin"
    binary.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(RescueError, match="binary"):
        analyze_path(binary)
    empty = tmp_path / "capture"
    empty.mkdir()
    with pytest.raises(RescueError, match=r"nothing|no dmesg"):
        analyze_path(empty)
    (empty / "manifest.json").write_text("{not json")
    (empty / "dmesg.txt").write_text("ok\n")
    with pytest.raises(RescueError, match="not valid JSON"):
        analyze_path(empty)
    assert cli_main(["analyze", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("btrfs: Unknown symbol crc32c (err -2)\n")
    good = tmp_path / "good.txt"
    good.write_text(HARMLESS)
    warn = tmp_path / "warn.txt"
    warn.write_text("Direct firmware load for i915/tgl_dmc_ver2_12.bin failed with error -2\n")
    assert cli_main(["analyze", str(bad)]) == 1
    assert cli_main(["analyze", str(good)]) == 0
    assert cli_main(["analyze", str(warn)]) == 0  # a warning is not an error
    capsys.readouterr()
    assert cli_main(["analyze", "--json", str(bad)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["findings"][0]["id"] == "btrfs-crc32c-missing" and doc["headline"].startswith("error:")


def test_root_fs_type_from_the_capture_decides_the_link(tmp_path: Path) -> None:
    log = "btrfs: Unknown symbol crc32c (err -2)\nFailed to mount /dev/vda as root file system.\n"
    btrfs = _capture(tmp_path / "a", {"dmesg.txt": log, "info.txt": "ROOTFSTYPE=btrfs\n"})
    assert [f.caused_by for f in analyze_path(btrfs).findings] == [None, "btrfs-crc32c-missing"]
    # An ext4 root does not fail because btrfs (used for some other disk) could not load.
    ext4 = _capture(tmp_path / "b", {"dmesg.txt": log, "info.txt": "ROOTFSTYPE=ext4\n"})
    report = analyze_path(ext4)
    assert [(f.id, f.caused_by) for f in report.findings] == [
        ("btrfs-crc32c-missing", None),
        ("root-mount-failed", None),
    ]
    assert report.findings[1].params["fs"] == ["ext4"]


def test_oversized_log_is_read_up_to_a_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inputs, "MAX_READ", 4096)
    path = tmp_path / "dmesg.txt"
    path.write_text(
        "btrfs: Unknown symbol crc32c (err -2)\n" + "x" * 10_000 + "\nmore: Unknown symbol y (err -2)\n"
    )
    report = analyze_path(path)
    assert [f.id for f in report.findings] == ["btrfs-crc32c-missing"]
    assert report.notes == ["dmesg.txt: only the first 4,096 bytes were read"]


def test_a_capture_is_read_up_to_the_same_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Many big files must not add up to many times the limit.
    monkeypatch.setattr(inputs, "MAX_READ", 4096)
    filler = "[    1.000000] usb 1-1: new device\n" * 80  # 2,800 bytes
    crc32c = "btrfs: Unknown symbol crc32c (err -2)\n"
    files = {"a.log": filler, "b.log": filler + "x", "c.log": filler + "xx", "dmesg.txt": crc32c}
    report = analyze_path(_capture(tmp_path, files))
    # Small files first: dmesg.txt is read whatever the size of the console logs.
    assert report.notes == [
        "b.log: only the first 1,258 bytes were read",
        "c.log: not read, the capture's first 4,096 bytes were",
    ]
    assert [f.id for f in report.findings] == ["btrfs-crc32c-missing"]


def test_modcheck_failing_on_the_root_checksum(tmp_path: Path) -> None:
    modcheck = (
        "# rescue modcheck 1\nfstype btrfs source=ROOTFSTYPE\nneed btrfs root - loaded\n"
        "need libcrc32c dep btrfs loaded\nneed xxhash64 softdep btrfs missing\n"
        "need blake2b-256 softdep btrfs missing\n"
        "# missing, needed only by filesystems that use them: blake2b-256\nresult fail missing=xxhash64\n"
    )
    report = analyze_path(_capture(tmp_path, {"modcheck.txt": modcheck}))
    assert [(f.id, f.severity, f.caused_by) for f in report.findings] == [
        ("btrfs-csum-unsupported", "error", None),
        ("module-softdep-missing", "info", "btrfs-csum-unsupported"),  # xxhash64: the same hole
        ("module-softdep-missing", "info", None),  # blake2b-256: optional
    ]
    assert "echo xxhash_generic >> /etc/initramfs-tools/modules" in report.findings[0].fix["initramfs-tools"]


def test_many_failing_lines_stay_readable() -> None:
    log = "".join(f"[{i:6d}.000000] mod{i % 5}: Unknown symbol sym{i} (err -2)\n" for i in range(5000))
    report = analyze_text(log)
    assert len(report.findings) == 5
    f = report.findings[0]
    assert f.title == "mod0 cannot load: unknown symbol sym0, sym5, sym10 (+47 more)"
    assert len(f.params["symbol"]) == findings.MAX_PARAMS
    assert len(f.evidence) == findings.MAX_EVIDENCE and f.omitted == 1000 - findings.MAX_EVIDENCE


def test_modcheck_saying_the_root_device_is_missing(tmp_path: Path) -> None:
    # What the collector writes when initramfs-tools gave up on ROOT=/dev/vdb (its ALERT is console-only).
    modcheck = "# rescue modcheck 1\nfstype unknown source=none\nrootdev /dev/vdb missing\nresult ok\n"
    report = analyze_path(_capture(tmp_path, {"modcheck.txt": modcheck, "info.txt": "ROOT=/dev/vdb\n"}))
    assert [f.id for f in report.findings] == ["root-device-missing"]
    assert report.findings[0].evidence[0].text == "rootdev /dev/vdb missing"
    present = "# rescue modcheck 1\nfstype btrfs source=blkid\nrootdev /dev/vda present\nresult ok\n"
    assert analyze_path(_capture(tmp_path / "ok", {"modcheck.txt": present})).findings == []


@pytest.mark.parametrize(
    ("text", "generator"),
    [
        # a-096: mkinitcpio's init
        (
            ":: Triggering uevents...\n"
            "Waiting 10 seconds for device /dev/sda ...\n"
            "ERROR: device '/dev/sda' not found. Skipping fsck.\n"
            ":: mounting 'dev/sda' on real root\n"
            "mount: /new_root: no filesystem type specified.\n",
            "mkinitcpio",
        ),
        # b-009: booster's init
        (
            "[    0.876896] booster: ioctl(0x90009427): device or resource busy\n"
            "mount(/dev/vdb): no such file or directory\n",
            "booster",
        ),
    ],
)
def test_the_generator_is_told_from_its_messages(text: str, generator: str) -> None:
    report = analyze_text(text)
    assert report.generator == generator
    assert f"fix ({generator})" in report.render()
    assert all(g == generator or f"fix ({g})" not in report.render() for g in GENERATORS)


def test_a_dependency_the_module_check_finds_missing_explains_the_unknown_symbols(tmp_path: Path) -> None:
    # The lines of the recorded 7.2 boot (tests/captures/matrix-initramfs-tools-sid-btrfs-dep-missing).
    dmesg = "[   49.105110] btrfs: Unknown symbol blake2b_final (err -2)\n"
    cap = _capture(tmp_path, {"modcheck.txt": "need libblake2b dep btrfs missing\n", "dmesg.txt": dmesg})
    first, then = analyze_path(cap).findings[:2]
    assert (first.id, first.params["module"]) == ("module-missing", ["libblake2b"])
    assert (then.id, then.caused_by) == ("module-unknown-symbol", "module-missing")


def test_a_module_missing_for_another_module_explains_nothing(tmp_path: Path) -> None:
    dmesg = "[   49.1] btrfs: Unknown symbol blake2b_final (err -2)\n"
    others = {
        "modcheck": {"modcheck.txt": "need dm_crypt dep dm_mod missing\n"},
        "log": {"console.log": "modprobe: FATAL: Module dm_crypt not found in directory /lib/modules/7.2\n"},
    }
    for name, files in others.items():  # another module's dependency; a line that names no parent
        found = analyze_path(_capture(tmp_path / name, {**files, "dmesg.txt": dmesg})).findings
        assert [f.caused_by for f in found if f.id == "module-unknown-symbol"] == [None], name

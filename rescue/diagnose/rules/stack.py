"""The layers between the disk and the root: LUKS, LVM, md RAID, ZFS, and the resume (swap) device."""

from __future__ import annotations

import re

from rescue.diagnose.rules.base import (
    Promote,
    Rule,
    clears,
    log,
    rebuild_with,
)

CRYPT_UNLOCK_FAILED = Rule(
    id="crypt-unlock-failed",
    severity="error",
    title="the encrypted root could not be unlocked",
    matches=(
        # cryptsetup-initramfs scripts/local-top/cryptroot
        log(
            "cryptsetup failed",
            r"cryptsetup: (?:ERROR: )?(?:(?P<name>[\w.-]+): )?cryptsetup failed, bad password or options",
        ),
        log("No key available with this passphrase", r"No key available with this passphrase"),
        # systemd-cryptsetup units (dracut, mkinitcpio sd-encrypt)
        log("Cryptography Setup for", r"Failed to start .*Cryptography Setup for (?P<name>[^\s.]+)"),
        log("systemd-cryptsetup@", r"Failed to start systemd-cryptsetup@(?P<unit>\S+?)\.service"),
        log("giving up", r"Too many attempts(?: to activate)?; giving up"),
        log("crypto_LUKS", r"unknown filesystem type 'crypto_LUKS'"),
        clears("set up successfully", r"cryptsetup: (?:[\w.-]+: )?set up successfully"),
    ),
    fix=rebuild_with(
        {
            "initramfs-tools": "# check the passphrase or key and /etc/crypttab;\n"
            "# the image needs cryptsetup-initramfs",
            "dracut": "# check the passphrase or key and /etc/crypttab (rd.luks.uuid=); "
            "echo 'add_dracutmodules+=\" crypt \"' >> /etc/dracut.conf.d/90-rescue.conf",
            "mkinitcpio": "# check the passphrase or key; HOOKS=(...) needs encrypt (or sd-encrypt) before "
            "filesystems in /etc/mkinitcpio.conf",
            "booster": "# check the passphrase or key; enable_luks: true in /etc/booster.yaml "
            "(booster adds it when the host's root is LUKS)",
        }
    ),
)

LVM_VOLUME_MISSING = Rule(
    id="lvm-volume-missing",
    severity="error",
    title="the LVM volume of the root was not activated",
    matches=(
        log('olume group "', r'[Vv]olume group "(?P<vg>[^"]+)" not found'),
        log('VG "', r'\bVG "(?P<vg>[^"]+)" not found'),
        log("Cannot process volume group", r"Cannot process volume group (?P<vg>\S+)", support=True),
        log("No volume groups found", r"No volume groups found", support=True),
        log("LVM2_member", r"unknown filesystem type 'LVM2_member'"),
        # the root LV, named the way device-mapper names it (VG-LV); a luks-UUID mapping is dm-crypt's
        log(
            "does not exist",
            r"ALERT!\s+(?P<device>/dev/mapper/(?!luks-)[^\s/-]+-[^\s/]+) does not exist",
        ),
        log(
            "Timed out waiting for device dev-mapper-",
            r"Timed out waiting for device dev-mapper-(?!luks)(?P<lv>\S+?)\.device",
        ),
    ),
    fix=rebuild_with(
        {
            "initramfs-tools": "# vgchange -ay from the shell shows why; the image needs lvm2:\n"
            "apt-get install lvm2",
            "dracut": "# vgchange -ay from the shell shows why; rd.lvm.lv= must name the root LV\n"
            "echo 'add_dracutmodules+=\" lvm \"' >> /etc/dracut.conf.d/90-rescue.conf",
            "mkinitcpio": "# vgchange -ay from the shell shows why; HOOKS=(...) needs lvm2 (pacman -S lvm2)",
            "booster": "# vgchange -ay from the shell shows why; enable_lvm: true in /etc/booster.yaml",
        }
    ),
    # lvm2's initramfs-tools script looks a /dev/mapper/luks-UUID root up as volume group "luks".
    ignore=re.compile(r'"luks" not found|volume group luks$'),
    promote=Promote(("root-device-missing", "root-mount-failed")),
    # An LV on a RAID or LUKS device that failed cannot appear: the layer under it is the finding.
    yields_to=("raid-assembly-failed", "crypt-unlock-failed"),
)

RAID_ASSEMBLY_FAILED = Rule(
    id="raid-assembly-failed",
    severity="error",
    title="the md RAID array of the root was not assembled",
    matches=(
        log(
            "not enough to start",
            r"mdadm ?: (?P<device>/dev/\S+?),? (?:assembled from|attached to) .*not enough to start",
        ),
        log("unexpected failure opening", r"mdadm: unexpected failure opening (?P<array>/dev/md\S+)"),
        # initramfs-tools' mdadm hook, before it asks to start degraded arrays
        log("degraded RAID devices", r"There appears to be one or more degraded RAID devices"),
        # /proc/mdstat
        log("inactive", r"^(?P<array>md\d+)\s*:\s*inactive\b"),
        log("linux_raid_member", r"unknown filesystem type 'linux_raid_member'"),
        log("kicking non-fresh", r"md: kicking non-fresh (?P<member>\S+) from array", support=True),
    ),
    fix=rebuild_with(
        {
            "initramfs-tools": "# mdadm --assemble --scan from the shell shows why; then record the arrays:\n"
            "mdadm --detail --scan >> /etc/mdadm/mdadm.conf",
            "dracut": "# mdadm --assemble --scan from the shell shows why; then record the arrays:\n"
            "mdadm --detail --scan >> /etc/mdadm.conf\n"
            "echo 'add_dracutmodules+=\" mdraid \"' >> /etc/dracut.conf.d/90-rescue.conf",
            "mkinitcpio": "# mdadm --assemble --scan from the shell shows why; HOOKS=(...) needs mdadm_udev, "
            "and mdadm --detail --scan >> /etc/mdadm.conf",
            "booster": "# mdadm --assemble --scan from the shell shows why; enable_mdraid: true in "
            "/etc/booster.yaml",
        }
    ),
)

ZFS_IMPORT_FAILED = Rule(
    id="zfs-import-failed",
    severity="error",
    title="the ZFS pool {pool} could not be imported",
    matches=(
        log("cannot import", r"cannot import '(?P<pool>[^']+)'\s?: (?P<reason>.+)"),
        log("to import pool", r"[Ff]ailed to import pool '(?P<pool>[^']+)'"),
    ),
    fix=rebuild_with(
        "# from the shell: zpool import (lists the pools and why), zpool import -f -N POOL when it was\n"
        "# not exported, or zpool import -d /dev/disk/by-id POOL; then exit. Afterwards refresh the cache:\n"
        "# zpool set cachefile=/etc/zfs/zpool.cache POOL"
    ),
    group_by=("pool",),
)

_RESUME = "# resume= names a swap that is gone: fix or remove resume= on the kernel command line"

RESUME_DEVICE_MISSING = Rule(
    id="resume-device-missing",
    severity="warning",
    title="the resume (hibernation) device never appeared",
    matches=(
        # initramfs-tools scripts/local-premount/resume
        log("suspend/resume device", r"Gave up waiting for suspend/resume device"),
        # dracut 74resume
        log("Cancelling resume operation", r"Cancelling resume operation\. Device not found"),
        log("Resume from hibernation", r"Dependency failed for .*Resume from hibernation"),
        log(
            "Timed out waiting for device dev-",
            r"Timed out waiting for device dev-(?P<device>\S*swap\S*?)\.device",
        ),
        # NixOS stage 1: a dot a second while it waits
        log("waiting for device", r"waiting for device (?P<device>\S*swap\S*) to appear\.{4,}"),
    ),
    fix=rebuild_with(
        {
            "initramfs-tools": "# resume= names a swap that is gone: fix or remove RESUME= in "
            "/etc/initramfs-tools/conf.d/resume (blkid shows the swap)",
            "dracut": _RESUME,
            "mkinitcpio": _RESUME,
            "booster": _RESUME,
        }
    ),
)

"""The root file system: the image unpacked, the device appeared, the mount worked."""

from __future__ import annotations

import re

from rescue.diagnose.rules.base import (
    Cause,
    Context,
    Promote,
    Rule,
    add_modules,
    log,
    modcheck,
    rebuild_with,
    with_rebuild,
)


def _fix_root_device(params: dict[str, list[str]], ctx: Context) -> dict[str, str]:
    check = "# compare root= (cat /proc/cmdline) with the disks found (blkid, ls /dev/disk/by-uuid)"
    hint = "# if the disk driver is missing (virtio_blk, nvme, ahci...), add it:"
    add = add_modules(["DRIVER"], ctx)  # its first line adds the module; commented: DRIVER is a guess
    return with_rebuild({g: f"{check}\n{hint}\n# {add[g].splitlines()[0].lstrip('# ')}" for g in add}, ctx)


def _fix_root_mount(params: dict[str, list[str]], ctx: Context) -> dict[str, str]:
    fs = (params.get("fs") or ["FSTYPE"])[0]
    image = f"/boot/initrd.img-{ctx.kver}" if ctx.kver else "/boot/initrd.img-KVER"
    check = (
        "# compare root=, rootfstype=, rootflags= (cat /proc/cmdline) with blkid; can the image mount it?\n"
        f"rescue check-image {image} --require {fs}"
    )
    return with_rebuild(check, ctx)


UNPACK_FAILED = Rule(
    id="initramfs-unpack-failed",
    severity="error",
    title="the kernel could not unpack the initramfs",
    matches=(
        log("Initramfs unpacking failed", r"Initramfs unpacking failed: (?P<reason>.+)"),
        # lib/decompress_*.c error(): the reason, when the poster gives it without the kernel's prefix
        log("junk in compressed archive", r"\bjunk in compressed archive"),
        # init/do_mounts_rd.c: the image is not an initramfs, and not an initrd the kernel can read either
        log("RAMDISK: EOF while reading", r"RAMDISK: EOF while reading compressed data"),
        log("valid RAM disk image", r"RAMDISK: ?Couldn't find valid RAM disk image starting at \d+"),
    ),
    fix=rebuild_with("# the image is damaged or truncated: check free space (df -h /boot), then rebuild"),
)

ROOT_DEVICE_MISSING = Rule(
    id="root-device-missing",
    severity="error",
    title="the root device never appeared",
    matches=(
        # initramfs-tools scripts/local: panic "ALERT!  ${dev_id} does not exist.  Dropping to a shell!"
        log("does not exist", r"ALERT!\s+(?P<device>\S+) does not exist\b"),
        # The collector's own check: initramfs-tools prints its ALERT on the console only.
        modcheck("rootdev", r"^rootdev (?P<device>\S+) missing$"),
        log("Gave up waiting for root", r"Gave up waiting for root (?:file system )?device"),
        log("No root device specified", r"No root device specified\. Boot arguments must include a root="),
        # dracut: "dracut Warning: ..." without systemd, "dracut-initqueue[N]: Warning: ..." with it
        log("does not exist", r'(?:dracut Warning|\bWarning): "?(?P<device>/dev/[^" ]+)"? does not exist'),
        log("Could not boot", r"(?:dracut Warning|\bWarning): Could not boot\."),
        log(
            "still waiting for following initqueue hooks",
            r"timeout, still waiting for following initqueue hooks",
        ),
        log("timeout - starting timeout scripts", r"dracut-initqueue timeout - starting timeout scripts"),
        # systemd in the initrd: the root device unit never became ready.
        log("Initrd Root Device", r"Dependency failed for .*\bInitrd Root Device\b"),
        log(
            "Timed out waiting for device",
            r"Timed out waiting for device \S+\.device(?: - (?P<device>/dev/\S+?))?\.?$",
        ),
        log("Timed out waiting for device", r"Timed out waiting for device (?P<device>/dev/\S+?)\.?$"),
        # NixOS stage 1 (waitDevice): "Timed out waiting for device $device, trying to mount anyway."
        log(
            "out waiting for device",
            r"Timed? out waiting for device (?P<device>/dev/\S+?),? trying to mount anyway",
        ),
        # NVIDIA TinyLinux's initrd: its root partition search, before "Giving up..."
        log("Partition with root filesystem not found", r"Partition with root filesystem not found"),
        # mkinitcpio init_functions: err "device '$1' not found. Skipping fsck."; older: "Unable to find root"
        log(
            "Skipping fsck",
            r"""ERROR: device ['"]?(?P<device>[^'"\s]+)['"]? not found[.,] Skipping fsck""",
        ),
        log("Unable to find root device", r"Unable to find root device '?(?P<device>[^'\s]+)"),
        # booster init
        log("Timeout waiting for root filesystem", r"Timeout waiting for root filesystem"),
        log(
            "Cannot open root device",
            r'VFS: Cannot open root device "?(?P<device>[^" ]*)"? or (?P<block>[^:]+): '
            r"error (?P<err>-?(?!(?:5|80|117)\b)\d+)",
        ),
    ),
    # Without its initramfs the kernel looks for root= itself, and fails: that is no finding of its own.
    yields_to=("initramfs-unpack-failed",),
    fix=_fix_root_device,
    # the root the boot names (ROOT=, root=) when no line says which device: storage.carries_root reads it
    from_context=("fs", "device"),
    caused_by=(
        # A btrfs device is "ready" for udev and systemd only once btrfs.ko has registered it.
        Cause("btrfs-crc32c-missing", (("fs", "fs"),)),
        Cause("initramfs-unpack-failed"),
        Cause("storage-driver-missing"),  # before the module findings that it names
        Cause("module-version-mismatch"),
        Cause("module-unknown-symbol"),
        Cause("module-missing"),
        Cause("lvm-volume-missing"),
        Cause("raid-assembly-failed"),
        Cause("crypt-unlock-failed"),
        Cause("zfs-import-failed"),
        Cause("initramfs-kernel-mismatch"),
        Cause("module-signature-rejected"),
        Cause("initramfs-missing"),
    ),
)

ROOT_MOUNT_FAILED = Rule(
    id="root-mount-failed",
    severity="error",
    title="the root file system could not be mounted",
    matches=(
        log("as root file system", r"Failed to mount (?P<device>\S+) as root file system"),
        log(
            " failed: ",
            r"mount: mounting (?P<device>\S+) on (?P<target>/root|/sysroot|/mnt-root)/? "
            r"failed: (?P<reason>.+)",
        ),
        log(
            "Failed to mount -t",
            # the device as pasted: a redacted "<uuid>" may hold a space
            r"Failed to mount -t (?P<fs>\S+) -o \S+ (?P<device>\S.*?) (?P<target>/sysroot)\b",
        ),
        log("Unable to mount root fs", r"VFS: ?Unable to mount root fs on ?(?P<block>\S+)"),
        # init/do_mounts.c: the device opened, the file system on it did not mount (EIO, ELIBBAD, EUCLEAN)
        log(
            "Cannot open root device",
            r'VFS: Cannot open root device "?(?P<device>[^" ]*)"? or (?P<block>[^:]+): '
            r"error (?P<err>-(?:5|80|117))\b",
        ),
        # util-linux mount(8) of the root by the initrd: the kernel refused the file system or its options
        log(
            "system call failed",
            r"mount: (?P<target>/sysroot|/new_root|/root)/?: (?:fsconfig|mount\(2\)) system call failed: ",
        ),
        # mount(8) with no rootfstype= and nothing (blkid) that recognised the device's file system
        log(
            "no filesystem type specified",
            r"mount: (?P<target>/sysroot|/new_root|/root)/?: no filesystem type specified",
        ),
        log(
            "wrong fs type, bad option",
            r"mount: (?P<target>/sysroot|/new_root|/root)/?: wrong fs type, bad option, bad superblock on "
            r"(?P<device>[^,\s]+)",
        ),
        # booster init: mountRootFs returns fmt.Errorf("mount(%v): %v", dev, err)
        log("mount(", r"^mount\((?P<device>/dev/[^)\s]+)\): (?P<reason>.+)"),
        # mkinitcpio init_functions: err "Failed to mount '$root' on real root"
        log("Failed to mount '", r"ERROR: Failed to mount '(?P<device>[^'\s]+)"),
        # dracut's own mount of the root (virtiofs, nfs, ...): die "...: failed to mount root fs"
        log("failed to mount root fs", r"FATAL: (?P<fs>\w+): failed to mount root fs"),
        log("No filesystem could mount root", r"No filesystem could mount root, tried:"),
        # dracut with systemd: the unit's failure is on the console, mount's own words in the journal.
        log("Failed to mount sysroot.mount", r"Failed to mount sysroot\.mount\b"),
        log("Failed to mount /sysroot", r"Failed to mount /sysroot\b"),
        log(
            "Initrd Root File System",
            r"Dependency failed for .*\bInitrd Root File System\b",
            support=True,
        ),
    ),
    # a damaged file system that mount(8) refused for the root (fs.FS_CORRUPT names the target)
    promote=Promote(("fs-corrupt",), "target", re.compile(r"/sysroot|/new_root|/root"), derive=True),
    fix=_fix_root_mount,
    from_context=("fs",),
    caused_by=(
        Cause("btrfs-crc32c-missing", (("fs", "fs"),)),
        Cause("btrfs-csum-unsupported", (("fs", "fs"),)),
        Cause("fs-module-missing", (("fs", "fs"),)),
        Cause("module-version-mismatch"),
        Cause("module-unknown-symbol"),
        Cause("module-missing"),
        Cause("fs-corrupt"),
        Cause("fsck-failed"),
        Cause("lvm-volume-missing"),
        Cause("raid-assembly-failed"),
        Cause("crypt-unlock-failed"),
        Cause("zfs-import-failed"),
        Cause("storage-driver-missing"),
        Cause("initramfs-kernel-mismatch"),
        Cause("initramfs-missing"),
        Cause("root-device-missing"),
        Cause("initramfs-unpack-failed"),
    ),
)

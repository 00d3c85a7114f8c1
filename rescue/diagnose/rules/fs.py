"""The root file system itself: damaged on disk, or its check at boot failed."""

from __future__ import annotations

from rescue.diagnose.rules.base import Rule, log, notes_only

_DEV = r"\(device (?P<device>[^)]+)\)"

FS_CORRUPT = Rule(
    id="fs-corrupt",
    severity="error",
    title="the root file system is damaged",
    matches=(
        # fs/btrfs: tree-checker, disk-io, the log replay
        log(
            "BTRFS",
            r"BTRFS (?:critical|error) " + _DEV + r": (?P<what>corrupt (?:leaf|node)|parent transid verify "
            r"failed|read time tree block corruption|bad tree block start|checksum verify failed)",
        ),
        log("superblock checksum mismatch", r"BTRFS\b[^:]*: superblock checksum mismatch"),
        log("btrfs_replay_log", r"BTRFS: error " + _DEV + r" in btrfs_replay_log"),
        # fs/xfs
        log(
            "orruption",
            r"XFS \((?P<device>[^)]+)\): (?:Metadata )?[Cc]orruption (?:of in-memory data )?detected",
        ),
        # mount(8) of the root by the initrd: root-mount-failed as well (its Promote)
        log(
            "Structure needs cleaning",
            r"mount: (?P<target>/sysroot|/new_root|/root)/?: .*Structure needs cleaning",
        ),
        log("Structure needs cleaning", r"mount(?:\(2\) system call failed|: .*): Structure needs cleaning"),
        # fs/ext4: the journal or features this kernel cannot handle read-write
        log("error loading journal", r"EXT4-fs \((?P<device>[^)]+)\): error loading journal"),
        log("Unrecognised features on journal", r"JBD2: Unrecognised features on journal"),
        log(
            "couldn't mount RDWR",
            r"EXT4-fs \((?P<device>[^)]+)\): couldn't mount RDWR because of unsupported optional features",
        ),
        log("group descriptors corrupted", r"EXT4-fs \((?P<device>[^)]+)\): group descriptors corrupted"),
    ),
    fix=notes_only(
        {
            "initramfs-tools": "# repair it from a rescue system, unmounted: fsck -f /dev/DEVICE (ext4), "
            "xfs_repair, or btrfs check (read the btrfs wiki before --repair)",
            "dracut": "# repair it from a rescue system, unmounted: fsck -f /dev/DEVICE (ext4), "
            "xfs_repair, or btrfs check (read the btrfs wiki before --repair)",
            "mkinitcpio": "# repair it from a rescue system, unmounted: fsck -f /dev/DEVICE (ext4), "
            "xfs_repair, or btrfs check (read the btrfs wiki before --repair)",
            "booster": "# repair it from a rescue system, unmounted: fsck -f /dev/DEVICE (ext4), "
            "xfs_repair, or btrfs check (read the btrfs wiki before --repair)",
        }
    ),
)

# fsck's exit code: 0 clean, 1 errors corrected; anything else stops the boot.
_FAILED_CODE = r"(?P<code>[2-9]|\d{2,})\b"

FSCK_FAILED = Rule(
    id="fsck-failed",
    severity="error",
    title="the check of the root file system failed",
    matches=(
        # e2fsck -p
        log("RUN fsck MANUALLY", r"UNEXPECTED INCONSISTENCY; RUN fsck MANUALLY"),
        # initramfs-tools scripts/functions checkfs()
        log("filesystem failed", r"File system check of the (?P<name>\S+) filesystem failed"),
        log("requires a manual fsck", r"filesystem on (?P<device>\S+) requires a manual fsck"),
        log("fsck exited with status code", r"fsck exited with status code " + _FAILED_CODE),
        # systemd-fsck
        log("fsck failed with", r"fsck failed with (?:exit status|error code) " + _FAILED_CODE),
        log("File System Check on", r"Failed to start .*File System Check on"),
        # dracut 70fs-lib fs-lib.sh: warn "$_drv returned with $_ret"
        log(
            "returned with",
            r"\b(?P<tool>e2fsck|fsck(?:\.\w+)?|xfs_repair|btrfsck|jfs_fsck) returned with " + _FAILED_CODE,
        ),
        # mkinitcpio init_functions fsck_root()
        log("fsck failed on", r"fsck failed on '(?P<device>[^']+)'"),
        log("Bailing out. Run 'fsck", r"Bailing out\. Run 'fsck (?P<device>\S+)' manually"),
        # fsck.f2fs (f2fs-tools) on a device already mounted
        log("Failed to open the device!", r"^Error: Failed to open the device!"),
    ),
    fix=notes_only(
        "# check it by hand, unmounted (from the shell or a rescue system): fsck -f /dev/DEVICE, then reboot"
    ),
)

"""The kernel and the image as a whole: a module refused for its signature, a kernel oops, no init, no
initramfs at all, an initramfs built for another kernel."""

from __future__ import annotations

import re

from rescue.diagnose.rules.base import (
    Promote,
    Rule,
    clears,
    log,
    rebuild_with,
)

_KMOD_MODPROBE = r"modprobe: ERROR: could not insert '(?P<module>[\w-]+)': "

# kernel/module/signing.c: "Loading of unsigned module is rejected" (sig_enforce); security/lockdown:
# "Lockdown: %s: %s is restricted; see man kernel_lockdown.7"; EKEYREJECTED as modprobe and insmod print it.
SIGNATURE_REJECTED = Rule(
    id="module-signature-rejected",
    severity="error",
    title="the kernel refused to load {module}: it is not signed with a trusted key",
    matches=(
        log("Key was rejected by service", _KMOD_MODPROBE + r"Key was rejected by service"),
        log(
            "Key was rejected by service",
            r"insmod: can't insert '(?:[^']*/)?(?P<module>[\w-]+)\.ko[^']*': Key was rejected by service",
        ),
        log(
            "Key was rejected by service",
            r"insmod: ERROR: could not insert module (?:\S*/)?(?P<module>[\w-]+)\.ko\S*: "
            r"Key was rejected by service",
        ),
        # systemd-modules-load: EKEYREJECTED (sig_enforce) or EPERM (lockdown).
        log(
            "Failed to insert module '",
            r"Failed to insert module '(?P<module>[\w-]+)': (?:Key was rejected by service|"
            r"Operation not permitted)",
        ),
        log(
            " is rejected",
            r"Loading of (?:unsigned module|module with unavailable key) is rejected",
        ),
        log(
            "module loading is restricted",
            r"Lockdown: (?P<by>[\w.-]+): unsigned module loading is restricted",
        ),
        log("unsigned module loading", r'lockdown_reason="unsigned module loading"'),
    ),
    fix=rebuild_with(
        "# sign the module with a key the kernel trusts (a dkms module: enroll its key with\n"
        "# mokutil --import /var/lib/dkms/mok.pub and reboot to confirm),\n"
        "# or boot without lockdown/Secure Boot"
    ),
    group_by=("module",),
)

# The oops itself, in its architectures' words (arch/*/mm/fault.c, arch/*/kernel/traps.c): never "Call
# Trace" or "end trace" alone, which warnings and hung-task reports print too.
KERNEL_OOPS = Rule(
    id="kernel-oops",
    severity="error",
    title="the kernel crashed (an oops)",
    matches=(
        log(
            "BUG: ",
            r"BUG: (?P<what>unable to handle (?:kernel|page fault)[^,]*|kernel NULL pointer dereference)",
        ),
        log(
            "Unable to handle kernel",
            r"Unable to handle kernel (?P<what>NULL pointer dereference|paging request)",
        ),
        log("kernel BUG at", r"kernel BUG at (?P<where>\S+)"),
        log("Oops", r"(?:^|Internal error: )Oops(?: - [\w ]+)?:? (?:[0-9a-f]+ )?\[#\d+\]"),
        log("general protection fault", r"general protection fault(?:,[^:]*)?: [0-9a-f]{4} \[#?\d+\]"),
        log("Fatal exception", r"Kernel panic - not syncing: Fatal exception"),
        # sysrq c (echo c >/proc/sysrq-trigger): recent kernels panic() at once, older ones oopsed first
        log("sysrq triggered crash", r"Kernel panic - not syncing: sysrq triggered crash"),
        # x86-64 before 4.x: __die() printed "RIP  [<addr>] function" (show_regs prints "RIP: ").
        log("RIP  [<", r"^RIP  \[<[0-9a-f]+>\] (?P<where>\S+)"),
        # riscv show_regs: status with SPP set (the trap came from the kernel), not a breakpoint (cause 3).
        log(
            "badaddr:",
            r"^status: [0-9a-f]*[13579bdf][0-9a-f]{2} badaddr: [0-9a-f]+ cause: (?!0*3$)[0-9a-f]+$",
        ),
    ),
    fix=rebuild_with(
        "# a kernel bug, not the image: boot the previous kernel from the boot menu, then update the kernel\n"
        "# or report the oops (with the lines above) to the distribution"
    ),
)

_INIT = "# check init= (cat /proc/cmdline) and that the root has /sbin/init"

INIT_MISSING = Rule(
    id="init-missing",
    severity="error",
    title="the root file system was mounted but has no init ({init})",
    matches=(
        # mkinitcpio init: err "Root device mounted successfully, but $init does not exist."
        log(
            "mounted successfully, but", r"Root device mounted successfully, but (?P<init>\S+) does not exist"
        ),
        # initramfs-tools init: "Target filesystem doesn't have requested ${init}." / panic "No init found."
        log("doesn't have requested", r"Target filesystem doesn't have requested (?P<init>\S+?)\.?$"),
        log("No init found", r"\bNo init found\.\s+Try passing init="),
        # init/main.c: the kernel ran the root's init itself (no initramfs /init) and found none that works
        log("No working init found", r"No working init found"),
        # klibc run-init
        log(
            "run-init: ",
            r"run-init: (?:can't execute ')?(?P<init>/[^':\s]*)'?: No such file or directory",
        ),
        # dracut 99base/init.sh
        log("Cannot find init!", r"Cannot find init!"),
    ),
    # A root that never mounted has no init either: the mount failure is the finding.
    yields_to=("root-mount-failed", "root-device-missing", "initramfs-unpack-failed"),
    fix=rebuild_with(
        {
            "initramfs-tools": _INIT + "(apt-get install --reinstall systemd-sysv)",
            "dracut": _INIT + "(reinstall systemd or the init package)",
            "mkinitcpio": _INIT + " (pacman -S systemd)",
            "booster": _INIT + " (pacman -S systemd)",
        }
    ),
)

# unknown-block(0,0): root= named no device the kernel alone can find (UUID=, LABEL=, an LV): the work of an
# initramfs; unknown-block(1,N): a RAM disk root (an initrd) that was never loaded.
NO_IMAGE_BLOCK = re.compile(r"unknown-block\((?:0,0|1,\d+)\)")

INITRAMFS_MISSING = Rule(
    id="initramfs-missing",
    severity="error",
    title="the kernel booted without an initramfs",
    matches=(
        # init/do_mounts.c, after "VFS: Cannot open root device ... or unknown-block(0,0)"
        log("Please append a correct", r'Please append a correct "root=" boot option', support=True),
        log("Can't find any bdev filesystem", r"Can't find any bdev filesystem", support=True),
        log("No filesystem could mount root", r"No filesystem could mount root, tried:\s*$", support=True),
        # init/initramfs.c: an image was there
        clears("Trying to unpack rootfs", r"Trying to unpack rootfs image as initramfs"),
        clears("Unpacking initramfs", r"Unpacking initramfs"),
        clears("Freeing initrd memory", r"Freeing initrd memory"),
        # init/do_mounts_rd.c: an initrd was given (valid or not)
        clears("RAMDISK: ", r"RAMDISK: "),
    ),
    fix=rebuild_with(
        "# the boot loader gave the kernel no initramfs: check the initrd line of the boot entry\n"
        "# (grub: update-grub / grub-mkconfig -o /boot/grub/grub.cfg; systemd-boot: the entry's initrd)"
    ),
    # The kernel mounts the root itself only when no initramfs took over: unknown-block(0,0) alone says so.
    promote=Promote(
        ("root-device-missing", "root-mount-failed"), "block", NO_IMAGE_BLOCK, absorb=True, derive=True
    ),
    # the image was there but damaged: the kernel's own root search after it is no finding
    yields_to=("initramfs-unpack-failed",),
)

_OTHER = "# the image was built for another kernel (an interrupted upgrade?): "

INITRAMFS_KERNEL_MISMATCH = Rule(
    id="initramfs-kernel-mismatch",
    severity="error",
    title="the initramfs has no modules for the kernel that booted ({kver})",
    matches=(
        # udev in mkinitcpio's image: no /lib/modules/$(uname -r) inside it
        log(
            "modules.devname not found",
            r"Warning: /lib/modules/(?P<kver>[^/\s]+)/modules\.devname not found",
            support=True,
        ),
        # booster's init: no booster.alias for the running kernel
        log("booster.alias", r"open /usr/lib/modules/(?P<kver>[^/\s]+)/booster\.alias: no such file"),
    ),
    fix=rebuild_with(
        {
            "initramfs-tools": _OTHER + "reinstall the kernel package",
            "dracut": _OTHER + "reinstall the kernel package",
            "mkinitcpio": _OTHER + "pacman -S linux (the kernel package)",
            "booster": _OTHER + "pacman -S linux (the kernel package)",
        }
    ),
    # Without modules the root device or its file system driver is missing: that shows the image failed.
    promote=Promote(("root-device-missing", "fs-module-missing")),
)

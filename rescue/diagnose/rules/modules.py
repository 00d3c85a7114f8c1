"""Kernel modules that cannot load: built for another kernel, unknown symbols, missing, the fs driver."""

from __future__ import annotations

from rescue.diagnose.rules.base import (
    Cause,
    Context,
    FixFn,
    Promote,
    Rule,
    add_modules,
    log,
    modcheck,
    with_rebuild,
)

_MODULE = r"(?P<module>[\w-]+)"
_BUSYBOX_MODPROBE = r"modprobe: can't load module (?P<module>[\w-]+) \([^)]*\): "
_KMOD_MODPROBE = r"modprobe: ERROR: could not insert '(?P<module>[\w-]+)': "


def _fix_unknown_symbol(params: dict[str, list[str]], ctx: Context) -> dict[str, str]:
    owners = [o for o in (ctx.symbol_owner(s) for s in params.get("symbol", [])) if o]
    if owners:
        return add_modules(owners, ctx)
    syms = " ".join(params.get("symbol", [])) or "SYMBOL"
    kver = ctx.kver or "$(uname -r)"
    sym = syms.split()[0]
    find = f"# find the module exporting {sym}: grep -w 'symbol:{sym}' /lib/modules/{kver}/modules.symbols"
    where = {
        "initramfs-tools": "to /etc/initramfs-tools/modules",
        "dracut": "to add_drivers in /etc/dracut.conf.d/",
        "mkinitcpio": "to MODULES=(...) in /etc/mkinitcpio.conf",
        "booster": "to modules_force_load: in /etc/booster.yaml",
    }
    return with_rebuild({g: f"{find}\n# add that module {w}" for g, w in where.items()}, ctx)


def _fix_param_modules(name: str) -> FixFn:
    def fix(params: dict[str, list[str]], ctx: Context) -> dict[str, str]:
        return add_modules(params.get(name) or ["MODULE"], ctx)

    return fix


def _fix_fs_module(params: dict[str, list[str]], ctx: Context) -> dict[str, str]:
    compressor = (params.get("compressor") or [""])[0]
    if compressor:  # a part of squashfs itself, chosen when the kernel was built: no module adds it
        return with_rebuild(
            f"# this kernel's squashfs has no {compressor} support (CONFIG_SQUASHFS_{compressor.upper()}):\n"
            "# boot a kernel built with it, or make the image with one it has (mksquashfs -comp gzip)",
            ctx,
        )
    return add_modules(params.get("fs") or ["MODULE"], ctx)


# device-mapper target -> its module
DM_TARGETS = {
    "crypt": "dm_crypt",
    "raid": "dm_raid",
    "mirror": "dm_mirror",
    "snapshot": "dm_snapshot",
    "thin-pool": "dm_thin_pool",
    "cache": "dm_cache",
    "integrity": "dm_integrity",
    "verity": "dm_verity",
    "multipath": "dm_multipath",
    "writecache": "dm_writecache",
}


def _fix_missing_modules(params: dict[str, list[str]], ctx: Context) -> dict[str, str]:
    return add_modules([DM_TARGETS.get(m, m) for m in params.get("module") or ["MODULE"]], ctx)


def _fix_version_mismatch(params: dict[str, list[str]], ctx: Context) -> dict[str, str]:
    mods = ", ".join(params.get("module", [])) or "the module"
    kver = ctx.kver or "KVER"
    why = f"# {mods}: not built for the kernel that boots; reinstall the module's package"
    dkms = f"# (a module built by dkms: dkms autoinstall -k {kver})"
    return with_rebuild(
        {
            "initramfs-tools": f"{why}\napt-get install --reinstall linux-image-{kver}\n{dkms}",
            "dracut": f"{why}\n# (for a kernel module: the kernel package for {kver})\n{dkms}",
            "mkinitcpio": f"{why}\n# (for a kernel module: pacman -S the kernel package)\n{dkms}",
            "booster": f"{why}\n# (for a kernel module: pacman -S the kernel package)\n{dkms}",
        },
        ctx,
    )


VERSION_MISMATCH = Rule(
    id="module-version-mismatch",
    severity="error",
    title="{module} was built for a different kernel",
    matches=(
        log(
            "disagrees about version of symbol",
            _MODULE + r": disagrees about version of symbol (?P<symbol>\w+)",
        ),
        log("no symbol version for", _MODULE + r": no symbol version for (?P<symbol>\w+)"),
        log("version magic", _MODULE + r": version magic '(?P<have>[^']*)' should be '(?P<want>[^']*)'"),
        log("nvalid module format", _BUSYBOX_MODPROBE + r"[Ii]nvalid module format", support=True),
        log("nvalid module format", _KMOD_MODPROBE + r"[Ii]nvalid module format", support=True),
        log(
            "nvalid module format",
            r"insmod: can't insert '(?:[^']*/)?(?P<module>[\w-]+)\.ko[^']*': [Ii]nvalid module format",
            support=True,
        ),
    ),
    fix=_fix_version_mismatch,
    group_by=("module",),
)

UNKNOWN_SYMBOL = Rule(
    id="module-unknown-symbol",
    severity="error",
    title="{module} cannot load: unknown symbol {symbol}",
    matches=(
        # kernel/module: "(err %d)" since 2.6.31, the bare symbol before (b-090)
        log("Unknown symbol", _MODULE + r": Unknown symbol (?P<symbol>\w+)(?: \(err (?P<err>-?\d+)\)|\s*$)"),
        # module-init-tools insmod (2.6 era), kmod insmod ("Error: " in its first releases)
        log(
            "Unknown symbol in module",
            r"(?:insmod: error inserting '|(?:insmod: ERROR|Error): could not insert module )"
            r"(?:[^':]*/)?(?P<module>[\w-]+)\.ko'?: (?:-1 )?Unknown symbol in module",
        ),
        log("unknown symbol in module", _BUSYBOX_MODPROBE + r"unknown symbol in module"),
        log("Unknown symbol in module", _KMOD_MODPROBE + r"Unknown symbol in module"),
        log(
            "can't insert",
            r"insmod: can't insert '(?:[^']*/)?(?P<module>[\w-]+)\.ko[^']*': unknown symbol",
        ),
    ),
    fix=_fix_unknown_symbol,
    group_by=("module",),
    caused_by=(
        Cause("module-version-mismatch", (("module", "module"),)),
        Cause("btrfs-crc32c-missing", (("module", "module"),)),
        # raid456 also needs libcrc32c: the same hole, seen from another module.
        Cause("btrfs-crc32c-missing", (("symbol", "symbol"),)),
        # The image's own check names the dependency that is not there (btrfs on 7.x: libblake2b).
        Cause("module-missing", (("module", "parent"),), known=True),
    ),
)

FS_MODULE_MISSING = Rule(
    id="fs-module-missing",
    severity="error",
    title="the kernel has no {fs} file system driver",
    matches=(
        log("but still no fs", r"request_module fs-(?P<fs>[\w.-]+) succeeded, but still no fs\?"),
        log("unknown filesystem type", r"unknown filesystem type '(?P<fs>[\w.-]+)'"),
        # fs/squashfs/decompressor.c: the image's compressor is not built into this kernel's squashfs
        log(
            "compression. This is not supported",
            r'Filesystem uses "(?P<compressor>\w+)" compression\. This is not supported',
            constants=(("fs", "squashfs"),),
        ),
        modcheck("root - missing", r"^need (?P<fs>\S+) root - missing"),
    ),
    fix=_fix_fs_module,
    group_by=("fs",),
    caused_by=(
        Cause("btrfs-crc32c-missing", (("fs", "module"),)),
        Cause("module-version-mismatch", (("fs", "module"),)),
        Cause("module-unknown-symbol", (("fs", "module"),)),
        Cause("initramfs-kernel-mismatch"),
        Cause("module-signature-rejected", (("fs", "module"),)),
    ),
)

MODULE_MISSING = Rule(
    id="module-missing",
    severity="error",
    title="{module} is needed but missing from the initramfs",
    matches=(
        modcheck(" missing", r"^need (?P<module>\S+) (?:dep|root) (?P<parent>\S+) missing"),
        # kmod modprobe: FATAL for the module asked for, WARNING with several (-a, an image build's loop)
        log(
            "not found in directory",
            r"modprobe: (?:FATAL|WARNING): Module (?P<module>[\w-]+) not found in directory",
        ),
        # busybox modprobe says this of a module built into the kernel too: only with a failed boot
        log(
            "not found in modules.dep",
            r"modprobe: module (?P<module>[\w-]+) not found in modules\.dep",
            support=True,
        ),
        # fs/ext4/super.c, fs/f2fs/super.c: the checksum driver the file system needs did not load
        log("Cannot load ", r"(?:EXT4|F2FS)-fs \([^)]*\): Cannot load (?P<module>crc32c?) driver"),
        # drivers/md/dm-table.c: a device-mapper target whose module (dm-crypt, dm-raid...) is missing
        log(
            "unknown target type", r"device-mapper: (?:table: \S+ )?unknown target type:? (?P<module>[\w-]+)"
        ),
        log("unknown target type", r"device-mapper: table: \S+ (?P<module>[\w-]+): unknown target type"),
    ),
    fix=_fix_missing_modules,
    group_by=("module",),
    promote=Promote(("root-device-missing", "root-mount-failed", "fs-module-missing", "init-missing")),
)

SOFTDEP_MISSING = Rule(
    id="module-softdep-missing",
    severity="info",
    title="{module} (a soft dependency) is not in the initramfs",
    matches=(modcheck(" missing", r"^need (?P<module>\S+) softdep (?P<parent>\S+) missing"),),
    fix=_fix_param_modules("module"),
    group_by=("module",),
    caused_by=(Cause("btrfs-csum-unsupported", (("module", "csum"),)),),
)

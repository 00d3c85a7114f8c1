"""The diagnosis rules: each one entry in RULES, with the lines it fires on, its causes and its fix.

Patterns name the failure itself ("btrfs: Unknown symbol crc32c (err -2)"), as the kernel (6.1 format
strings), initramfs-tools, dracut, busybox and the collector print it, never a bare keyword: healthy boots
print plenty of alarming-looking lines. A line is claimed by the first rule that matches it, so a specific
rule (btrfs-crc32c-missing) comes before a general one (module-unknown-symbol). A new rule is one entry.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Rules --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """One kind of line a rule fires on."""

    source: str  # "log" (kernel/console/dmesg lines) or "modcheck" (the collector's modcheck.txt)
    needle: str  # a literal every matching line contains: a cheap filter before the regex
    regex: re.Pattern[str]
    support: bool = False  # only adds evidence to a finding that other lines raised


@dataclass(frozen=True)
class Cause:
    """A finding that, when present, explains this one; `same` pairs params that must agree if both known."""

    id: str
    same: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Context:
    kver: str | None = None
    generator: str | None = None
    symbol_owner: Callable[[str], str | None] = lambda _symbol: None


FixFn = Callable[[dict[str, list[str]], Context], dict[str, str]]


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str
    title: str  # str.format over params (lists joined by ", ")
    matches: tuple[Match, ...]
    fix: FixFn
    group_by: tuple[str, ...] = ()  # params that make separate findings (one per module, ...)
    caused_by: tuple[Cause, ...] = ()
    ignore: re.Pattern[str] | None = None  # lines that look alike but are known to be harmless
    constants: tuple[tuple[str, str], ...] = ()  # params every finding of this rule has
    from_context: tuple[str, ...] = ()  # params taken from the capture when the lines do not say (fs)


def log(needle: str, pattern: str, *, support: bool = False) -> Match:
    return Match("log", needle, re.compile(pattern), support)


def modcheck(needle: str, pattern: str, *, support: bool = False) -> Match:
    return Match("modcheck", needle, re.compile(pattern), support)


# Fixes: what to run on the installed system (from a rescue system, chroot into it first).


def _rebuild(ctx: Context) -> tuple[str, str]:
    if ctx.kver:
        return f"update-initramfs -u -k {ctx.kver}", f"dracut --force --kver {ctx.kver}"
    return "update-initramfs -u -k all", "dracut --force --regenerate-all"


DRACUT_CONF = "/etc/dracut.conf.d/90-rescue.conf"


def add_modules(modules: Sequence[str], ctx: Context) -> dict[str, str]:
    modules = list(dict.fromkeys(modules))
    mods = " ".join(modules)
    it, dr = _rebuild(ctx)
    add_it = (
        f"echo {mods} >> /etc/initramfs-tools/modules"
        if len(modules) == 1
        else (f"printf '%s\\n' {mods} >> /etc/initramfs-tools/modules")
    )
    return {
        "initramfs-tools": f"{add_it}\n{it}",
        "dracut": f"echo 'add_drivers+=\" {mods} \"' >> {DRACUT_CONF}\n{dr}",
    }


def rebuild_with(note_it: str, note_dr: str) -> FixFn:
    def fix(_params: dict[str, list[str]], ctx: Context) -> dict[str, str]:
        it, dr = _rebuild(ctx)
        return {"initramfs-tools": f"{note_it}\n{it}", "dracut": f"{note_dr}\n{dr}"}

    return fix


# Which module provides a checksum driver btrfs asks the crypto API for.
CSUM_MODULES = {
    "crc32c": "crc32c_generic",
    "xxhash64": "xxhash_generic",
    "sha256": "sha256_generic",
    "blake2b-256": "blake2b_generic",
}
# Names a crc32c need shows up under (alias or module) -> the module to add.
CRC32C_MODULES = {
    "crypto-crc32c": "crc32c_generic",
    "crc32c": "crc32c_generic",
    "crc32c-generic": "crc32c_generic",
}


def _fix_crc32c(params: dict[str, list[str]], ctx: Context) -> dict[str, str]:
    mods = [CRC32C_MODULES.get(m, m) for m in params.get("missing", [])]
    for sym in params.get("symbol", []):
        mods.append(ctx.symbol_owner(sym) or "libcrc32c")
    return add_modules(mods or ["libcrc32c"], ctx)


def _fix_csum(params: dict[str, list[str]], ctx: Context) -> dict[str, str]:
    known = [CSUM_MODULES[c] for c in params.get("csum", []) if c in CSUM_MODULES]
    if known:
        return add_modules(known, ctx)
    return rebuild_with(
        "# add the crypto module for the file system's checksum (btrfs inspect-internal dump-super)",
        "# add the crypto module for the file system's checksum to add_drivers",
    )(params, ctx)


def _fix_unknown_symbol(params: dict[str, list[str]], ctx: Context) -> dict[str, str]:
    owners = [o for o in (ctx.symbol_owner(s) for s in params.get("symbol", [])) if o]
    if owners:
        return add_modules(owners, ctx)
    syms = " ".join(params.get("symbol", [])) or "SYMBOL"
    kver = ctx.kver or "$(uname -r)"
    sym = syms.split()[0]
    find = f"# find the module exporting {sym}: grep -w 'symbol:{sym}' /lib/modules/{kver}/modules.symbols"
    return rebuild_with(
        f"{find}\n# add that module to /etc/initramfs-tools/modules",
        f"{find}\n# add that module to add_drivers in /etc/dracut.conf.d/",
    )(params, ctx)


def _fix_param_modules(name: str) -> FixFn:
    def fix(params: dict[str, list[str]], ctx: Context) -> dict[str, str]:
        return add_modules(params.get(name) or ["MODULE"], ctx)

    return fix


def _fix_version_mismatch(params: dict[str, list[str]], ctx: Context) -> dict[str, str]:
    mods = ", ".join(params.get("module", [])) or "the module"
    kver = ctx.kver or "KVER"
    it, dr = _rebuild(ctx)
    why = f"# {mods}: not built for the kernel that boots; reinstall the module's package"
    dkms = f"# (a module built by dkms: dkms autoinstall -k {kver})"
    return {
        "initramfs-tools": f"{why}\napt-get install --reinstall linux-image-{kver}\n{dkms}\n{it}",
        "dracut": f"{why}\n# (for a kernel module: the kernel package for {kver})\n{dkms}\n{dr}",
    }


def _fix_root_device(params: dict[str, list[str]], ctx: Context) -> dict[str, str]:
    check = "# compare root= (cat /proc/cmdline) with the disks found (blkid, ls /dev/disk/by-uuid)"
    it, dr = _rebuild(ctx)
    return {
        "initramfs-tools": f"{check}\n# if the disk driver is missing (virtio_blk, nvme, ahci...), add it:\n"
        f"# echo DRIVER >> /etc/initramfs-tools/modules\n{it}",
        "dracut": f"{check}\n# if the disk driver is missing (virtio_blk, nvme, ahci...), add it:\n"
        f"# echo 'add_drivers+=\" DRIVER \"' >> {DRACUT_CONF}\n{dr}",
    }


def _fix_root_mount(params: dict[str, list[str]], ctx: Context) -> dict[str, str]:
    fs = (params.get("fs") or ["FSTYPE"])[0]
    image = f"/boot/initrd.img-{ctx.kver}" if ctx.kver else "/boot/initrd.img-KVER"
    check = (
        "# compare root=, rootfstype=, rootflags= (cat /proc/cmdline) with blkid; can the image mount it?\n"
        f"rescue check-image {image} --require {fs}"
    )
    return rebuild_with(check, check)(params, ctx)


def _fix_firmware(params: dict[str, list[str]], ctx: Context) -> dict[str, str]:
    files = " ".join(f"/lib/firmware/{f}" for f in params.get("firmware", []))
    it, dr = _rebuild(ctx)
    return {
        "initramfs-tools": f"# install the package that ships {files} (apt-file search)\n{it}",
        "dracut": f"echo 'install_items+=\" {files} \"' >> {DRACUT_CONF}\n{dr}",
    }


_MODULE = r"(?P<module>[\w-]+)"
_BUSYBOX_MODPROBE = r"modprobe: can't load module (?P<module>[\w-]+) \([^)]*\): "
_KMOD_MODPROBE = r"modprobe: ERROR: could not insert '(?P<module>[\w-]+)': "

RULES: tuple[Rule, ...] = (
    Rule(
        id="btrfs-crc32c-missing",
        severity="error",
        title="btrfs cannot load: crc32c (libcrc32c) is missing from the initramfs",
        matches=(
            log("Unknown symbol", r"\bbtrfs: Unknown symbol (?P<symbol>crc32c\w*) \(err -?\d+\)"),
            log("Unknown symbol", r"\blibcrc32c: Unknown symbol (?P<symbol>\w+) \(err -?\d+\)"),
            log(
                "hash for checksum",
                r"BTRFS error \(device [^)]*\): error allocating crc32c\S* hash for checksum",
            ),
            log(
                "libcrc32c",
                r"(?:modprobe|insmod): (?:can't load module |can't insert '?|ERROR: could not insert '"
                r"|FATAL: Module )(?P<missing>libcrc32c)\b",
            ),
            modcheck(
                " missing", r"^need (?P<missing>\S*crc32c\S*) (?:dep|softdep) (?:btrfs|libcrc32c) missing"
            ),
            modcheck("crypto crc32c", r"^crypto crc32c absent", support=True),
            log(
                "can't load module btrfs",
                r"modprobe: can't load module btrfs \([^)]*\): unknown symbol",
                support=True,
            ),
            log(
                "can't insert", r"insmod: can't insert '[^']*\bbtrfs\.ko[^']*': unknown symbol", support=True
            ),
            log(
                "could not insert 'btrfs'",
                r"modprobe: ERROR: could not insert 'btrfs': Unknown symbol",
                support=True,
            ),
        ),
        fix=_fix_crc32c,
        constants=(("module", "btrfs"), ("fs", "btrfs")),
    ),
    Rule(
        id="btrfs-csum-unsupported",
        severity="error",
        title="btrfs cannot mount: no {csum} checksum driver in the initramfs",
        matches=(
            log(
                "hash for checksum",
                r"BTRFS error \(device (?P<device>[^)]*)\): error allocating (?P<csum>\S+) hash for checksum",
            ),
            log(
                "unsupported checksum algorithm",
                r"BTRFS error \(device (?P<device>[^)]*)\): unsupported checksum algorithm:? (?P<csum>\S+)",
            ),
            log("open_ctree failed", r"BTRFS error \(device [^)]*\): open_ctree failed", support=True),
            # The collector fails the check only for the checksum the root file system uses (its superblock).
            modcheck(
                "result fail missing=",
                r"^result fail missing=(?:\S+,)?(?P<csum>xxhash64|sha256|blake2b-256)\b",
            ),
        ),
        fix=_fix_csum,
        constants=(("fs", "btrfs"),),
    ),
    Rule(
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
    ),
    Rule(
        id="module-unknown-symbol",
        severity="error",
        title="{module} cannot load: unknown symbol {symbol}",
        matches=(
            log("Unknown symbol", _MODULE + r": Unknown symbol (?P<symbol>\w+) \(err (?P<err>-?\d+)\)"),
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
        ),
    ),
    Rule(
        id="fs-module-missing",
        severity="error",
        title="the kernel has no {fs} file system driver",
        matches=(
            log("but still no fs", r"request_module fs-(?P<fs>[\w.-]+) succeeded, but still no fs\?"),
            log("unknown filesystem type", r"unknown filesystem type '(?P<fs>[\w.-]+)'"),
            modcheck("root - missing", r"^need (?P<fs>\S+) root - missing"),
        ),
        fix=_fix_param_modules("fs"),
        group_by=("fs",),
        caused_by=(
            Cause("btrfs-crc32c-missing", (("fs", "module"),)),
            Cause("module-version-mismatch", (("fs", "module"),)),
            Cause("module-unknown-symbol", (("fs", "module"),)),
        ),
    ),
    Rule(
        id="initramfs-unpack-failed",
        severity="error",
        title="the kernel could not unpack the initramfs",
        matches=(
            log("Initramfs unpacking failed", r"Initramfs unpacking failed: (?P<reason>.+)"),
            log("No working init found", r"No working init found"),
        ),
        fix=rebuild_with(
            "# the image is damaged or truncated: check free space (df -h /boot), then rebuild",
            "# the image is damaged or truncated: check free space (df -h /boot), then rebuild",
        ),
    ),
    Rule(
        id="root-device-missing",
        severity="error",
        title="the root device never appeared",
        matches=(
            log("does not exist", r"ALERT!\s+(?P<device>\S+) does not exist\.\s+Dropping to a shell!"),
            # The collector's own check: initramfs-tools prints its ALERT on the console only.
            modcheck("rootdev", r"^rootdev (?P<device>\S+) missing$"),
            log("Gave up waiting for root", r"Gave up waiting for root (?:file system )?device"),
            log("does not exist", r'dracut Warning: "?(?P<device>/dev/[^" ]+)"? does not exist'),
            log("Could not boot", r"dracut Warning: Could not boot\."),
            # dracut with systemd: the root device unit never became ready.
            log("Initrd Root Device", r"Dependency failed for .*\bInitrd Root Device\b"),
            log(
                "Timed out waiting for device",
                r"Timed out waiting for device \S+\.device(?: - (?P<device>/dev/\S+?))?\.?$",
                support=True,
            ),
            log(
                "Cannot open root device",
                r'VFS: Cannot open root device "?(?P<device>[^" ]*)"? or (?P<block>[^:]+): '
                r"error (?P<err>-?\d+)",
            ),
        ),
        fix=_fix_root_device,
        from_context=("fs",),
        caused_by=(
            # A btrfs device is "ready" for udev and systemd only once btrfs.ko has registered it.
            Cause("btrfs-crc32c-missing", (("fs", "fs"),)),
            Cause("initramfs-unpack-failed"),
            Cause("module-version-mismatch"),
            Cause("module-unknown-symbol"),
            Cause("module-missing"),
        ),
    ),
    Rule(
        id="root-mount-failed",
        severity="error",
        title="the root file system could not be mounted",
        matches=(
            log("as root file system", r"Failed to mount (?P<device>\S+) as root file system"),
            log(
                " failed: ",
                r"mount: mounting (?P<device>\S+) on (?P<target>/root|/sysroot) failed: (?P<reason>.+)",
            ),
            log(
                "Failed to mount -t",
                r"Failed to mount -t (?P<fs>\S+) -o \S+ (?P<device>\S+) (?P<target>/sysroot)",
            ),
            log("Unable to mount root fs", r"VFS: Unable to mount root fs on (?P<block>\S+)"),
            log("No filesystem could mount root", r"No filesystem could mount root, tried:"),
            # dracut with systemd: the unit's failure is on the console, mount's own words in the journal.
            log("Failed to mount sysroot.mount", r"Failed to mount sysroot\.mount\b"),
            log(
                "Initrd Root File System",
                r"Dependency failed for .*\bInitrd Root File System\b",
                support=True,
            ),
        ),
        fix=_fix_root_mount,
        from_context=("fs",),
        caused_by=(
            Cause("btrfs-crc32c-missing", (("fs", "fs"),)),
            Cause("btrfs-csum-unsupported", (("fs", "fs"),)),
            Cause("fs-module-missing", (("fs", "fs"),)),
            Cause("module-version-mismatch"),
            Cause("module-unknown-symbol"),
            Cause("module-missing"),
            Cause("root-device-missing"),
            Cause("initramfs-unpack-failed"),
        ),
    ),
    Rule(
        id="module-missing",
        severity="error",
        title="{module} is needed but missing from the initramfs",
        matches=(
            modcheck(" missing", r"^need (?P<module>\S+) (?:dep|root) (?P<parent>\S+) missing"),
            log(
                "not found in directory", r"modprobe: FATAL: Module (?P<module>[\w-]+) not found in directory"
            ),
            log("not found in modules.dep", r"modprobe: module (?P<module>[\w-]+) not found in modules\.dep"),
        ),
        fix=_fix_param_modules("module"),
        group_by=("module",),
    ),
    Rule(
        id="module-softdep-missing",
        severity="info",
        title="{module} (a soft dependency) is not in the initramfs",
        matches=(modcheck(" missing", r"^need (?P<module>\S+) softdep (?P<parent>\S+) missing"),),
        fix=_fix_param_modules("module"),
        group_by=("module",),
        caused_by=(Cause("btrfs-csum-unsupported", (("module", "csum"),)),),
    ),
    Rule(
        id="firmware-missing",
        severity="warning",
        title="firmware {firmware} was not found",
        matches=(
            log(
                "Direct firmware load for",
                r"Direct firmware load for (?P<firmware>\S+) failed with error (?P<err>-?\d+)",
            ),
        ),
        fix=_fix_firmware,
        group_by=("firmware",),
        # cfg80211 falls back to its built-in rules when regulatory.db is absent.
        ignore=re.compile(r"\bregulatory\.db"),
    ),
)

RULE_IDS = tuple(r.id for r in RULES)
RULES_BY_ID = {r.id: r for r in RULES}
RULE_ORDER = {r.id: i for i, r in enumerate(RULES)}

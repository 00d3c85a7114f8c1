"""Diagnose a failed boot: rules over kernel logs, console output and the collector's files.

Each rule is one entry in RULES: a stable id, a severity, the lines it fires on (kernel, initramfs-tools,
dracut and collector messages, as those programs print them), which other findings can cause it, and a fix
for initramfs-tools and for dracut. Patterns name the failure itself ("btrfs: Unknown symbol crc32c
(err -2)"), never a bare keyword, because healthy boots print plenty of alarming-looking lines.

A line is claimed by the first rule that matches it, so a specific rule (btrfs-crc32c-missing) placed
before a general one (module-unknown-symbol) takes its lines. A finding whose cause was also found is
reported as that cause's consequence (caused_by), not as a second root cause.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rescue.errors import RescueError

SEVERITIES = ("error", "warning", "info")
GENERATORS = ("initramfs-tools", "dracut")
MAX_EVIDENCE = 12  # per finding; a flood of identical lines proves nothing more
REPORT_VERSION = 1


# Data model ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    file: str
    line: int  # 1-based line number in that file
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "text": self.text}


@dataclass
class Finding:
    id: str
    severity: str
    title: str
    evidence: list[Evidence] = field(default_factory=list)
    fix: dict[str, str] = field(default_factory=dict)
    caused_by: str | None = None
    params: dict[str, list[str]] = field(default_factory=dict)  # what the evidence named: module, symbol...
    omitted: int = 0  # evidence lines beyond MAX_EVIDENCE

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "severity": self.severity,
            "title": self.title,
            "evidence": [e.to_json() for e in self.evidence],
            "evidence_omitted": self.omitted,
            "fix": dict(self.fix),
            "caused_by": self.caused_by,
            "params": {k: list(v) for k, v in sorted(self.params.items())},
        }


@dataclass
class Report:
    source: str
    findings: list[Finding]  # root causes first, each followed by its consequences
    kernel: str | None = None
    generator: str | None = None
    lines: int = 0  # lines read from logs
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tool: str = "analyze"
    extra: dict[str, Any] = field(default_factory=dict)  # tool-specific details (check-image: image, closure)

    @property
    def has_errors(self) -> bool:
        return any(f.severity == "error" for f in self.findings)

    @property
    def root_causes(self) -> list[Finding]:
        return [f for f in self.findings if f.caused_by is None]

    def headline(self) -> str:
        """One line: the first root cause, or that nothing worse than notes was found."""
        roots = [f for f in self.root_causes if f.severity != "info"]
        if not roots:
            nothing = "no known boot failure found" if self.tool == "analyze" else "no problem found"
            notes = len(self.findings)
            return nothing + (f" ({notes} note{'s' if notes != 1 else ''})" if notes else "")
        first = roots[0]
        more = len(self.findings) - 1
        tail = f" (+{more} related finding{'s' if more != 1 else ''})" if more else ""
        return f"{first.severity}: {first.title} [{first.id}]{tail}"

    def to_json(self) -> dict[str, Any]:
        counts = {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES}
        return {
            "version": REPORT_VERSION,
            "tool": self.tool,
            "source": self.source,
            "kernel": self.kernel,
            "generator": self.generator,
            "files": list(self.files),
            "lines": self.lines,
            "notes": list(self.notes),
            "counts": counts,
            "has_errors": self.has_errors,
            "findings": [f.to_json() for f in self.findings],
            **self.extra,
        }

    def render(self, width: int = 80) -> str:
        return "\n".join(_render(self, width)) + "\n"


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
    note = (
        f"# {mods} was built for another kernel: reinstall it for {kver}\n"
        f"# (apt-get install --reinstall linux-image-{kver}, or dkms autoinstall -k {kver})"
    )
    return rebuild_with(note, note)(params, ctx)


def _fix_root_device(params: dict[str, list[str]], ctx: Context) -> dict[str, str]:
    check = "# compare root= (cat /proc/cmdline) with the disks found (blkid, ls /dev/disk/by-uuid)"
    it, dr = _rebuild(ctx)
    return {
        "initramfs-tools": f"{check}\n# if the disk driver is missing (virtio_blk, nvme, ahci...), add it:\n"
        f"# echo DRIVER >> /etc/initramfs-tools/modules\n{it}",
        "dracut": f"{check}\n# if the disk driver is missing (virtio_blk, nvme, ahci...), add it:\n"
        f"# echo 'add_drivers+=\" DRIVER \"' >> {DRACUT_CONF}\n{dr}",
    }


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
        ),
        fix=_fix_csum,
        constants=(("fs", "btrfs"),),
    ),
    Rule(
        id="module-version-mismatch",
        severity="error",
        title="{module} was built for a different kernel (symbol versions disagree)",
        matches=(
            log(
                "disagrees about version of symbol",
                _MODULE + r": disagrees about version of symbol (?P<symbol>\w+)",
            ),
            log("no symbol version for", _MODULE + r": no symbol version for (?P<symbol>\w+)"),
            log("version magic", _MODULE + r": version magic '(?P<have>[^']*)' should be '(?P<want>[^']*)'"),
            log("nvalid module format", _BUSYBOX_MODPROBE + r"[Ii]nvalid module format", support=True),
            log("nvalid module format", _KMOD_MODPROBE + r"[Ii]nvalid module format", support=True),
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
            log("Gave up waiting for root", r"Gave up waiting for root (?:file system )?device"),
            log("does not exist", r'dracut Warning: "?(?P<device>/dev/[^" ]+)"? does not exist'),
            log("Could not boot", r"dracut Warning: Could not boot\."),
            log(
                "Cannot open root device",
                r'VFS: Cannot open root device "?(?P<device>[^" ]*)"? or (?P<block>[^:]+): '
                r"error (?P<err>-?\d+)",
            ),
        ),
        fix=_fix_root_device,
        caused_by=(
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
        ),
        fix=rebuild_with(
            "# check root=, rootfstype= and rootflags= on the kernel command line against blkid,\n"
            "# and that the file system's module is in the image (rescue check-image)",
            "# check root=, rootfstype= and rootflags= against blkid; rescue check-image the image",
        ),
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
_RULES_BY_ID = {r.id: r for r in RULES}
_ORDER = {r.id: i for i, r in enumerate(RULES)}


# Reading logs -------------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]")
# <N> (dmesg -r, /dev/kmsg writers), [ 1.234567] (printk time), [T123] (printk caller), syslog/journal
# prefixes ("Nov 25 16:00:00 host kernel: "), dmesg -T ("[Wed Nov 25 16:00:00 2026] ").
_PREFIX = re.compile(
    r"^(?:<\d{1,3}>)?"
    r"(?:\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ [\w.\-/]+(?:\[\d+\])?: )?"
    r"(?:\[\s*\d+\.\d+\]\s?|\[\w{3} \w{3} [ \d]\d [\d:]{8} \d{4}\]\s?)?"
    r"(?:\[\s*[TC]\d+\]\s?)?"
)
# Console output interleaves kernel lines with shell output mid-line: split before each printk time.
_MIDLINE_TIME = re.compile(r"(?<=\S)\s*(?=(?:<\d{1,3}>)?\[\s*\d+\.\d{6}\])")


@dataclass(frozen=True)
class Line:
    file: str
    number: int
    text: str  # as shown (ANSI and carriage returns removed)
    message: str  # with level, time and syslog prefixes removed


def clean(raw: str) -> str:
    # A carriage return inside a line redraws it: the terminal shows the last non-empty part.
    if "\r" in raw:
        parts = [p for p in raw.split("\r") if p.strip()]
        raw = " ".join(parts)
    if "\x1b" in raw:
        raw = _ANSI.sub("", raw)
    return raw.strip()


def messages(text: str) -> list[tuple[str, str]]:
    """The messages in one cleaned line (console output may carry several): (as shown, without prefixes)."""
    pieces = _MIDLINE_TIME.split(text) if "]" in text else [text]
    return [(p.strip(), _PREFIX.sub("", p.strip(), count=1)) for p in pieces if p.strip()]


def is_text(data: bytes) -> bool:
    head = data[:65536]
    if not head:
        return True
    if head.count(0) > len(head) // 100:
        return False
    bad = head.decode("utf-8", errors="replace").count("\ufffd")
    return bad <= len(head) // 20


# Inputs -------------------------------------------------------------------------------------------

# Collector bundle files (CONTRACTS.md §2) that are not logs; anything else that is text is read as a log.
_NOT_LOGS = {
    "cmdline.txt",
    "modules.txt",
    "crypto.txt",
    "filesystems.txt",
    "partitions.txt",
    "mounts.txt",
    "blkid.txt",
    "disks.txt",
    "info.txt",
    "initramfs-modules.txt",
    "modules-dep.txt",
    "network.txt",
    "modcheck.txt",
    "SHA256SUMS",
    "manifest.json",
}


@dataclass
class Inputs:
    source: str
    logs: dict[str, str] = field(default_factory=dict)  # file name -> text
    modcheck: dict[str, str] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)
    header: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[str]:
        return sorted({*self.logs, *self.modcheck})


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise RescueError(f"{path}: {e.strerror or e}") from None


def load_inputs(path: Path) -> Inputs:
    if path.is_dir():
        return _load_capture(path)
    if not path.exists():
        raise RescueError(f"{path}: no such file or directory")
    data = _read(path)
    if not is_text(data):
        raise RescueError(
            f"{path}: not a text log (binary data)",
            hint="give a dmesg file, a console log or a capture directory",
        )
    text = data.decode("utf-8", errors="replace")
    inputs = Inputs(source=str(path))
    if path.name == "modcheck.txt" or text.startswith("# rescue modcheck"):
        inputs.modcheck[path.name] = text
    else:
        inputs.logs[path.name] = text
    return inputs


def _load_capture(path: Path) -> Inputs:
    inputs = Inputs(source=str(path))
    manifest = path / "manifest.json"
    if manifest.is_file():
        try:
            m = json.loads(_read(manifest))
        except ValueError:
            raise RescueError(f"{manifest}: not valid JSON") from None
        if isinstance(m, dict):
            inputs.header = {str(k): str(v) for k, v in (m.get("header") or {}).items()}
            if m.get("status") not in (None, "complete"):
                inputs.notes.append(
                    f"capture status: {m.get('status')} ({m.get('reason') or 'no reason given'})"
                )
    for f in sorted(path.iterdir()):
        if not f.is_file() or f.name.startswith(".") or f.name == "manifest.json":
            continue
        data = _read(f)
        if not is_text(data):
            continue
        text = data.decode("utf-8", errors="replace")
        if f.name == "modcheck.txt":
            inputs.modcheck[f.name] = text
        elif f.name == "info.txt":
            inputs.info = _keyvalues(text)
        elif f.name not in _NOT_LOGS:
            inputs.logs[f.name] = text
    if not inputs.logs and not inputs.modcheck:
        raise RescueError(f"{path}: no dmesg, console log or modcheck.txt to analyse")
    return inputs


def _keyvalues(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if eq and key.strip().isidentifier():
            out[key.strip()] = value.strip()
    return out


# Analysis -----------------------------------------------------------------------------------------

_LINUX_VERSION = re.compile(r"Linux version (\S+)")
_DRACUT = re.compile(r"\bdracut(?:-|: | Warning:)")
_INITRAMFS_TOOLS = re.compile(r"^(?:Begin: |Loading, please wait\.\.\.|ALERT!  )")


def _needles(source: str) -> re.Pattern[str]:
    words = sorted({m.needle for r in RULES for m in r.matches if m.source == source})
    return re.compile("|".join(re.escape(w) for w in words))


_NEEDLES = {"log": _needles("log"), "modcheck": _needles("modcheck")}


@dataclass
class _Draft:
    rule: Rule
    evidence: list[Evidence] = field(default_factory=list)
    params: dict[str, list[str]] = field(default_factory=dict)
    raised: bool = False  # a non-support line matched
    omitted: int = 0
    seen: set[str] = field(default_factory=set)

    def add(
        self, ev: Evidence, groups: dict[str, str | None], support: bool, same: str | None = None
    ) -> None:
        self.raised |= not support
        for key, value in groups.items():
            if value and value not in self.params.setdefault(key, []):
                self.params[key].append(value)
        # A repeated message (every modprobe retry; the same line in dmesg.txt and console.log) is shown once.
        same = same or ev.text
        if same in self.seen:
            self.omitted += 1
            return
        self.seen.add(same)
        if len(self.evidence) < MAX_EVIDENCE:
            self.evidence.append(ev)
        else:
            self.omitted += 1


def _scan(inputs: Inputs) -> tuple[dict[tuple[str, tuple[str, ...]], _Draft], int, dict[str, int]]:
    drafts: dict[tuple[str, tuple[str, ...]], _Draft] = {}
    counts = {"lines": 0}
    hints = {"dracut": 0, "initramfs-tools": 0}
    kver_seen: dict[str, int] = {}
    for source, files in (("log", inputs.logs), ("modcheck", inputs.modcheck)):
        needles = _NEEDLES[source]
        rules = [(r, [m for m in r.matches if m.source == source]) for r in RULES]
        for name, text in files.items():
            for number, raw in enumerate(text.split("\n"), 1):
                counts["lines"] += 1
                if source == "log" and (
                    "dracut" in raw or "Begin: " in raw or "ALERT!" in raw or "Linux version" in raw
                ):
                    _hint(raw, hints, kver_seen)
                if not needles.search(raw):
                    continue
                shown = clean(raw)
                for piece, message in messages(shown) if source == "log" else [(shown, shown)]:
                    _match_line(rules, message, Evidence(name, number, piece[:300]), drafts)
    return drafts, counts["lines"], {**hints, **{f"kver:{k}": v for k, v in kver_seen.items()}}


def _hint(raw: str, hints: dict[str, int], kver_seen: dict[str, int]) -> None:
    line = clean(raw)
    for _, message in messages(line):
        if _DRACUT.search(message):
            hints["dracut"] += 1
        if _INITRAMFS_TOOLS.search(message):
            hints["initramfs-tools"] += 1
        m = _LINUX_VERSION.search(message)
        if m and message.startswith("Linux version"):
            kver_seen[m.group(1)] = kver_seen.get(m.group(1), 0) + 1


def _match_line(
    rules: Iterable[tuple[Rule, list[Match]]],
    message: str,
    ev: Evidence,
    drafts: dict[tuple[str, tuple[str, ...]], _Draft],
) -> None:
    for rule, matches in rules:
        for m in matches:
            if m.needle not in message:
                continue
            found = m.regex.search(message)
            if not found:
                continue
            if rule.ignore and rule.ignore.search(message):
                return  # known harmless: claimed, and nothing to report
            groups = {**dict(rule.constants), **found.groupdict()}
            key = (rule.id, tuple(groups.get(g) or "" for g in rule.group_by))
            drafts.setdefault(key, _Draft(rule)).add(ev, groups, m.support, same=message)
            return  # the first rule that matches claims the line


def _context(inputs: Inputs, hints: dict[str, int]) -> Context:
    kver = inputs.info.get("KERNEL") or inputs.header.get("kernel")
    if not kver:
        seen = sorted((v, k) for k, v in hints.items() if k.startswith("kver:"))
        kver = seen[-1][1][5:] if seen else None
    generator = inputs.info.get("GENERATOR")
    if generator not in GENERATORS:
        d, i = hints.get("dracut", 0), hints.get("initramfs-tools", 0)
        generator = "dracut" if d > i else "initramfs-tools" if i > d else None
    return Context(kver=kver, generator=generator, symbol_owner=_symbol_owner(kver))


def _symbol_owner(kver: str | None) -> Callable[[str], str | None]:
    """symbol -> module exporting it, from this host's /lib/modules/KVER/modules.symbols when installed."""
    table: dict[str, str] | None = None

    def owner(symbol: str) -> str | None:
        nonlocal table
        if table is None:
            table = {}
            path = Path("/lib/modules") / (kver or "-") / "modules.symbols"
            if kver and "/" not in kver and path.is_file():
                for line in path.read_text(errors="replace").splitlines():
                    words = line.split()
                    if len(words) == 3 and words[1].startswith("symbol:"):
                        table.setdefault(words[1][7:], words[2])
        return table.get(symbol)

    return owner


def _title(rule: Rule, params: dict[str, list[str]]) -> str:
    values = {k: ", ".join(v) for k, v in params.items()}

    class _Default(dict[str, str]):
        def __missing__(self, key: str) -> str:
            return "?"

    return rule.title.format_map(_Default(values))


def build_findings(
    drafts: Iterable[_Draft], ctx: Context, defaults: dict[str, str] | None = None
) -> list[Finding]:
    """Turn matched lines into findings, link consequences to causes, order root causes first."""
    findings: list[Finding] = []
    for d in drafts:
        if not d.raised:
            continue
        params = {k: list(v) for k, v in d.params.items()}
        for key, value in (defaults or {}).items():
            params.setdefault(key, [value])
        findings.append(
            Finding(
                id=d.rule.id,
                severity=d.rule.severity,
                title=_title(d.rule, params),
                evidence=d.evidence,
                fix=d.rule.fix(params, ctx),
                params=params,
                omitted=d.omitted,
            )
        )
    link(findings)
    return order(findings)


def link(findings: list[Finding]) -> None:
    for f in findings:
        rule = _RULES_BY_ID.get(f.id)
        for cause in rule.caused_by if rule else ():
            if any(c.id == cause.id and c is not f and _agree(f, c, cause.same) for c in findings):
                f.caused_by = cause.id
                break


def _agree(f: Finding, cause: Finding, same: tuple[tuple[str, str], ...]) -> bool:
    for mine, theirs in same:
        a, b = set(f.params.get(mine, [])), set(cause.params.get(theirs, []))
        if a and b and not a & b:
            return False
    return True


def order(findings: list[Finding]) -> list[Finding]:
    rank = {s: i for i, s in enumerate(SEVERITIES)}

    def key(f: Finding) -> tuple[int, int, str, int]:
        first = f.evidence[0] if f.evidence else Evidence("", 0, "")
        return rank.get(f.severity, 9), _ORDER.get(f.id, 99), first.file, first.line

    out: list[Finding] = []
    placed: set[int] = set()

    def place(f: Finding) -> None:
        if id(f) in placed:
            return
        placed.add(id(f))
        out.append(f)
        for c in sorted((c for c in findings if c.caused_by == f.id), key=key):
            place(c)

    for f in sorted((f for f in findings if f.caused_by is None), key=key):
        place(f)
    for f in sorted(findings, key=key):  # a cause that was itself linked away: keep everything
        place(f)
    return out


def analyze_inputs(inputs: Inputs) -> Report:
    drafts, lines, hints = _scan(inputs)
    ctx = _context(inputs, hints)
    defaults = {}
    if inputs.info.get("ROOTFSTYPE"):
        defaults["fs"] = inputs.info["ROOTFSTYPE"]
    findings = build_findings(drafts.values(), ctx, defaults)
    return Report(
        source=inputs.source,
        findings=findings,
        kernel=ctx.kver,
        generator=ctx.generator,
        lines=lines,
        files=inputs.files,
        notes=inputs.notes,
    )


def analyze_path(path: Path) -> Report:
    """Analyse a capture directory, a dmesg file or a console log (RescueError on bad input)."""
    return analyze_inputs(load_inputs(Path(path)))


def analyze_text(text: str, name: str = "dmesg.txt") -> Report:
    return analyze_inputs(Inputs(source=name, logs={name: text}))


# Human output -------------------------------------------------------------------------------------


def _wrap(text: str, width: int, indent: str, rest: str | None = None) -> list[str]:
    return textwrap.wrap(
        text,
        width,
        initial_indent=indent,
        subsequent_indent=rest or indent,
        break_long_words=True,
        break_on_hyphens=False,
    ) or [indent]


def _render(report: Report, width: int) -> list[str]:
    where = [x for x in (f"kernel {report.kernel}" if report.kernel else None, report.generator) if x]
    out = _wrap(
        f"rescue {report.tool}: {report.source}" + (f" ({', '.join(where)})" if where else ""), width, ""
    )
    for note in report.notes:
        out += _wrap(f"note: {note}", width, "")
    for key, value in report.extra.get("summary", {}).items():
        out += _wrap(f"{key}: {value}", width, "  ", "    ")
    if not report.findings:
        out += ["", report.headline() + "."]
        return out
    for f in report.findings:
        out.append("")
        if f.caused_by is None:
            out += _wrap(f"{f.severity.upper()}: {f.title}", width, "", "  ")
            out.append(f"  [{f.id}]")
        else:
            out += _wrap(f"{f.severity.upper()}: {f.title}", width, "  -> ", "     ")
            out += _wrap(f"[{f.id}, a consequence of {f.caused_by}]", width, "     ")
        pad = "    " if f.caused_by is None else "       "
        if f.evidence:
            out.append(pad[:-2] + "evidence:")
        for e in f.evidence:
            loc = (f"{e.file}:{e.line}: " if len(report.files) > 1 else f"{e.line}: ") if e.line else ""
            out += _wrap(f"{loc}{e.text}", width, pad, pad + "    ")
        if f.omitted:
            out.append(f"{pad}(+{f.omitted} similar lines)")
        if f.caused_by is None and f.severity != "info":
            out += _render_fix(f, report.generator, width, pad)
    if any(f.fix and f.severity != "info" for f in report.findings):
        out += [
            "",
            *_wrap(
                "A machine that cannot boot: run the fix from a rescue system, chrooted into the "
                "installed system (mount it, bind /dev /proc /sys, chroot).",
                width,
                "",
            ),
        ]
    return out


def _command(cmd: str, width: int, pad: str) -> list[str]:
    """A command that still pastes into a shell when wrapped: comments as comments, commands with \\."""
    if len(pad) + len(cmd) <= width:
        return [pad + cmd]
    if cmd.startswith("#"):
        return _wrap(cmd[1:].strip(), width, pad + "# ")
    lines = _wrap(cmd, width - 2, pad, pad + "    ")
    return [line + " \\" for line in lines[:-1]] + lines[-1:]


def _render_fix(f: Finding, generator: str | None, width: int, pad: str) -> list[str]:
    out: list[str] = []
    flavours = [generator] if generator in f.fix else [g for g in GENERATORS if g in f.fix]
    for flavour in flavours:
        out.append(pad[:-2] + f"fix ({flavour}), on the installed system:")
        for cmd in f.fix[flavour].splitlines():
            out += _command(cmd, width, pad)
    return out


# CLI ----------------------------------------------------------------------------------------------


def register(sub: Any) -> None:
    p = sub.add_parser("analyze", help="diagnose a failed boot from a capture, a dmesg file or a console log")
    p.add_argument("path", type=Path, help="capture directory, dmesg file or serial console log")
    p.add_argument("--json", action="store_true", help="print the report as one JSON document")
    p.set_defaults(func=main)


def main(args: Any) -> int:
    report = analyze_path(args.path)
    emit(report, as_json=args.json)
    return 1 if report.has_errors else 0


def emit(report: Report, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps({**report.to_json(), "headline": report.headline()}, indent=2, ensure_ascii=False))
    else:
        print(report.render(), end="")

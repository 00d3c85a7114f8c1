"""btrfs: its crc32c dependency missing from the image, or its checksum driver."""

from __future__ import annotations

import re

from rescue.diagnose.rules.base import (
    Context,
    Rule,
    add_modules,
    log,
    modcheck,
    with_rebuild,
)

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


def _crc32c_driver(kver: str | None) -> str:
    """The module that gives the crypto API its crc32c: from 6.14 crc32c is a library built into the kernel,
    libcrc32c and crc32c_generic are gone, and the crypto driver is crc32c-cryptoapi; before 3.15 it was
    crc32c.ko."""
    parts = re.match(r"(\d+)\.(\d+)", kver or "")
    version = (int(parts.group(1)), int(parts.group(2))) if parts else None
    if version and version >= (6, 14):
        return "crc32c_cryptoapi"
    if version and version < (3, 15):  # crypto/crc32c.c became crc32c_generic.c in 3.15
        return "crc32c"
    return "crc32c_generic"


def _fix_crc32c(params: dict[str, list[str]], ctx: Context) -> dict[str, str]:
    """The dependency the evidence shows missing on that kernel, never libcrc32c by reflex."""
    driver = _crc32c_driver(ctx.kver)
    mods = [driver if m in CRC32C_MODULES else m for m in params.get("missing", [])]
    for sym in params.get("symbol", []):
        mods.append(ctx.symbol_owner(sym) or "libcrc32c")
    if params.get("hash"):  # btrfs could not get a crc32c hash from the crypto API: its driver
        mods.append(driver)
    return add_modules(mods or ["libcrc32c"], ctx)


def _fix_csum(params: dict[str, list[str]], ctx: Context) -> dict[str, str]:
    known = [CSUM_MODULES[c] for c in params.get("csum", []) if c in CSUM_MODULES]
    if known:
        return add_modules(known, ctx)
    return with_rebuild(
        "# add the crypto module of the file system's checksum (btrfs inspect-internal dump-super)",
        ctx,
    )


# btrfs.ko that cannot be inserted for a symbol the line does not name is crc32c's evidence; alone, it is
# no more than that btrfs cannot load for an unknown symbol.
_SYMBOL = "module-unknown-symbol"

CRC32C_MISSING = Rule(
    id="btrfs-crc32c-missing",
    severity="error",
    title="btrfs cannot load: crc32c (libcrc32c) is missing from the initramfs",
    matches=(
        log("Unknown symbol", r"\bbtrfs: Unknown symbol (?P<symbol>crc32c\w*) \(err -?\d+\)"),
        log("Unknown symbol", r"\blibcrc32c: Unknown symbol (?P<symbol>\w+)(?: \(err -?\d+\)|\s*$)"),
        # module-init-tools insmod (2.6): libcrc32c's own dependency, the crc32c driver, is not there
        log(
            "Unknown symbol in module",
            r"insmod: error inserting '(?:[^']*/)?lib(?P<missing>crc32c)\.ko': -1 Unknown symbol in module",
        ),
        log(
            "hash for checksum",
            r"BTRFS error \(device [^)]*\): error allocating (?P<hash>crc32c)\S* hash for checksum",
        ),
        log(
            "libcrc32c",
            r"(?:modprobe|insmod): (?:can't load module |can't insert '?|ERROR: could not insert '"
            r"|FATAL: Module )(?P<missing>libcrc32c)\b",
        ),
        modcheck(" missing", r"^need (?P<missing>\S*crc32c\S*) (?:dep|softdep) (?:btrfs|libcrc32c) missing"),
        modcheck("crypto crc32c", r"^crypto crc32c absent", support=True),
        log(
            "can't load module btrfs",
            r"modprobe: can't load module btrfs \([^)]*\): unknown symbol",
            support=True,
            otherwise=_SYMBOL,
        ),
        log(
            "can't insert",
            r"insmod: can't insert '[^']*\bbtrfs\.ko[^']*': unknown symbol",
            support=True,
            otherwise=_SYMBOL,
        ),
        log(
            "Unknown symbol in module",
            r"(?:insmod: ERROR|Error): could not insert module \S*\bbtrfs\.ko: Unknown symbol in module",
            support=True,
            otherwise=_SYMBOL,
        ),
        log(
            "could not insert 'btrfs'",
            r"modprobe: ERROR: could not insert 'btrfs': Unknown symbol",
            support=True,
            otherwise=_SYMBOL,
        ),
    ),
    fix=_fix_crc32c,
    constants=(("module", "btrfs"), ("fs", "btrfs")),
)

CSUM_UNSUPPORTED = Rule(
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
)

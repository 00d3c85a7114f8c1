"""What a rule is (Match, Cause, Rule), the context its fix sees, and the fix helpers every family uses.

Patterns name the failure itself ("btrfs: Unknown symbol crc32c (err -2)"), as the kernel, the generators,
busybox and the collector print it, never a bare keyword: healthy boots print plenty of alarming lines.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass


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


def rebuild(ctx: Context) -> tuple[str, str]:
    if ctx.kver:
        return f"update-initramfs -u -k {ctx.kver}", f"dracut --force --kver {ctx.kver}"
    return "update-initramfs -u -k all", "dracut --force --regenerate-all"


# Where the fixes put dracut settings (not the hooks' own 90-rescue-send.conf).
DRACUT_FIX_CONF = "/etc/dracut.conf.d/90-rescue.conf"


def add_modules(modules: Sequence[str], ctx: Context) -> dict[str, str]:
    modules = list(dict.fromkeys(modules))
    mods = " ".join(modules)
    it, dr = rebuild(ctx)
    add_it = (
        f"echo {mods} >> /etc/initramfs-tools/modules"
        if len(modules) == 1
        else (f"printf '%s\\n' {mods} >> /etc/initramfs-tools/modules")
    )
    return {
        "initramfs-tools": f"{add_it}\n{it}",
        "dracut": f"echo 'add_drivers+=\" {mods} \"' >> {DRACUT_FIX_CONF}\n{dr}",
    }


def rebuild_with(note_it: str, note_dr: str) -> FixFn:
    def fix(_params: dict[str, list[str]], ctx: Context) -> dict[str, str]:
        it, dr = rebuild(ctx)
        return {"initramfs-tools": f"{note_it}\n{it}", "dracut": f"{note_dr}\n{dr}"}

    return fix

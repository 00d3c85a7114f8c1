"""What a rule is (Match, Cause, Rule), the context its fix sees, and the fix helpers every family uses.

Patterns name the failure itself ("btrfs: Unknown symbol crc32c (err -2)"), as the kernel, the generators,
busybox and the collector print it, never a bare keyword: healthy boots print plenty of alarming lines.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Match:
    """One kind of line a rule fires on."""

    source: str  # "log" (kernel/console/dmesg lines) or "modcheck" (the collector's modcheck.txt)
    needle: str  # a literal every matching line contains: a cheap filter before the regex
    regex: re.Pattern[str]
    support: bool = False  # only adds evidence to a finding that other lines raised
    constants: tuple[tuple[str, str], ...] = ()  # params this kind of line names without saying them
    otherwise: str | None = None  # a support line's own finding when nothing raises its rule


@dataclass(frozen=True)
class Cause:
    """A finding that, when present, explains this one; `same` pairs params that must agree if both known
    (with `known`: that both sides know and share)."""

    id: str
    same: tuple[tuple[str, str], ...] = ()
    known: bool = False


@dataclass(frozen=True)
class Promote:
    """When this rule's support lines alone raise it: a finding of one of `ids` is present (and, with `param`,
    one of its values matches `values`). With `absorb` those findings are the same failure seen from the
    root's side: their evidence moves into this one and they are not reported apart. With `derive` the rule
    needs no line of its own: such a finding raises it, naming the matching values of `param` and showing
    that finding's evidence, when one of `given` is present too (a storage driver that cannot load, and the
    root's disk never appears). With `fits`, a value counts only when fits(value, told) holds, `told` being
    the params of the `given` findings, completed from the capture as their rule's from_context allows (a
    disk controller counts only when it can carry the root device they name)."""

    ids: tuple[str, ...]
    param: str | None = None
    values: re.Pattern[str] | None = None
    absorb: bool = False
    derive: bool = False
    given: tuple[str, ...] = ()
    fits: Callable[[str, Mapping[str, Sequence[str]]], bool] | None = None

    def admits(self, value: str, told: Mapping[str, Sequence[str]]) -> bool:
        if self.values is not None and not self.values.fullmatch(value):
            return False
        return self.fits is None or self.fits(value, told)


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
    # Cross-line evidence, all settled in findings.settle: support lines that raise the finding given another
    # finding; findings that make this one moot (the layer under it failed), a Cause when only one whose
    # params agree does (it names the same module); see also clears() below.
    promote: Promote | None = None
    yields_to: tuple[str | Cause, ...] = ()


def log(
    needle: str,
    pattern: str,
    *,
    support: bool = False,
    constants: tuple[tuple[str, str], ...] = (),
    otherwise: str | None = None,
) -> Match:
    return Match("log", needle, re.compile(pattern), support, constants, otherwise)


def modcheck(needle: str, pattern: str, *, support: bool = False) -> Match:
    return Match("modcheck", needle, re.compile(pattern), support)


CLEARED = "cleared"


def clears(needle: str, pattern: str) -> Match:
    """A line showing the failure did not happen after all (the passphrase worked on the next try, the
    initramfs was unpacked): when it is anywhere in the logs, the rule reports nothing."""
    return Match("log", needle, re.compile(f"(?P<{CLEARED}>{pattern})"), support=True)


def notes_only(notes: str | Mapping[str, str]) -> FixFn:
    """A fix that is what to do by hand, the same for every generator or one per generator (no rebuild)."""

    def fix(_params: dict[str, list[str]], _ctx: Context) -> dict[str, str]:
        return {g: notes for g in GENERATORS} if isinstance(notes, str) else dict(notes)

    return fix


# Fixes: what to run on the installed system (from a rescue system, chroot into it first).


GENERATORS = ("initramfs-tools", "dracut", "mkinitcpio", "booster")

# Where the fixes put dracut settings (not the hooks' own 90-rescue-send.conf).
DRACUT_FIX_CONF = "/etc/dracut.conf.d/90-rescue.conf"
MKINITCPIO_CONF = "/etc/mkinitcpio.conf"
BOOSTER_CONF = "/etc/booster.yaml"


def rebuild(ctx: Context) -> dict[str, str]:
    """The command that rebuilds the image, per generator (for the kernel that failed, when known)."""
    k = ctx.kver
    return {
        "initramfs-tools": f"update-initramfs -u -k {k}" if k else "update-initramfs -u -k all",
        "dracut": f"dracut --force --kver {k}" if k else "dracut --force --regenerate-all",
        "mkinitcpio": "mkinitcpio -P",
        "booster": "/usr/lib/booster/regenerate_images",
    }


def add_modules(modules: Sequence[str], ctx: Context) -> dict[str, str]:
    """Put modules into every image the generator builds, then rebuild."""
    modules = list(dict.fromkeys(modules))
    mods = " ".join(modules)
    again = rebuild(ctx)
    add = {
        "initramfs-tools": f"echo {mods} >> /etc/initramfs-tools/modules"
        if len(modules) == 1
        else f"printf '%s\\n' {mods} >> /etc/initramfs-tools/modules",
        "dracut": f"echo 'add_drivers+=\" {mods} \"' >> {DRACUT_FIX_CONF}",
        "mkinitcpio": f"sed -i 's/^MODULES=(\\(.*\\))/MODULES=(\\1 {mods})/' {MKINITCPIO_CONF}",
        "booster": f"# add {','.join(modules)} to modules_force_load: in {BOOSTER_CONF}",
    }
    return {g: f"{add[g]}\n{again[g]}" for g in GENERATORS}


def with_rebuild(notes: str | Mapping[str, str], ctx: Context) -> dict[str, str]:
    """Notes (one for every generator, or one per generator) followed by the rebuild command."""
    again = rebuild(ctx)
    per = {g: notes for g in GENERATORS} if isinstance(notes, str) else notes
    return {g: f"{per[g]}\n{again[g]}" if per.get(g) else again[g] for g in GENERATORS}


def rebuild_with(notes: str | Mapping[str, str]) -> FixFn:
    """A fix that is notes, then the rebuild (for findings whose remedy a person must choose)."""

    def fix(_params: dict[str, list[str]], ctx: Context) -> dict[str, str]:
        return with_rebuild(notes, ctx)

    return fix

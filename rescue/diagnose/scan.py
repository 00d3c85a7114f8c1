"""Scanning: every line of the inputs against the rules' needles, then their patterns; what the logs say
about the system besides failures (the generator in use, the kernel) becomes the fixes' context.

A line is claimed by the first rule that matches it (the order of rules.RULES), so a specific rule comes
before a general one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rescue.diagnose.findings import Draft, Evidence
from rescue.diagnose.inputs import Inputs, clean, messages, normalize
from rescue.diagnose.prefilter import Prefilter, anchor, literals_pattern
from rescue.diagnose.rules import RULES, Context, Match, Rule
from rescue.diagnose.rules.base import GENERATORS
from rescue.kmod import is_kernel_version, load_symbols

_LINUX_VERSION = re.compile(r"Linux version (\S+)")
_DRACUT = re.compile(r"\bdracut(?:-|: | Warning:)")
_INITRAMFS_TOOLS = re.compile(r"^(?:Begin: |Loading, please wait\.\.\.|ALERT!  )")
# mkinitcpio's init and init_functions: msg ":: running hook [udev]", err "device '$1' not found..."
_MKINITCPIO = re.compile(
    r"^(?::: running (?:early |cleanup )?hook \[|:: mounting '[^']*' on real root|:: Triggering uevents"
    r"|ERROR: device ['\"][^'\"]*['\"] not found\. Skipping fsck)"
)
# booster's init logs with its name in front; its banner
_BOOSTER = re.compile(r"^booster: |\bBooster initramfs\b")


def _needles(source: str) -> set[str]:
    return {m.needle for r in RULES for m in r.matches if m.source == source}


_NEEDLES = {"log": literals_pattern(_needles("log")), "modcheck": literals_pattern(_needles("modcheck"))}


@dataclass
class Hints:
    """What the logs say about the system, besides failures: the generator in use and the kernel."""

    dracut: int = 0
    initramfs_tools: int = 0
    mkinitcpio: int = 0
    booster: int = 0
    kernels: dict[str, int] = field(default_factory=dict)
    cmdline: str = ""
    failure: Evidence | None = None  # the first line that shows the boot failed (a shell, a panic)

    def see(self, found: list[tuple[str, str]]) -> None:
        for _, message in found:
            self.dracut += bool(_DRACUT.search(message))
            self.initramfs_tools += bool(_INITRAMFS_TOOLS.search(message))
            self.mkinitcpio += bool(_MKINITCPIO.search(message))
            self.booster += bool(_BOOSTER.search(message))
            m = _LINUX_VERSION.match(message)
            if m:
                self.kernels[m.group(1)] = self.kernels.get(m.group(1), 0) + 1
            if message.startswith("Kernel command line: "):
                self.cmdline = message[len("Kernel command line: ") :]


# What shows that a boot failed, whatever the cause: a generator dropping to its shell, a panic.
_FAILURE_WORDS = (
    "Dropping to a shell",
    "dropped into an emergency shell",
    "You are in emergency mode",
    "Entering emergency mode",
    "Kernel panic - not syncing",
    "Could not boot",
    "Attempted to kill init",
    "Give root password for maintenance",
    "Bailing out. You are on your own",
    # NixOS stage 1: fail "An error occurred in stage 1 of the boot process, which must mount the root..."
    "An error occurred in stage 1 of the boot process",
)
# Debian's and Ubuntu's busybox is the initramfs-tools rescue shell only: its banner says a boot failed.
_SHELL_BANNER = re.compile(r"BusyBox v[\d.]+\S* \((?:Ubuntu|Debian) ", re.IGNORECASE)
# What tells the generator and the kernel (Hints), and the failure.
_HINT_LITERALS = (
    "dracut",
    "Begin: ",
    "ALERT!",
    "Loading, please wait",
    "Linux version",
    "Kernel command line",
    ":: running ",
    ":: mounting '",
    ":: Triggering uevents",
    "Skipping fsck",
    "booster: ",
    "Booster initramfs",
    "BusyBox v",
)
_FAILURE = literals_pattern(_FAILURE_WORDS)
_HINT_WORDS = literals_pattern(_HINT_LITERALS + _FAILURE_WORDS)
# The lines worth a closer look: a needle or a hint in them, over the whole text at once.
_PREFILTER = {
    "log": Prefilter(_needles("log") | {*_HINT_LITERALS, *_FAILURE_WORDS}),
    "modcheck": Prefilter(_needles("modcheck")),
}


def scan(inputs: Inputs) -> tuple[list[Draft], int, Hints]:
    drafts: dict[tuple[str, tuple[str, ...]], Draft] = {}
    lines = 0
    hints = Hints()
    for source, files in (("log", inputs.logs), ("modcheck", inputs.modcheck)):
        needles = _NEEDLES[source]
        rules = _BY_ANCHOR[source]
        for name, text in files.items():
            lines += text.count("\n") + 1
            for index, raw, end in _PREFILTER[source].lines(text):
                # Colours can sit inside a message (systemd's unit names): look at such lines cleaned. The
                # needles survive a paste's quoting and markup, so only the lines they pick are normalised.
                probe = clean(raw) if "\x1b" in raw else raw
                hint = source == "log" and _HINT_WORDS.search(probe) is not None
                if not hint and probe is not raw and not needles.search(probe):
                    continue  # a colour line the prefilter picked for its escape, with no needle
                shown = normalize(raw)
                found = messages(shown) if source == "log" else [(shown, shown)]
                if hint:
                    hints.see(found)
                    if hints.failure is None and (_FAILURE.search(shown) or _SHELL_BANNER.search(shown)):
                        hints.failure = Evidence(name, index + 1, shown[:300])
                for piece, message in found:
                    if needles.search(message):
                        ev = Evidence(name, index + 1, piece[:300])
                        if not _match_line(rules, message, ev, drafts) and piece is found[-1][0]:
                            # a message hard-wrapped by a mail or a terminal: its end is on the next line
                            more = _continuation(text, end)
                            if more:
                                _match_line(rules, f"{message} {more}", ev, drafts)
    return list(drafts.values()), lines, hints


# (precedence, rule, match)
_Tried = tuple[int, Rule, Match]


def _by_anchor(source: str) -> dict[str, list[tuple[str, list[_Tried]]]]:
    """anchor character -> needle -> the matches that need it, in the rules' order: a line is tried only on
    the matches whose needle it holds, and only needles whose (rare) anchor character it holds are looked
    for."""
    by_needle: dict[str, list[_Tried]] = {}
    ordered = [(r, m) for r in RULES for m in r.matches if m.source == source]
    for i, (rule, m) in enumerate(ordered):
        by_needle.setdefault(m.needle, []).append((i, rule, m))
    out: dict[str, list[tuple[str, list[_Tried]]]] = {}
    for needle, tried in by_needle.items():
        out.setdefault(needle[anchor(needle)], []).append((needle, tried))
    return out


_BY_ANCHOR = {"log": _by_anchor("log"), "modcheck": _by_anchor("modcheck")}


def _continuation(text: str, end: int) -> str:
    """The next line, when it can be the rest of a wrapped message: not empty, not a message of its own (a
    printk time, a journal or syslog prefix), cleaned as any line."""
    if end >= len(text):
        return ""
    stop = text.find("\n", end + 1)
    line = normalize(text[end + 1 : stop if stop != -1 else len(text)])
    if not line or _NEW_MESSAGE.match(line):
        return ""
    return line


# what starts a message of its own: a printk time or level, a syslog or journal prefix (month day time)
_NEW_MESSAGE = re.compile(r"<\d{1,3}>|\[\s*\d+\.\d+\]|\w{3} [ \d]\d \d\d:\d\d:\d\d ")


def _match_line(
    rules: dict[str, list[tuple[str, list[_Tried]]]],
    message: str,
    ev: Evidence,
    drafts: dict[tuple[str, tuple[str, ...]], Draft],
) -> bool:
    """The first rule's match that claims the line (True), or False when none does."""
    tried = sorted(
        t for ch in rules.keys() & set(message) for needle, ts in rules[ch] if needle in message for t in ts
    )
    for _, rule, m in tried:
        found = m.regex.search(message)
        if not found:
            continue
        if rule.ignore and rule.ignore.search(message):
            return True  # known harmless: claimed, and nothing to report
        groups = {**dict(rule.constants), **dict(m.constants), **found.groupdict()}
        key = (rule.id, tuple(groups.get(g) or "" for g in rule.group_by))
        draft = drafts.get(key)
        if draft is None:
            draft = drafts[key] = Draft(rule)
        draft.add(ev, groups, m.support, same=message, otherwise=m.otherwise)
        return True  # the first rule that matches claims the line
    return False


def context(inputs: Inputs, hints: Hints) -> Context:
    kver = inputs.info.get("KERNEL") or inputs.header.get("kernel")
    if not kver and hints.kernels:
        kver = max(hints.kernels, key=lambda k: hints.kernels[k])
    generator = inputs.info.get("GENERATOR")
    if generator not in GENERATORS:
        seen = {
            "dracut": hints.dracut,
            "initramfs-tools": hints.initramfs_tools,
            "mkinitcpio": hints.mkinitcpio,
            "booster": hints.booster,
        }
        most = max(seen.values())
        told = [g for g, n in seen.items() if n == most]
        generator = told[0] if most and len(told) == 1 else None
    return Context(kver=kver, generator=generator, symbol_owner=_symbol_owner(kver))


def _symbol_owner(kver: str | None) -> Callable[[str], str | None]:
    """symbol -> module exporting it, from this host's /lib/modules/KVER/modules.symbols when installed."""
    table: dict[str, str] | None = None

    def owner(symbol: str) -> str | None:
        nonlocal table
        if table is None:
            table = load_symbols(Path("/lib/modules") / kver) if is_kernel_version(kver) else {}
        return table.get(symbol)

    return owner

"""Diagnose a failed boot: the rules (diagnose.rules) over kernel logs, console output and collector files.

Input is a capture directory, a dmesg file or a serial console log. Lines are cleaned (carriage returns,
colours, levels, timestamps, kernel lines inside shell output), matched against the rules, grouped into
findings, and a finding whose cause was also found is reported as that cause's consequence (caused_by), not
as a second root cause.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rescue.diagnose.findings import GENERATORS, MAX_EVIDENCE, SEVERITIES, Evidence, Finding, Report
from rescue.diagnose.rules import RULE_IDS, RULE_ORDER, RULES, RULES_BY_ID, Cause, Context, Match, Rule
from rescue.errors import RescueError
from rescue.kmod import is_kernel_version, load_symbols
from rescue.reading import load_json, read_bytes

__all__ = [
    "RULES",
    "RULE_IDS",
    "Cause",
    "Context",
    "Evidence",
    "Finding",
    "Match",
    "Report",
    "Rule",
    "analyze_path",
    "analyze_text",
]

# Reading logs -------------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][A-Z0-9]|\x1b[@-Z\\^_`a-z78=>]")
# <N> (dmesg -r, /dev/kmsg writers), [ 1.234567] (printk time), [T123] (printk caller), syslog/journal
# prefixes ("Nov 25 16:00:00 host kernel: "), dmesg -T ("[Wed Nov 25 16:00:00 2026] ").
_PREFIX = re.compile(
    r"^(?:<\d{1,3}>)?"
    r"(?:\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ [\w.\-/]+(?:\[\d+\])?: )?"
    r"(?:\[\s*\d+\.\d+\]\s?|\[\w{3} \w{3} [ \d]\d [\d:]{8} \d{4}\]\s?)?"
    r"(?:\[\s*[TC]\d+\]\s?)?"
)
# Console output interleaves kernel lines with shell output mid-line: split before each printk time.
_TIME = re.compile(r"(?:<\d{1,3}>)?\[\s*\d+\.\d{6}\]")


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
    cuts = [0]
    if "[" in text:
        first = _TIME.match(text)  # a line's own level and time are not a second message
        start = first.end() if first else 1
        cuts += [m.start() for m in _TIME.finditer(text, start)]
    pieces = [text[a:b].strip() for a, b in zip(cuts, [*cuts[1:], len(text)], strict=True)]
    return [(p, _PREFIX.sub("", p, count=1)) for p in pieces if p]


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
    cmdline: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[str]:
        return sorted({*self.logs, *self.modcheck})


MAX_PARAMS = 50  # values kept per param (symbols, modules) of one finding
MAX_READ = 128 << 20  # a boot log is megabytes; a runaway stream should not exhaust memory


MAX_MANIFEST = 16 << 20  # the listener's manifest for 10,000 tar members is about 2 MB


def _read(path: Path, notes: list[str], limit: int | None = None) -> bytes:
    limit = MAX_READ if limit is None else limit
    data, more = read_bytes(path, limit)
    if more:
        notes.append(f"{path.name}: only the first {limit:,} bytes were read")
    return data


def load_inputs(path: Path) -> Inputs:
    if path.is_dir():
        return _load_capture(path)
    notes: list[str] = []
    data = _read(path, notes)
    if not data:
        raise RescueError(f"{path}: empty file, nothing to analyse")
    if not is_text(data):
        raise RescueError(
            f"{path}: not a text log (binary data)",
            hint="give a dmesg file, a console log or a capture directory",
        )
    text = data.decode("utf-8", errors="replace")
    inputs = Inputs(source=str(path), notes=notes)
    if path.name == "modcheck.txt" or text.startswith("# rescue modcheck"):
        inputs.modcheck[path.name] = text
    else:
        inputs.logs[path.name] = text
    return inputs


def _manifest(path: Path) -> dict[str, Any]:
    """What analysis takes from a capture's manifest.json (the listener's header, status, reason)."""
    m = load_json(path, MAX_MANIFEST)
    if not isinstance(m, dict) or not isinstance(m.get("header") or {}, dict):
        raise RescueError(
            f"{path}: not a capture manifest", hint="move it away to analyse the capture's files alone"
        )
    return {**m, "header": m.get("header") or {}}


def _load_capture(path: Path) -> Inputs:
    inputs = Inputs(source=str(path))
    manifest = path / "manifest.json"
    if manifest.is_file():
        m = _manifest(manifest)
        inputs.header = {str(k): str(v) for k, v in m["header"].items()}
        if m.get("status") not in (None, "complete"):
            inputs.notes.append(f"capture status: {m.get('status')} ({m.get('reason') or 'no reason given'})")
    # The listener writes regular files only: a link could lead out of the capture, a FIFO could block.
    names = [f for f in path.iterdir() if not f.is_symlink() and f.is_file() and not f.name.startswith(".")]
    # The limit holds for the whole capture. Small files first: one huge console log must not crowd out
    # dmesg.txt and modcheck.txt.
    budget = MAX_READ
    contents: dict[Path, bytes] = {}
    for f in sorted((f for f in names if f.name != "manifest.json"), key=lambda f: f.stat().st_size):
        if budget <= 0:
            inputs.notes.append(f"{f.name}: not read, the capture's first {MAX_READ:,} bytes were")
            continue
        contents[f] = _read(f, inputs.notes, budget)
        budget -= len(contents[f])
    for f, data in sorted(contents.items()):
        if not is_text(data):
            inputs.notes.append(f"{f.name}: skipped, binary data")
            continue
        text = data.decode("utf-8", errors="replace")
        if f.name == "modcheck.txt":
            inputs.modcheck[f.name] = text
        elif f.name == "info.txt":
            inputs.info = _keyvalues(text)
        elif f.name == "cmdline.txt":
            inputs.cmdline = text.strip()
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
    params: dict[str, dict[str, None]] = field(default_factory=dict)  # ordered sets
    raised: bool = False  # a non-support line matched
    omitted: int = 0
    seen: set[str] = field(default_factory=set)

    def add(
        self, ev: Evidence, groups: dict[str, str | None], support: bool, same: str | None = None
    ) -> None:
        self.raised |= not support
        for key, value in groups.items():
            if value:
                values = self.params.setdefault(key, {})
                if len(values) < MAX_PARAMS:
                    values[value] = None
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


@dataclass
class _Hints:
    """What the logs say about the system, besides failures: the generator in use and the kernel."""

    dracut: int = 0
    initramfs_tools: int = 0
    kernels: dict[str, int] = field(default_factory=dict)
    cmdline: str = ""

    def see(self, found: list[tuple[str, str]]) -> None:
        for _, message in found:
            self.dracut += bool(_DRACUT.search(message))
            self.initramfs_tools += bool(_INITRAMFS_TOOLS.search(message))
            m = _LINUX_VERSION.match(message)
            if m:
                self.kernels[m.group(1)] = self.kernels.get(m.group(1), 0) + 1
            if message.startswith("Kernel command line: "):
                self.cmdline = message[len("Kernel command line: ") :]


_HINT_WORDS = re.compile(r"dracut|Begin: |ALERT!|Loading, please wait|Linux version|Kernel command line")


def _scan(inputs: Inputs) -> tuple[list[_Draft], int, _Hints]:
    drafts: dict[tuple[str, tuple[str, ...]], _Draft] = {}
    lines = 0
    hints = _Hints()
    for source, files in (("log", inputs.logs), ("modcheck", inputs.modcheck)):
        needles = _NEEDLES[source]
        rules = [(r, [m for m in r.matches if m.source == source]) for r in RULES]
        for name, text in files.items():
            for number, raw in enumerate(text.split("\n"), 1):
                lines += 1
                # Colours can sit inside a message (systemd's unit names): look at such lines cleaned.
                probe = clean(raw) if "\x1b" in raw else raw
                hint = source == "log" and _HINT_WORDS.search(probe) is not None
                if not hint and not needles.search(probe):
                    continue
                shown = probe if probe is not raw else clean(raw)
                found = messages(shown) if source == "log" else [(shown, shown)]
                if hint:
                    hints.see(found)
                for piece, message in found:
                    if needles.search(message):
                        _match_line(rules, message, Evidence(name, number, piece[:300]), drafts)
    return list(drafts.values()), lines, hints


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


def _context(inputs: Inputs, hints: _Hints) -> Context:
    kver = inputs.info.get("KERNEL") or inputs.header.get("kernel")
    if not kver and hints.kernels:
        kver = max(hints.kernels, key=lambda k: hints.kernels[k])
    generator = inputs.info.get("GENERATOR")
    if generator not in GENERATORS:
        d, i = hints.dracut, hints.initramfs_tools
        generator = "dracut" if d > i else "initramfs-tools" if i > d else None
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


def _title(rule: Rule, params: dict[str, list[str]]) -> str:
    values = {
        k: ", ".join(v[:3]) + (f" (+{len(v) - 3} more)" if len(v) > 3 else "") for k, v in params.items()
    }

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
            if key not in d.rule.from_context:
                continue
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
        rule = RULES_BY_ID.get(f.id)
        for cause in rule.caused_by if rule else ():
            found = next(
                (c for c in findings if c.id == cause.id and c is not f and _agree(f, c, cause.same)), None
            )
            if found:
                f.caused_by, f.cause = cause.id, found
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
        return rank.get(f.severity, 9), RULE_ORDER.get(f.id, 99), first.file, first.line

    out: list[Finding] = []
    placed: set[int] = set()

    def place(f: Finding) -> None:
        if id(f) in placed:
            return
        placed.add(id(f))
        out.append(f)
        for c in sorted((c for c in findings if c.cause is f), key=key):
            place(c)

    for f in sorted((f for f in findings if f.caused_by is None), key=key):
        place(f)
    for f in sorted(findings, key=key):  # a cause that was itself linked away: keep everything
        place(f)
    return out


def analyze_inputs(inputs: Inputs) -> Report:
    drafts, lines, hints = _scan(inputs)
    ctx = _context(inputs, hints)
    # The root file system type: what the collector found, else rootfstype= on the kernel command line.
    defaults = {}
    cmdline = dict(w.partition("=")[::2] for w in (inputs.cmdline or hints.cmdline).split())
    fstype = inputs.info.get("ROOTFSTYPE") or cmdline.get("rootfstype", "")
    if fstype and fstype != "auto":
        defaults["fs"] = fstype
    findings = build_findings(drafts, ctx, defaults)
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

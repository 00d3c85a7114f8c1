"""The report: what rescue analyze and rescue check-image say, as JSON and for people."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field
from typing import Any

from rescue.diagnose.findings import SEVERITIES, Finding
from rescue.diagnose.rules.base import GENERATORS
from rescue.errors import printable

REPORT_VERSION = 1


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
        return printable(f"{first.severity}: {first.title} [{first.id}]{tail}")

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
        # Evidence is foreign text: an escape sequence in a log must not drive the reader's terminal.
        return "\n".join(printable(line) for line in _render(self, width)) + "\n"


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


def emit(report: Report, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps({**report.to_json(), "headline": report.headline()}, indent=2, ensure_ascii=False))
    else:
        print(report.render(), end="")

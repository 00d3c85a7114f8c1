"""`rescue analyze`: diagnose a failed boot from a capture directory, a dmesg file or a console log.

inputs (normalised lines) -> scan (rules.RULES over each line) -> findings (a consequence is listed under
its cause, not as a second root cause) -> report.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rescue.capture.manifest import Manifest
from rescue.diagnose.findings import build_findings
from rescue.diagnose.inputs import Inputs, load_inputs
from rescue.diagnose.report import Report, emit
from rescue.diagnose.scan import context, scan
from rescue.diagnose.unexplained import unexplained


def analyze_inputs(inputs: Inputs) -> Report:
    drafts, lines, hints = scan(inputs)
    ctx = context(inputs, hints)
    # The root file system type: what the collector found, else rootfstype= on the kernel command line.
    defaults = {}
    cmdline = dict(w.partition("=")[::2] for w in (inputs.cmdline or hints.cmdline).split())
    fstype = inputs.info.get("ROOTFSTYPE") or cmdline.get("rootfstype", "")
    if fstype and fstype != "auto":
        defaults["fs"] = fstype
    # The root device the boot asked for, as the collector saw it, else root= (dracut may write block:...).
    root = (inputs.info.get("ROOT") or cmdline.get("root", "")).removeprefix("block:")
    if root:
        defaults["device"] = root
    findings = build_findings(drafts, ctx, defaults)
    if hints.failure and not any(f.severity == "error" for f in findings):
        findings.insert(0, unexplained(inputs, hints.failure, ctx))
    return Report(
        source=inputs.source,
        findings=findings,
        kernel=ctx.kver,
        generator=ctx.generator,
        lines=lines,
        files=inputs.files,
        notes=inputs.notes,
    )


def analyze_path(path: Path, manifest: Manifest | None = None) -> Report:
    """Analyse a capture directory (with its manifest, when the caller has it), a dmesg file or a console
    log (RescueError on bad input)."""
    return analyze_inputs(load_inputs(Path(path), manifest))


def analyze_text(text: str, name: str = "dmesg.txt") -> Report:
    return analyze_inputs(Inputs(source=name, logs={name: text}))


# CLI ----------------------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("analyze", help="diagnose a failed boot from a capture, a dmesg file or a console log")
    p.add_argument("path", type=Path, help="capture directory, dmesg file or serial console log")
    p.add_argument("--json", action="store_true", help="print the report as one JSON document")
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    report = analyze_path(args.path)
    emit(report, as_json=args.json)
    return 1 if report.has_errors else 0

"""Man pages from the argparse definitions: rescue(1) and one rescue-COMMAND(1) per sub-command.

    python3 scripts/manpages.py OUTDIR

The parser is rescue.cli.build_parser() (every sub-command registered), so the pages say what the code
parses. The date is SOURCE_DATE_EPOCH's when set (reproducible builds), else today's. Help texts that name
the build machine's running kernel as a default say `uname -r` instead.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rescue import __version__  # noqa: E402
from rescue.cli import build_parser  # noqa: E402

EXIT_STATUS = [
    ("0", "success; for analyze and check-image: nothing of error severity was found"),
    ("1", "analyze or check-image found an error-severity problem"),
    ("2", "bad usage or bad input"),
    ("70", "a bug in rescue itself (run again with --debug and report the traceback)"),
]


def roff(text: str) -> str:
    """Text as roff: backslashes escaped, no line starting with a control character."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = text.replace(os.uname().release.replace("-", "\\-"), "\\fIuname \\-r\\fR")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in text.splitlines())


def subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.ArgumentParser, str]]:
    """name -> (parser, one-line help) for the sub-commands of parser, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return {name: (p, helps.get(name, "")) for name, p in action.choices.items()}
    return {}


def usage(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_usage().removeprefix("usage:").split())


def options(parser: argparse.ArgumentParser) -> list[str]:
    """One .TP entry per option or positional argument (sub-command choices are listed elsewhere)."""
    formatter = parser._get_formatter()
    out: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            metavar = "" if action.nargs == 0 else " " + formatter._format_args(action, action.dest.upper())
            names = ", ".join(f"\\fB{roff(o)}\\fR{roff(metavar)}" for o in action.option_strings)
        else:
            names = f"\\fI{roff(formatter._format_args(action, action.dest))}\\fR"
        help_text = formatter._expand_help(action) if action.help else ""
        if action.choices and action.option_strings:
            help_text = f"{help_text} (one of: {', '.join(map(str, action.choices))})".strip()
        out += [".TP", names, roff(help_text)]
    return out


def header(name: str, summary: str, date: str) -> list[str]:
    summary = summary.rstrip(".")
    summary = summary[:1].lower() + summary[1:]
    return [
        f'.TH {name.upper()} 1 "{date}" "rescue {__version__}" "User Commands"',
        ".SH NAME",
        f"{roff(name)} \\- {roff(summary)}",
    ]


def main_page(parser: argparse.ArgumentParser, date: str) -> str:
    lines = header("rescue", parser.description or "", date)
    lines += [".SH SYNOPSIS", "\\fBrescue\\fR [\\fB\\-\\-debug\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR...]"]
    lines += [".SH DESCRIPTION", roff(parser.description or "")]
    lines += [".SH OPTIONS", *options(parser), ".SH COMMANDS"]
    for name, (_, help_text) in subcommands(parser).items():
        lines += [
            ".TP",
            f"\\fBrescue {roff(name)}\\fR",
            f"{roff(help_text)}; see \\fBrescue\\-{roff(name)}\\fR(1).",
        ]
    lines += [".SH EXIT STATUS"]
    for code, meaning in EXIT_STATUS:
        lines += [".TP", code, roff(meaning)]
    refs = ",\n".join(f".BR rescue\\-{roff(n)} (1)" for n in subcommands(parser))
    return "\n".join([*lines, ".SH SEE ALSO", refs, ""])


def command_page(name: str, sub: argparse.ArgumentParser, summary: str, date: str) -> str:
    lines = header(f"rescue-{name}", summary, date)
    lines += [".SH SYNOPSIS", roff(usage(sub)), ".SH DESCRIPTION", roff(sub.description or summary) + "."]
    own = options(sub)
    if own:
        lines += [".SH OPTIONS", *own]
    nested = subcommands(sub)
    if nested:
        lines += [".SH COMMANDS"]
        for child, (parser, help_text) in nested.items():
            lines += [
                f'.SS "rescue {roff(name)} {roff(child)}"',
                roff(help_text) + ".",
                ".PP",
                roff(usage(parser)),
            ]
            lines += options(parser)
    lines += [".SH SEE ALSO", ".BR rescue (1)", ""]
    return "\n".join(lines)


def build_date() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (
        datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
        if epoch
        else datetime.datetime.now(datetime.UTC)
    )
    return when.strftime("%Y-%m-%d")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: manpages.py OUTDIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    parser, date = build_parser(), build_date()
    (out / "rescue.1").write_text(main_page(parser, date))
    for name, (sub, help_text) in subcommands(parser).items():
        (out / f"rescue-{name}.1").write_text(command_page(name, sub, help_text, date))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

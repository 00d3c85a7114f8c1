"""Command line: one sub-command per module; every failure becomes one line and an exit code."""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import sys
from collections.abc import Sequence

from rescue import __version__
from rescue.errors import EXIT_INTERNAL, EXIT_IOERR, EXIT_USAGE, RescueError, os_error, printable

# Sub-command -> the module whose register(subparsers) adds it and sets `func`, a
# `command(args: argparse.Namespace) -> int` of that module (hooks: one per sub-sub-command). Only the
# module of the command given is imported: `check-image` need not pay for asyncio, nor `listen` for the
# decompressors.
COMMANDS = {
    "listen": "rescue.listen.command",
    "analyze": "rescue.diagnose.analyze",
    "check-image": "rescue.image.check",
    "hooks": "rescue.hooks.command",
    "replay": "rescue.listen.replay",
    "summary": "rescue.summary.command",
}


_INPUT_ERRNOS = {
    errno.ENOENT,
    errno.EACCES,
    errno.EPERM,
    errno.EISDIR,
    errno.ENOTDIR,
    errno.ENAMETOOLONG,
    errno.ELOOP,
    errno.EEXIST,
    errno.EINVAL,
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse prints the whole usage block; one line with the program name is enough.
        self.exit(EXIT_USAGE, f"{self.prog}: error: {printable(message)}\n")


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser, with only the sub-command named in argv registered (all of them when none is named)."""
    parser = _Parser(prog="rescue", description="Get the evidence out of a machine stuck in its initramfs.")
    parser.add_argument("--version", action="version", version=f"rescue {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    named = [a for a in argv if a in COMMANDS][:1]
    for command in named or COMMANDS:
        importlib.import_module(COMMANDS[command]).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:
        if args.debug:
            raise
        return _fail(e, as_json=bool(getattr(args, "json", False)))


def _fail(e: Exception, *, as_json: bool = False) -> int:
    """Any failure as one line on stderr and its exit code; with --json also one {"error": ...} document
    on stdout, so that a script reading stdout never gets an empty answer."""
    if isinstance(e, RescueError):
        message, code = str(e), e.exit_code
    elif isinstance(e, OSError):
        # A path the user named that is not there or not theirs is bad input; a disk that fails
        # (EIO, ENOSPC, a read-only file system) is not the user's doing, and says so with its own code.
        message, code = str(os_error(e)), EXIT_USAGE if e.errno in _INPUT_ERRNOS else EXIT_IOERR
    else:
        message, code = f"internal error: {type(e).__name__}: {e} (--debug shows where)", EXIT_INTERNAL
    print(f"rescue: {printable(message)}", file=sys.stderr)
    if as_json:
        print(json.dumps({"error": message, "exit": code}, ensure_ascii=False))
    return code

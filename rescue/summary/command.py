"""`rescue summary DIR [--since TIME] [--json] [--rebuild]`: what a fleet sent, grouped by root cause."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from rescue.errors import RescueError, printable
from rescue.summary.index import INDEX, Index, rebuild
from rescue.summary.report import summarize

_AGO = re.compile(r"(\d+)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None) -> str:
    """'30m', '2h', '1d' ago, or an ISO 8601 date or time (UTC unless it says otherwise): the index's form."""
    m = _AGO.fullmatch(text.strip())
    if m:
        t = (time.time() if now is None else now) - int(m.group(1)) * _UNIT[m.group(2)]
        when = datetime.fromtimestamp(t, UTC)
    else:
        try:
            when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise RescueError(
                f"bad --since {text!r}",
                hint="a duration (30m, 2h, 1d) or a time (2026-12-07T14:00)",
            ) from None
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def command(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    if not root.is_dir():
        raise RescueError(f"{root}: no such capture directory")
    since = parse_since(args.since) if args.since else None
    if args.rebuild or not (root / INDEX).exists():
        count, problems = rebuild(root)
        why = "rebuilt" if args.rebuild else "no index yet: built"
        print(f"rescue: {why} {root / INDEX} from {count} manifest(s)", file=sys.stderr)
        for path, problem in problems:
            print(f"rescue: skipped {printable(str(path))}: {printable(problem)}", file=sys.stderr)
    index = Index(root, create=False)
    try:
        summary = summarize(index, since)
    finally:
        index.close()
    if args.json:
        print(json.dumps({"dir": str(root), **summary.to_json()}, ensure_ascii=False))
    else:
        # Machine names and titles come from the senders: nothing in them may drive the terminal.
        sys.stdout.write("".join(printable(line) + "\n" for line in summary.render().splitlines()))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "summary",
        help="what a fleet sent: machines grouped by root cause, kernel and generator",
        description="Machines grouped by (root cause, kernel, initramfs generator), from the index the "
        "listener keeps in DIR.",
    )
    p.add_argument("dir", metavar="DIR", help="the capture directory of `rescue listen --dir`")
    p.add_argument(
        "--since", metavar="TIME", help="only captures since TIME (30m, 2h, 1d or 2026-12-07T14:00)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--rebuild", action="store_true", help="recreate the index from the manifests first")
    p.set_defaults(func=command)

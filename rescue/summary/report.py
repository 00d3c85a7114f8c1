"""The fleet view: machines grouped by (root cause, kernel, generator), read from the index in one pass.

A machine that sent several captures counts once per group it fell into; incomplete and rejected captures
are counted apart (they have no trustworthy diagnosis). The fix is shown once per group.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rescue.summary.index import NO_ERROR, Index

EXAMPLES = 3
MILESTONES = (10, 100, 1000)


@dataclass
class Group:
    finding: str
    title: str
    kernel: str
    generator: str
    machines: int
    captures: int
    first: str
    last: str
    fix: str
    examples: list[str] = field(default_factory=list)


@dataclass
class Summary:
    machines: int
    captures: int
    by_status: dict[str, int]  # complete, incomplete, rejected: captures
    since: str | None
    groups: list[Group]

    def to_json(self) -> dict[str, Any]:
        return {
            "machines": self.machines,
            "captures": self.captures,
            "status": self.by_status,
            "since": self.since,
            "groups": [asdict(g) for g in self.groups],
        }

    def render(self) -> str:
        status = ", ".join(f"{n} {s}" for s, n in sorted(self.by_status.items()))
        since = f" since {self.since}" if self.since else ""
        lines = [f"{self.machines} machine(s), {self.captures} capture(s){since}: {status or 'none'}"]
        for g in self.groups:
            lines.append("")
            lines.append(f"{g.machines:>7} machine(s): {g.finding} on {g.kernel} ({g.generator})")
            lines.append(f"          {g.title}")
            lines.append(f"          {g.captures} capture(s), first {g.first}, last {g.last}")
            lines.append(f"          e.g. {', '.join(g.examples)}")
            if g.fix:
                fix = g.fix.splitlines()
                lines.append(f"          fix: {fix[0]}")
                lines.extend(f"               {line}" for line in fix[1:])
        return "\n".join(lines) + "\n"


def summarize(index: Index, since: str | None = None) -> Summary:
    cond, args = ("WHERE seen >= ?", (since,)) if since else ("", ())
    by_status = {
        str(s): int(n)
        for s, n in index.query(f"SELECT status, count(*) FROM captures {cond} GROUP BY status", args)
    }
    machines, captures = index.query(f"SELECT count(DISTINCT machine), count(*) FROM captures {cond}", args)[
        0
    ]
    where = "WHERE status='complete'" + (" AND seen >= ?" if since else "")
    rows = index.query(
        "SELECT finding, kernel, generator, count(DISTINCT machine), count(*), min(seen), max(seen), "
        f"max(title), max(fix) FROM captures {where} GROUP BY finding, kernel, generator",
        args,
    )
    groups = []
    for finding, kernel, generator, n_machines, n_captures, first, last, title, fix in rows:
        examples = index.query(
            f"SELECT machine FROM captures {where} AND finding=? AND kernel=? AND generator=? "
            f"GROUP BY machine ORDER BY min(seen) LIMIT {EXAMPLES}",
            (*args, finding, kernel, generator),
        )
        groups.append(
            Group(
                finding,
                title,
                kernel,
                generator,
                n_machines,
                n_captures,
                first,
                last,
                fix,
                [e[0] for e in examples],
            )
        )
    # The biggest failure first; machines without any error last, whatever their number.
    groups.sort(key=lambda g: (g.finding == NO_ERROR, -g.machines, g.finding, g.kernel))
    return Summary(int(machines), int(captures), by_status, since, groups)


def milestone_crossed(before: int, after: int) -> int | None:
    """The milestone (10, 100, 1,000 machines) a group just reached, if any."""
    return next((m for m in MILESTONES if before < m <= after), None)


def milestone_line(machines: int, finding: str, kernel: str, generator: str, fix: str) -> str:
    line = f"{machines} machines: {finding} on {kernel} ({generator})"
    return line + ("; fix: " + "; ".join(fix.splitlines()) if fix else "")

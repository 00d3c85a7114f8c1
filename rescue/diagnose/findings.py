"""Findings: matched lines (Draft) become findings, linked to their causes, root causes first.

Shared by rescue analyze (lines of logs) and rescue check-image (modules missing from an image).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rescue.diagnose.rules import RULE_ORDER, RULES, RULES_BY_ID, Cause, Context, Rule
from rescue.diagnose.rules.base import CLEARED

SEVERITIES = ("error", "warning", "info")

MAX_EVIDENCE = 12  # per finding; a flood of identical lines proves nothing more
MAX_PARAMS = 50  # values kept per param (symbols, modules) of one finding


# Data model ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    file: str
    line: int  # 1-based line number in that file
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "text": self.text}


@dataclass
class Finding:
    id: str
    severity: str
    title: str
    evidence: list[Evidence] = field(default_factory=list)
    fix: dict[str, str] = field(default_factory=dict)
    caused_by: str | None = None
    params: dict[str, list[str]] = field(default_factory=dict)  # what the evidence named: module, symbol...
    omitted: int = 0  # evidence lines beyond MAX_EVIDENCE
    cause: Finding | None = field(default=None, repr=False, compare=False)  # the finding caused_by names

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "severity": self.severity,
            "title": self.title,
            "evidence": [e.to_json() for e in self.evidence],
            "evidence_omitted": self.omitted,
            "fix": dict(self.fix),
            "caused_by": self.caused_by,
            "params": {k: list(v) for k, v in sorted(self.params.items())},
        }


@dataclass
class Draft:
    """The lines one rule matched, and the values they named, before they become a finding."""

    rule: Rule
    evidence: list[Evidence] = field(default_factory=list)
    params: dict[str, dict[str, None]] = field(default_factory=dict)  # ordered sets
    raised: bool = False  # a non-support line matched
    omitted: int = 0
    seen: set[str] = field(default_factory=set)
    # support lines that are a finding of another rule if nothing raises this one: (id, line, params)
    otherwise: list[tuple[str, Evidence, dict[str, str | None]]] = field(default_factory=list)

    def add(
        self,
        ev: Evidence,
        groups: dict[str, str | None],
        support: bool,
        same: str | None = None,
        otherwise: str | None = None,
    ) -> None:
        self.raised |= not support
        if support and otherwise:
            self.otherwise.append((otherwise, ev, groups))
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


def _title(rule: Rule, params: dict[str, list[str]]) -> str:
    values = {
        k: ", ".join(v[:3]) + (f" (+{len(v) - 3} more)" if len(v) > 3 else "") for k, v in params.items()
    }

    class _Default(dict[str, str]):
        def __missing__(self, key: str) -> str:
            return "?"

    return rule.title.format_map(_Default(values))


def build_findings(
    drafts: Iterable[Draft], ctx: Context, defaults: dict[str, str] | None = None
) -> list[Finding]:
    """Turn matched lines into findings, link consequences to causes, order root causes first."""
    findings: list[Finding] = []
    for d in settle(list(drafts), defaults or {}):
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


_DERIVED = tuple(r for r in RULES if r.promote is not None and r.promote.derive)


def settle(drafts: list[Draft], defaults: Mapping[str, str] | None = None) -> list[Draft]:
    """The one place where lines of different rules weigh on each other (Rule.promote, Rule.yields_to,
    rules.base.clears): drafts of a cleared rule go, support lines are promoted, moot findings yield.
    `defaults` are what the capture says (build_findings), for a Promote.fits to weigh."""
    cleared = {d.rule.id for d in drafts if CLEARED in d.params}
    drafts = [d for d in drafts if d.rule.id not in cleared]
    have = {d.rule.id for d in drafts}
    drafts += [Draft(r) for r in _DERIVED if r.id not in have and r.id not in cleared]
    for d in drafts:
        p = d.rule.promote
        if d.raised or p is None:
            continue
        given = [o for o in drafts if o.raised and o.rule.id in p.given]
        if p.given and not given:
            continue
        told = _told(given, defaults or {})
        for other in drafts:
            if other is d or not other.raised or other.rule.id not in p.ids:
                continue
            values = other.params.get(p.param, {}) if p.param else {"": None}
            named = [v for v in values if p.admits(v, told)]
            if not named:
                continue
            d.raised = True
            if p.derive and p.param and p.values is not None:
                d.params.setdefault(p.param, {}).update((v, None) for v in named)
                # the lines that name it (the mount of /sysroot, not the file system's own complaints)
                shown = [e for e in other.evidence if any(v in e.text for v in named)] or other.evidence
                d.evidence.extend(e for e in shown if e not in d.evidence)
            if p.absorb:
                other.raised = False
                d.evidence.extend(e for e in other.evidence if e not in d.evidence)
                for key, found in other.params.items():
                    d.params.setdefault(key, {}).update(found)
    drafts += _otherwise(drafts)
    raised = [d for d in drafts if d.raised]
    return [d for d in drafts if not any(_yields(d, to, raised) for to in d.rule.yields_to)]


def _told(given: list[Draft], defaults: Mapping[str, str]) -> dict[str, list[str]]:
    """What the findings a Promote is given name, and what the capture says where their lines do not."""
    told: dict[str, list[str]] = {}
    for o in given:
        for key, found in o.params.items():
            told.setdefault(key, []).extend(found)
        for key in o.rule.from_context:
            if key not in o.params and key in defaults:
                told.setdefault(key, []).append(defaults[key])
    return told


def _yields(d: Draft, to: str | Cause, raised: list[Draft]) -> bool:
    """Whether a raised finding makes this one moot: any of rule `to`, or of a Cause whose params agree."""
    cause = Cause(to) if isinstance(to, str) else to
    return any(o.rule.id == cause.id and _agree(d.params, o.params, cause) for o in raised)


def _otherwise(drafts: list[Draft]) -> list[Draft]:
    """Support lines of a rule nothing raised, that say a failure of their own (btrfs.ko that cannot be
    inserted for a symbol it does not name): findings of the rule their Match names."""
    made: dict[tuple[str, tuple[str, ...]], Draft] = {}
    for d in drafts:
        if d.raised:
            continue
        for rule_id, ev, groups in d.otherwise:
            rule = RULES_BY_ID[rule_id]
            key = (rule.id, tuple(groups.get(g) or "" for g in rule.group_by))
            made.setdefault(key, Draft(rule)).add(ev, groups, support=False)
    return list(made.values())


def link(findings: list[Finding]) -> None:
    for f in findings:
        rule = RULES_BY_ID.get(f.id)
        for cause in rule.caused_by if rule else ():
            agree = (c for c in findings if c is not f and _agree(f.params, c.params, cause))
            found = next((c for c in agree if c.id == cause.id), None)
            if found:
                f.caused_by, f.cause = cause.id, found
                break


def _agree(mine: Mapping[str, Iterable[str]], theirs: Mapping[str, Iterable[str]], cause: Cause) -> bool:
    """Params that the cause's `same` pairs share a value, or one side does not know it (unless `known`)."""
    for key, their_key in cause.same:
        a, b = set(mine.get(key, ())), set(theirs.get(their_key, ()))
        if (a and b and not a & b) or (cause.known and not (a and b)):
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

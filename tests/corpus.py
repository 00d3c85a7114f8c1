"""Score `rescue analyze` on the real boot logs in tests/data/public (INDEX.tsv says what each must find).

A log is right when every expected id is among the findings and no must-not id is; a decoy (nothing
expected) is right when no error-severity finding is raised and no must-not id is. `python -m tests.corpus`
prints the score per class and what each wrong log got; tests/unit/test_public_corpus.py holds the bar
(OVERALL_BAR, CLASS_BAR).
"""

from __future__ import annotations

import csv
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from rescue.diagnose.analyze import analyze_path

CORPUS = Path(__file__).resolve().parent / "data" / "public"
DECOY = "(decoy)"


@dataclass(frozen=True)
class Case:
    file: str
    source: str
    expected: frozenset[str]
    must_not: frozenset[str]
    note: str


@dataclass(frozen=True)
class Result:
    case: Case
    found: frozenset[str]  # ids of every finding
    errors: frozenset[str]  # ids of error-severity findings

    @property
    def right(self) -> bool:
        if self.found & self.case.must_not:
            return False
        if not self.case.expected:
            return not self.errors
        return self.case.expected <= self.found


def _ids(text: str) -> frozenset[str]:
    return frozenset(w.strip() for w in text.split(",") if w.strip())


def cases() -> list[Case]:
    with (CORPUS / "INDEX.tsv").open(newline="") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [
            Case(r["file"], r["source"], _ids(r["expected"]), _ids(r["must_not"]), r["note"]) for r in rows
        ]


def run(case: Case) -> Result:
    report = analyze_path(CORPUS / case.file)
    found = frozenset(f.id for f in report.findings)
    errors = frozenset(f.id for f in report.findings if f.severity == "error")
    return Result(case, found, errors)


def by_class(results: list[Result]) -> dict[str, tuple[int, int]]:
    """class -> (right, total); decoys under DECOY."""
    table: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in results:
        for cls in r.case.expected or {DECOY}:
            table[cls][0] += r.right
            table[cls][1] += 1
    return {k: (v[0], v[1]) for k, v in sorted(table.items())}


OVERALL_BAR = 0.95  # of all logs right
CLASS_BAR = 0.80  # of each class's logs right, for a class with at least CLASS_MIN logs
CLASS_MIN = 4


def score(results: list[Result]) -> str:
    """The score, per class, then every wrong log under its class: want -> got."""
    right = sum(r.right for r in results)
    out = [f"overall: {right}/{len(results)} = {right / len(results):.1%}"]
    for cls, (ok, total) in by_class(results).items():
        out.append(f"  {cls:28} {ok:3}/{total:<3} {ok / total:6.1%}")
    out.append("confusion per class (want -> got):")
    wrong: dict[str, list[str]] = defaultdict(list)
    for r in results:
        if not r.right:
            got = ",".join(sorted(r.found)) or "-"
            for cls in r.case.expected or {DECOY}:
                wrong[cls].append(f"{r.case.file}: -> {got}")
    for cls in sorted(wrong):
        out.append(f"  {cls}:")
        out.extend(f"    {line}" for line in wrong[cls])
    return "\n".join(out)


def below_bar(results: list[Result]) -> list[str]:
    """What misses the bar: the overall score, and each class of CLASS_MIN logs or more."""
    misses = []
    right = sum(r.right for r in results)
    if right < OVERALL_BAR * len(results):
        misses.append(f"overall {right}/{len(results)} below {OVERALL_BAR:.0%}")
    for cls, (ok, total) in by_class(results).items():
        if total >= CLASS_MIN and ok < CLASS_BAR * total:
            misses.append(f"{cls} {ok}/{total} below {CLASS_BAR:.0%}")
    return misses


def main() -> int:
    results = [run(c) for c in cases()]
    print(score(results))
    if "-v" in sys.argv:
        confusions: Counter[tuple[str, str]] = Counter()
        for r in results:
            if not r.right:
                want = ",".join(sorted(r.case.expected)) or DECOY
                confusions[(want, ",".join(sorted(r.found)) or "-")] += 1
        print("confusions (want -> got):")
        for (want, got), n in confusions.most_common():
            print(f"  {n:3} {want} -> {got}")
    for miss in below_bar(results):
        print(f"BELOW THE BAR: {miss}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

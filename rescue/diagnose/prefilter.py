"""Which lines of a log could hold a rule's needle: found over the whole text at once, so a 100,000-line
log costs two regex scans instead of a search per line.

Python's re has no multi-literal search (no Aho-Corasick): an alternation of a hundred literals, even as a
trie, tries its branches at every position of the text. What it does fast is skip to the next character of
a small set. So each needle is anchored at its rarest character (by how often characters occur in boot
logs), the pattern starts with that character and checks the rest of the needle around it (a lookbehind
for the part before). The needles are split in two patterns: those with a character rare in logs
(capitals, quotes, '!') and the rest (lowercase words, anchored at their rarest letter), so the common
anchors of the second do not slow the first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Printable ASCII from the most to the least frequent in boot logs (counted over the recorded boots, the
# captures and the public corpus under tests/). Characters not listed (non-ASCII) count as the rarest.
_BY_FREQUENCY = (
    " 0eitroasn1d.c:fl[26]mpu843g59b7x-yhvP>SI_C<A/kMRB,()ETwDONFUK=L'qXz;`VHG+WjQ\"*#@Y\\?J!|Z~$%{}&^"
)
_RANK = {ch: i for i, ch in enumerate(_BY_FREQUENCY)}
# From here on a character is rare in logs: a needle holding one goes to the first pattern.
_RARE_FROM = _BY_FREQUENCY.index("R")
_RARE_TOO = frozenset("PSCIA")  # capitals that start many needles, each well under 1% of a log


def _rarity(ch: str) -> int:
    return _RANK.get(ch, len(_BY_FREQUENCY))


def _is_rare(ch: str) -> bool:
    return _rarity(ch) >= _RARE_FROM or ch in _RARE_TOO


def anchor(word: str) -> int:
    """Where a literal is anchored: its rarest character in logs (the latest of equals)."""
    return max(range(len(word)), key=lambda k: (_rarity(word[k]), -k))


def literals_pattern(words: Iterable[str]) -> re.Pattern[str]:
    """One regex matching exactly where any of the literals occurs, starting at each one's anchor, so re
    only stops at characters of that small set. At a stop each literal's part after the anchor is tried
    first (most fail at its first character), the part before it last, as a lookbehind."""
    groups: dict[str, set[tuple[str, str]]] = {}
    for w in words:
        i = anchor(w)
        groups.setdefault(w[i], set()).add((w[:i], w[i + 1 :]))
    if not groups:
        return re.compile(r"(?!)")  # matches nothing
    branches = []
    for ch, parts in sorted(groups.items()):
        alts = [
            re.escape(after) + (f"(?<={re.escape(before + ch + after)})" if before else "")
            for before, after in sorted(parts, key=lambda p: (p[1] == "", p[1]))
        ]
        branches.append(re.escape(ch) + "(?:" + "|".join(alts) + ")")
    return re.compile("|".join(branches))


class Prefilter:
    """The lines of a text where one of the literals occurs."""

    def __init__(self, words: Iterable[str]) -> None:
        words = {w for w in words if w}
        rare = {w for w in words if any(_is_rare(ch) for ch in w)}
        self.patterns = [literals_pattern(part) for part in (rare, words - rare) if part]

    def lines(self, text: str, also: str = "\x1b") -> list[tuple[int, str, int]]:
        """(0-based number, text, offset of its end) of the lines ("\\n"-separated) that hold a literal, or
        the character `also` (what a caller must look at more closely), in order."""
        starts = {m.start() for p in self.patterns for m in p.finditer(text)}
        pos = text.find(also)
        while pos != -1:
            starts.add(pos)
            pos = text.find(also, pos + 1)
        out: list[tuple[int, str, int]] = []
        line, counted, end = 0, 0, -1
        for pos in sorted(starts):
            if pos <= end:
                continue  # on the line just taken
            line += text.count("\n", counted, pos)
            counted = pos
            begin = text.rfind("\n", 0, pos) + 1
            end = text.find("\n", pos)
            end = len(text) if end == -1 else end
            out.append((line, text[begin:end], end))
        return out

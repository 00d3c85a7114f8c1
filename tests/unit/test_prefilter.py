"""The prefilter finds exactly the lines a search per line would: every literal, wherever its anchor sits,
overlapping literals, lines at the start and end of the text, colour lines."""

from __future__ import annotations

import random

from rescue.diagnose.prefilter import Prefilter, anchor, literals_pattern
from rescue.diagnose.scan import _FAILURE_WORDS, _HINT_LITERALS, _needles

WORDS = sorted(_needles("log") | {*_HINT_LITERALS, *_FAILURE_WORDS})
PATTERN = literals_pattern(WORDS)
PREFILTER = Prefilter(WORDS)


def _naive(text: str, words: list[str]) -> list[int]:
    return [i for i, line in enumerate(text.split("\n")) if "\x1b" in line or any(w in line for w in words)]


def test_every_literal_is_found_where_it_is() -> None:
    for w in WORDS:
        for text in (w, f"x{w}y", f"noise\n[    1.0] {w}\nmore", f"{w}\n", w + w):
            assert PATTERN.search(text), (w, text)
            assert [n for n, _, _ in PREFILTER.lines(text)] == _naive(text, WORDS), (w, text)


def test_the_part_before_the_anchor_must_be_there_too() -> None:
    for w in WORDS:
        i = anchor(w)
        if i == 0:
            continue
        broken = w[: i - 1] + "\x00" + w[i:]  # the anchor and all after it, one character before it wrong
        assert not literals_pattern([w]).search(broken), w


def test_random_logs_give_the_lines_a_search_per_line_gives() -> None:
    rng = random.Random(10)
    alphabet = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:[]()'\"-_/!@\x1b\r"
    for _ in range(200):
        lines = []
        for _ in range(rng.randrange(1, 30)):
            parts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))]
            if rng.random() < 0.3:  # a literal, sometimes cut short or glued to another
                w = rng.choice(WORDS)
                parts.append(w[: rng.randrange(1, len(w) + 1)] if rng.random() < 0.3 else w)
                if rng.random() < 0.2:
                    parts.append(rng.choice(WORDS))
            lines.append("".join(parts))
        text = "\n".join(lines)
        got = PREFILTER.lines(text)
        assert [n for n, _, _ in got] == _naive(text, WORDS)
        assert all(line == text.split("\n")[n] for n, line, _ in got)
        assert all(text[end : end + 1] in ("\n", "") and text[:end].endswith(line) for _, line, end in got)

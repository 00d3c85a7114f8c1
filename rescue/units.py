"""Sizes as people write and read them: parse_size('4G') and human_size(1536) -> '1.5 KiB'."""

from __future__ import annotations

import re

from rescue.errors import RescueError

_SIZE = re.compile(r"(\d+)\s*([kmgt]?)(i?b)?", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """'512M', '4G', '64KiB', '1000' -> bytes (binary units)."""
    if isinstance(text, int):
        return text
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise RescueError(f"bad size {text!r}", hint="use a number with an optional K, M, G or T suffix")
    return int(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " ")  # type: ignore[no-any-return]


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"

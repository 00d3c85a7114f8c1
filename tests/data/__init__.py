"""Test data recorded from real boots, and what the tests read back from it."""

from __future__ import annotations

import re
from pathlib import Path

ANALYZE = Path(__file__).parent / "analyze"


def kernel_of(log: Path) -> str:
    """The kernel a recorded boot ran (its `Linux version X` line): tests take it from the data, never
    write it down, so re-recording on another kernel needs no edit."""
    found = re.search(r"Linux version (\S+)", log.read_text(errors="replace"))
    if found is None:
        raise ValueError(f"{log}: no 'Linux version' line")
    return found.group(1)


# The kernel of the qemu boots recorded under tests/data/analyze (a Debian 6.1 cloud kernel).
RECORDED_KERNEL = kernel_of(ANALYZE / "btrfs-crc32c-missing.console.log")

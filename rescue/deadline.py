"""A deadline as a value: how long is left and whether it has passed, under one monotonic clock.

Every wait that may take several steps (reads of a console, polls of a condition, a drain) holds one
Deadline instead of redoing `end - time.monotonic()` arithmetic at each step (labgrid's Timeout).
"""

from __future__ import annotations

import time


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    @property
    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.end - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.end

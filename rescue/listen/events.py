"""Where the listener's events go: JSON lines on stdout (--json) or human lines, plus an optional log file."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from rescue.capture.manifest import Manifest
from rescue.units import human_size

PLAIN_PROGRESS_EVERY = 10.0  # seconds between progress lines when the output is not a terminal


class Events:
    def __init__(self, *, json_events: bool, log: Path | None) -> None:
        self.json_events = json_events
        self.out: TextIO = sys.stdout
        # With --json, stdout carries only events; the words for people go to stderr.
        self.human: TextIO = sys.stderr if json_events else sys.stdout
        self._log_path = log
        self._last_plain_progress = float("-inf")
        self._log: TextIO | None = None
        self.reopen_log()

    def reopen_log(self) -> None:
        """Open (again) the log file; after a rotation on SIGHUP this starts the new file."""
        if self._log:
            self._log.close()
            self._log = None
        if self._log_path:
            try:
                self._log = self._log_path.open("a", buffering=1)
            except OSError as e:
                self.say(f"warning: cannot open log {self._log_path}: {e.strerror}")

    def say(self, line: str) -> None:
        # A full disk under the log or the journal must not stop the listener: the line is lost, not more.
        with contextlib.suppress(OSError):
            print(line, file=self.human, flush=True)
            if self._log:
                self._log.write(time.strftime("%Y-%m-%dT%H:%M:%S ") + line + "\n")

    def event(self, name: str, text: str | None = None, /, **fields: Any) -> None:
        """One event: a JSON line with --json, and its human text (if any) for people and the log."""
        # Words first: whoever reacts to the event finds the log already written.
        if text is not None:
            self.say(text)
        if self.json_events:
            print(json.dumps({"event": name, **fields}, ensure_ascii=False), file=self.out, flush=True)

    def progress(self, text: str) -> None:
        """A progress line: rewritten in place on a terminal; elsewhere (a log, a journal) one line every
        PLAIN_PROGRESS_EVERY seconds, so a long transfer shows it is alive without flooding the log."""
        if self.human.isatty():
            print("\r\033[K" + text, end="", file=self.human, flush=True)
        elif time.monotonic() - self._last_plain_progress >= PLAIN_PROGRESS_EVERY:
            self._last_plain_progress = time.monotonic()
            self.say(text)

    def end_progress(self) -> None:
        if self.human.isatty():
            print("\r\033[K", end="", file=self.human, flush=True)


def capture_summary(path: Path, m: Manifest, root: Path) -> str:
    """One line (two with a diagnosis) for a finished capture, as the `capture` event says it."""
    try:
        where = path.relative_to(root)
    except ValueError:
        where = path
    total = sum(f.bytes for f in m.files)
    parts = [f"{where}: {m.status}", f"{len(m.files)} file(s), {human_size(total)}"]
    if m.sha256sums != "absent":
        parts.append(f"SHA256SUMS {m.sha256sums}")
    if m.reason:
        parts.append(m.reason)
    line = "; ".join(parts)
    headline = (m.analysis or {}).get("headline")
    return f"{line}\n  -> {headline}" if headline else line

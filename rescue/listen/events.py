"""Where the listener's events go: JSON lines on stdout (--json) or human lines, plus an optional log file."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from rescue.capture.manifest import Manifest
from rescue.units import human_size

PLAIN_PROGRESS_EVERY = 10.0  # seconds between progress lines when the output is not a terminal


class Events:
    """The listener's own output. Writing it must never stop the receiving: a stream that fails (a closed
    pipe, a full disk under the log) is dropped, and that is said once on what still works."""

    def __init__(self, *, json_events: bool, log: Path | None) -> None:
        self.json_events = json_events
        self.out: TextIO | None = sys.stdout
        # With --json, stdout carries only events; the words for people go to stderr.
        self.human: TextIO | None = sys.stderr if json_events else sys.stdout
        self._log_path = log
        self._last_plain_progress = float("-inf")
        self._log: TextIO | None = None
        self.reopen_log()

    def reopen_log(self) -> None:
        """Open (again) the log file; after a rotation on SIGHUP this starts the new file."""
        if self._log:
            with contextlib.suppress(OSError, ValueError):
                self._log.close()
            self._log = None
        if self._log_path:
            try:
                self._log = self._log_path.open("a", buffering=1)
            except OSError as e:
                self.say(f"warning: cannot open log {self._log_path}: {e.strerror}")

    def _write(self, stream: TextIO | None, text: str) -> bool:
        if stream is None:
            return False
        try:
            stream.write(text)
            stream.flush()
            return True
        except (OSError, ValueError) as e:
            self._lost(stream, e)
            return False

    def _lost(self, stream: TextIO, e: Exception) -> None:
        """Drop a failed output for good (the log until the next SIGHUP) and say so once elsewhere."""
        why = getattr(e, "strerror", None) or str(e)
        _silence(stream)
        if stream is self._log:
            self._log = None
            self._write(self.human, f"rescue: warning: cannot write the log {self._log_path} ({why}); "
                        "logging stops until SIGHUP reopens it; still receiving\n")  # fmt: skip
            return
        name = "stdout" if stream is sys.stdout else "stderr"
        if stream is self.out:
            self.out = None
        if stream is self.human:
            self.human = None
        note = f"warning: cannot write {name} ({why}); still receiving"
        for other in (self.human, sys.stderr, self.out):
            if other is not None and other is not stream and self._write(other, f"rescue: {note}\n"):
                break
        if self._log:
            self._write(self._log, time.strftime("%Y-%m-%dT%H:%M:%S ") + note + "\n")

    def say(self, line: str) -> None:
        self._write(self.human, line + "\n")
        if self._log:
            self._write(self._log, time.strftime("%Y-%m-%dT%H:%M:%S ") + line + "\n")

    def event(self, name: str, text: str | None = None, /, **fields: Any) -> None:
        """One event: a JSON line with --json, and its human text (if any) for people and the log."""
        # Words first: whoever reacts to the event finds the log already written.
        if text is not None:
            self.say(text)
        if self.json_events:
            self._write(self.out, json.dumps({"event": name, **fields}, ensure_ascii=False) + "\n")

    def _tty(self) -> bool:
        try:
            return self.human is not None and self.human.isatty()
        except (OSError, ValueError):
            return False

    def progress(self, text: str) -> None:
        """A progress line: rewritten in place on a terminal; elsewhere (a log, a journal) one line every
        PLAIN_PROGRESS_EVERY seconds, so a long transfer shows it is alive without flooding the log."""
        if self._tty():
            self._write(self.human, "\r\033[K" + text)
        elif time.monotonic() - self._last_plain_progress >= PLAIN_PROGRESS_EVERY:
            self._last_plain_progress = time.monotonic()
            self.say(text)

    def end_progress(self) -> None:
        if self._tty():
            self._write(self.human, "\r\033[K")


def _silence(stream: TextIO) -> None:
    """Point a failed stream's descriptor at /dev/null: what it still buffers (and Python's flush at
    exit) then goes nowhere instead of raising again."""
    with contextlib.suppress(OSError, ValueError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, stream.fileno())
        os.close(null)


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

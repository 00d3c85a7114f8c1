"""Drive a serial console (a booted VM, or any program on a pty) with pexpect.

Every wait has one monotonic deadline, however many reads it takes. Commands are framed by markers that
are split in the typed text ('RSC-B''EGIN-x'), so the terminal's echo of the command can never match the
marker the shell prints. Everything read is kept in the log, which goes with every error.
"""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import pexpect

from rescue.deadline import Deadline
from rescue.errors import RescueError

LOG_TAIL_LINES = 40


class ConsoleError(RescueError):
    """A console wait failed; carries the whole console log (the message has its tail)."""

    def __init__(self, message: str, log: str, log_path: Path | None = None) -> None:
        tail = "\n".join(log.splitlines()[-LOG_TAIL_LINES:])
        where = f" (full log: {log_path})" if log_path else ""
        super().__init__(f"{message}{where}\n--- console, last lines ---\n{tail}")
        self.log = log


class _Tee:
    """pexpect's logfile_read: keep everything in memory and, when asked, in a file as it arrives."""

    def __init__(self, path: Path | None) -> None:
        self.buffer = io.StringIO()
        self.file: TextIO | None = path.open("w", encoding="utf-8", errors="replace") if path else None

    def write(self, data: str) -> None:
        self.buffer.write(data)
        if self.file:
            self.file.write(data)

    def flush(self) -> None:
        if self.file:
            self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()


Pattern = str | re.Pattern[str]


class Console:
    def __init__(self, child: Any, tee: _Tee, log_path: Path | None = None) -> None:
        self.child = child
        self._tee = tee
        self.log_path = log_path
        self.prompt: str | None = None
        self.exitstatus: int | None = None

    @classmethod
    def spawn(cls, argv: Sequence[str], *, log_path: Path | None = None, env: dict[str, str] | None = None
              ) -> Console:  # fmt: skip
        tee = _Tee(log_path)
        try:
            child = pexpect.spawn(argv[0], list(argv[1:]), encoding="utf-8", codec_errors="replace",
                                  echo=False, env=env, dimensions=(50, 500))  # fmt: skip
        except pexpect.ExceptionPexpect as e:
            tee.close()
            raise RescueError(f"cannot start {argv[0]}: {e}") from None
        child.logfile_read = tee
        return cls(child, tee, log_path)

    @property
    def log(self) -> str:
        return self._tee.buffer.getvalue()

    def fail(self, message: str) -> ConsoleError:
        self._tee.flush()
        return ConsoleError(message, self.log, self.log_path)

    def expect(self, patterns: Sequence[Pattern], timeout: float, *, eof_ok: bool = False,
               nudge_idle: float | None = None) -> tuple[int, re.Match[str] | None]:  # fmt: skip
        """Wait until one of patterns appears: (its index, the match). EOF is index len(patterns) if eof_ok.

        One deadline for the whole wait. With nudge_idle, a newline is sent each time the console has been
        quiet that long (a prompt printed before we started listening shows up again).
        """
        deadline = Deadline(timeout)
        want = [*patterns, pexpect.EOF, pexpect.TIMEOUT]
        while True:
            left = deadline.remaining
            if deadline.expired:
                raise self.fail(f"timed out after {timeout:g}s waiting for {_describe(patterns)}")
            step = min(left, nudge_idle) if nudge_idle else left
            seen = self._tee.buffer.tell()
            index = self.child.expect(want, timeout=step)
            if index < len(patterns):
                match = self.child.match
                return index, match if isinstance(match, re.Match) else None
            if index == len(patterns):  # EOF
                self._reap()
                if eof_ok:
                    return index, None
                raise self.fail(f"console closed (exit status {self.exitstatus}) while waiting for "
                                f"{_describe(patterns)}")  # fmt: skip
            if nudge_idle and self._tee.buffer.tell() == seen:  # quiet for a whole step: nudge
                self.child.send("\n")

    def wait_for(self, pattern: Pattern, timeout: float, **kw: Any) -> re.Match[str] | None:
        return self.expect([pattern], timeout, **kw)[1]

    def send(self, text: str) -> None:
        self.child.send(text)

    def sendline(self, text: str) -> None:
        self.child.send(text + "\n")

    def setup_shell(self, prompt: Pattern, timeout: float) -> None:
        """At a shell prompt: switch off echo and \\n->\\r\\n, set a prompt nothing else prints."""
        self.wait_for(prompt, timeout, nudge_idle=2.0)
        token = uuid.uuid4().hex[:10]
        self.prompt = f"RSC-PS1-{token}# "
        # The quotes split the prompt in the typed text, so only the shell's own prompt matches.
        self.sendline(f"stty -echo -onlcr; PS1='RSC-P''S1-{token}# '")
        self.wait_for(re.escape(self.prompt), timeout)

    def run(self, command: str, timeout: float = 30) -> tuple[str, int]:
        """Run one shell command line; its output (with \\r dropped) and its exit status."""
        token = uuid.uuid4().hex[:10]
        self.sendline(f"echo 'RSC-B''EGIN-{token}'; {command}; printf 'RSC-E''ND-{token} %s\\n' \"$?\"")
        pattern = re.compile(rf"RSC-BEGIN-{token}\r*\n(.*?)RSC-END-{token} (\d+)\r*\n", re.DOTALL)
        match = self.wait_for(pattern, timeout)
        assert match is not None
        return match.group(1).replace("\r", ""), int(match.group(2))

    def run_check(self, command: str, timeout: float = 30) -> str:
        output, status = self.run(command, timeout)
        if status != 0:
            raise self.fail(f"{command!r} exited {status}: {output.strip()[-500:]}")
        return output

    def wait_exit(self, timeout: float) -> int | None:
        """Wait for the program to end (qemu exits on guest reboot or panic with -no-reboot)."""
        self.expect([], timeout, eof_ok=True)
        return self.exitstatus

    def _reap(self) -> None:
        # After EOF the program has closed the pty; it is exiting or gone, so this wait is short.
        self.child.wait()
        self.exitstatus = (
            self.child.exitstatus if self.child.exitstatus is not None else self.child.signalstatus
        )

    def close(self) -> None:
        """Stop the program: SIGHUP/SIGINT then SIGKILL (pexpect's order) if it is still running."""
        try:
            if self.child.isalive():
                self.child.close(force=True)
            else:
                self.child.close()
            self._reap()
        finally:
            self._tee.close()


def _describe(patterns: Sequence[Pattern]) -> str:
    if not patterns:
        return "the end"
    return " or ".join(repr(p.pattern if isinstance(p, re.Pattern) else p) for p in patterns)

"""The one way this project runs other programs: argv lists, never a shell."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from rescue.errors import RescueError


def run(
    argv: Sequence[str | Path],
    *,
    check: bool = True,
    capture: bool = True,
    input: bytes | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv; on failure raise RescueError naming the command and its last line of stderr."""
    args = [str(a) for a in argv]
    try:
        proc = subprocess.run(
            args, input=input, cwd=cwd, env=env, timeout=timeout, capture_output=capture, check=False
        )
    except FileNotFoundError:
        raise RescueError(f"{args[0]}: command not found", hint="run 'make deps' to install it") from None
    except subprocess.TimeoutExpired:
        raise RescueError(f"{shlex.join(args)}: timed out after {timeout}s") from None
    if check and proc.returncode != 0:
        err = (proc.stderr or b"").decode(errors="replace").strip().splitlines()
        last = err[-1] if err else f"exit status {proc.returncode}"
        raise RescueError(f"{shlex.join(args)} failed: {last}")
    return proc

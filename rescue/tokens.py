"""The token a listener requires and hooks and replay send: never on a command line if it can be helped.

`ps` and /proc/PID/cmdline show every argument to every user, so the token comes from a file (--token-file,
systemd's credentials) or the environment (RESCUE_TOKEN); --token still works and says what it costs.
"""

from __future__ import annotations

import hmac
import re
import sys
from pathlib import Path

from rescue.errors import RescueError

TOKEN_ENV = "RESCUE_TOKEN"
TOKEN = re.compile(r"[!-~]{1,256}")  # printable, no spaces: it travels as one header word


def warn_visible_token() -> None:
    print(
        "rescue: warning: --token shows the token to every user of this machine (ps, /proc);"
        f" use --token-file FILE or {TOKEN_ENV}",
        file=sys.stderr,
    )


def read_token_file(path: Path) -> str | None:
    """The token in a file (surrounding white space ignored); None when the file is empty."""
    try:
        with path.open("rb") as f:
            data = f.read(4097)
    except OSError as e:
        raise RescueError(f"cannot read token file {path}: {e.strerror}") from None
    text = data.decode("utf-8", errors="replace").strip()
    if len(data) > 4096 or (text and not TOKEN.fullmatch(text)):
        raise RescueError(f"token file {path}: not a token", hint="one word of printable characters")
    return text or None


def token_problem(want: str | None, header: dict[str, str] | None) -> str | None:
    """None when a stream with this header may be kept; else why not. Any doubt refuses: the check never
    fails open."""
    if not want:
        return None
    got = (header or {}).get("token", "")
    try:
        if hmac.compare_digest(got.encode(), want.encode()):
            return None
    except Exception:  # a token of a strange type must refuse, not wave the stream through
        return "the token could not be checked"
    return "wrong token" if got else "missing token"

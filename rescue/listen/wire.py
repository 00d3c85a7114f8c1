"""The wire format, both directions: stream kinds on the one port, told apart by their first bytes, and the
`RESCUE/1` header line (read by the listener, written by replay).

- header: a first line `RESCUE/1 key=value ...`, then a body of any other kind;
- tar: ustar magic at offset 257; gzip: gzip magic (a gzip'd tar, or a gzip'd file);
- raw: anything else, e.g. `cat dmesg.txt | nc HOST PORT`.
"""

from __future__ import annotations

import re
from typing import Any

HEADER_MAGIC = b"RESCUE/"
HEADER_VERSION = b"RESCUE/1"
MAX_HEADER = 4096
TAR_MAGIC_OFFSET = 257
GZIP_MAGIC = b"\x1f\x8b"
_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
_DMESG_START = re.compile(rb"^(<\d+>)?(\[\s*\d+\.\d+\]|Linux version )")


MAX_VALUE = 256


def detect_kind(prefix: bytes, eof: bool, *, header_allowed: bool = True) -> str | None:
    """ "header", "tar", "gzip" or "raw"; None while more bytes are needed to tell.

    After a header line the body is told without header_allowed: a body that happens to start with
    `RESCUE/` is data, not a second header.
    """
    if header_allowed and prefix[: len(HEADER_MAGIC)] == HEADER_MAGIC[: len(prefix)] and prefix:
        if b"\n" in prefix[:MAX_HEADER]:
            return "header"
        if len(prefix) < MAX_HEADER and not eof:
            return None
        return "raw"  # no line end where a header would have one: plain data after all
    if prefix.startswith(GZIP_MAGIC):
        return "gzip"
    if len(prefix) >= TAR_MAGIC_OFFSET + 5:
        return "tar" if prefix[TAR_MAGIC_OFFSET : TAR_MAGIC_OFFSET + 5] == b"ustar" else "raw"
    if eof:
        return "raw"
    if len(prefix) < 2 and GZIP_MAGIC.startswith(prefix):
        return None
    return None


def parse_header(line: bytes) -> tuple[dict[str, str], list[str]]:
    """`RESCUE/1 name=x token=y` -> ({"name": "x", "token": "y"}, problems).

    Never fails: a field that cannot be read is left out and named in problems by its position only,
    since its text may hold a secret (a `Token=...` typed with a capital). Whether the stream is kept is
    the token's decision alone, not the header's form.
    """
    words = line.split()
    problems: list[str] = []
    if not words or words[0] != HEADER_VERSION:
        problems.append("the header line does not start with RESCUE/1")
    fields: dict[str, str] = {}
    for n, raw in enumerate(words[1:], start=1):
        try:
            word = raw.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"header field {n} is not UTF-8")
            continue
        key, eq, value = word.partition("=")
        if not eq:
            problems.append(f"header field {n} has no '=' (a value with a space?)")
        elif not _KEY.fullmatch(key):
            problems.append(f"header field {n} has a malformed key (lower case letters, digits, _)")
        elif key in fields:
            problems.append(f"header field {n} repeats a key; the first one counts")
        else:
            if len(value) > MAX_VALUE:
                problems.append(f"header field {n} is longer than {MAX_VALUE} characters (cut)")
            fields[key] = value[:MAX_VALUE]
    return fields, problems


def looks_like_dmesg(prefix: bytes) -> bool:
    return bool(_DMESG_START.match(prefix.lstrip(b"\r\n")))


def header_line(header: dict[str, Any], token: str | None) -> bytes:
    """The `RESCUE/1 key=value ...` line for these fields (a token replaces any stored one)."""
    fields = {k: str(v).replace(" ", "_") for k, v in header.items() if k != "token"}
    if token:
        fields["token"] = token
    return ("RESCUE/1" + "".join(f" {k}={v}" for k, v in fields.items()) + "\n").encode()

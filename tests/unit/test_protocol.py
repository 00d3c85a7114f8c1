from __future__ import annotations

import pytest

from rescue.listen.wire import detect_kind, looks_like_dmesg, parse_header

TAR_HEAD = b"dmesg.txt".ljust(257, b"\0") + b"ustar\x0000"


@pytest.mark.parametrize(
    ("prefix", "eof", "kind"),
    [
        (b"RESCUE/1 name=x\nbody", False, "header"),
        (b"RESCUE/1 name=x", False, None),  # the line has not ended yet
        (b"RESC", False, None),
        (b"RESCUE/1 no newline at all", True, "raw"),
        (b"\x1f\x8b\x08\x00", False, "gzip"),
        (TAR_HEAD, False, "tar"),
        (b"x" * 300, False, "raw"),
        (b"[    0.000000] Linux", False, None),  # could still be a tar: ustar sits at 257
        (b"[    0.000000] Linux", True, "raw"),
        (b"\x1f", False, None),
    ],
)
def test_detect_kind(prefix: bytes, eof: bool, kind: str | None) -> None:
    assert detect_kind(prefix, eof) == kind


def test_a_header_line_longer_than_the_limit_is_plain_data() -> None:
    assert detect_kind(b"RESCUE/" + b"a" * 5000, False) == "raw"


def test_parse_header() -> None:
    assert parse_header(b"RESCUE/1 name=bundle host=vm kernel=6.1.0 token=t") == (
        {"name": "bundle", "host": "vm", "kernel": "6.1.0", "token": "t"},
        [],
    )
    assert parse_header(b"RESCUE/1\r") == ({}, [])


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"RESCUE/2 name=x token=t", "does not start with RESCUE/1"),
        (b"RESCUE/1 novalue token=t", "field 1 has no '='"),
        (b"RESCUE/1 Token=SECRET token=t", "field 1 has a malformed key"),
        (b"RESCUE/1 name=\xff\xfe token=t", "field 1 is not UTF-8"),
        (b"RESCUE/1 token=t token=u", "field 2 repeats a key"),
    ],
)
def test_a_malformed_header_keeps_what_it_can_and_never_quotes_itself(line: bytes, problem: str) -> None:
    fields, problems = parse_header(line)
    assert fields["token"] == "t"  # the token still decides
    assert len(problems) == 1 and problem in problems[0]
    assert "SECRET" not in problems[0] and "novalue" not in problems[0]


def test_a_body_starting_like_a_header_is_data_after_the_header() -> None:
    assert detect_kind(b"RESCUE/1 again\n" * 30, False, header_allowed=False) == "raw"


@pytest.mark.parametrize(
    ("text", "yes"),
    [
        (b"[    0.000000] Linux version 6.1", True),
        (b"<6>[    0.000000] Linux version 6.1", True),
        (b"\nLinux version 6.1.0", True),
        (b"hello", False),
        (b"\x00\x01", False),
    ],
)
def test_looks_like_dmesg(text: bytes, yes: bool) -> None:
    assert looks_like_dmesg(text) is yes

"""The fleet index's pure parts: the root cause of a manifest, --since, milestones."""

from __future__ import annotations

from pathlib import Path

import pytest

from rescue.capture.manifest import read_manifest
from rescue.errors import RescueError
from rescue.summary.command import parse_since
from rescue.summary.index import NO_ERROR, NOT_ANALYSED, entry_for
from rescue.summary.report import milestone_crossed, milestone_line

CAPTURES = Path(__file__).resolve().parent.parent / "captures"


def test_the_root_cause_is_the_first_error_nothing_caused() -> None:
    _, m = read_manifest(CAPTURES / "mkinitramfs-btrfs-crc32c-missing")
    e = entry_for("x/y", m)
    # module-unknown-symbol is an error too, but caused by btrfs-crc32c-missing.
    assert (e.finding, e.generator, e.kernel) == (
        "btrfs-crc32c-missing",
        "initramfs-tools",
        m.analysis["kernel"],
    )
    assert e.fix.startswith("echo libcrc32c >> /etc/initramfs-tools/modules")
    assert e.machine == m.peer  # no machine= in this old header: the peer address stands in


def test_no_error_and_no_analysis_are_groups_of_their_own() -> None:
    _, normal = read_manifest(CAPTURES / "normal-btrfs-always-initramfs-tools-hooks")
    assert entry_for("a", normal).finding == NO_ERROR
    _, m = read_manifest(CAPTURES / "mkinitramfs-root-device-missing")
    m.analysis = {"error": "analysis failed: boom"}
    m.header["machine"] = "db-7"
    e = entry_for("b", m)
    assert (e.finding, e.title, e.machine) == (NOT_ANALYSED, "analysis failed: boom", "db-7")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("2h", "2026-12-07T10:00:00.000Z"),
        ("30m", "2026-12-07T11:30:00.000Z"),
        ("1d", "2026-12-06T12:00:00.000Z"),
        ("2026-12-07T14:00", "2026-12-07T14:00:00.000Z"),
        ("2026-12-07T14:00+01:00", "2026-12-07T13:00:00.000Z"),
        ("2026-12-07", "2026-12-07T00:00:00.000Z"),
    ],
)
def test_since(text: str, want: str) -> None:
    noon = 1796644800.0  # 2026-12-07T12:00:00Z
    assert parse_since(text, now=noon) == want


def test_bad_since_is_one_line() -> None:
    with pytest.raises(RescueError, match="bad --since"):
        parse_since("yesterday")


def test_milestones() -> None:
    assert [milestone_crossed(n - 1, n) for n in (9, 10, 11, 100, 1000, 1001)] == [
        None,
        10,
        None,
        100,
        1000,
        None,
    ]
    line = milestone_line(100, "btrfs-crc32c-missing", "6.1.0-57-cloud-amd64", "initramfs-tools", "a\nb")
    assert line == "100 machines: btrfs-crc32c-missing on 6.1.0-57-cloud-amd64 (initramfs-tools); fix: a; b"

"""boot-failed-unexplained: a log that shows a failed boot is never reported as healthy."""

from __future__ import annotations

from rescue.diagnose.analyze import analyze_text
from tests.conftest import REPO

RECORDED = REPO / "tests" / "data" / "analyze"


def test_a_panic_no_rule_explains_is_reported_with_the_lines_before_it() -> None:
    report = analyze_text((RECORDED / "btrfs-root-without-dev-dirs.console.log").read_text())
    (finding,) = report.findings
    assert finding.id == "boot-failed-unexplained" and finding.severity == "error"
    assert "Kernel panic - not syncing: Attempted to kill init!" in finding.evidence[0].text
    texts = [e.text for e in finding.evidence[1:]]
    assert "mount: mounting /dev on /root/dev failed: No such file or directory" in texts
    assert all(e.line < finding.evidence[0].line for e in finding.evidence[1:])  # before the failure


def test_a_known_cause_takes_its_place() -> None:
    log = (
        "[    2.1] btrfs: Unknown symbol crc32c (err -2)\n"
        "ALERT!  /dev/vda does not exist.  Dropping to a shell!\n"
    )
    assert "boot-failed-unexplained" not in {f.id for f in analyze_text(log).findings}


def test_a_healthy_boot_is_not_a_failure() -> None:
    report = analyze_text((RECORDED / "normal-btrfs-boot.console.log").read_text())
    assert not report.has_errors
    shell_talk = "Boot took 3.2 seconds\nrescue: no failure, nothing to send\n"
    assert analyze_text(shell_talk).findings == []

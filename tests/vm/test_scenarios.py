"""Real Debian kernel, real busybox/klibc/collector, under qemu (TCG): the failures and what the host gets.

Each boot ends by itself (reboot -f, panic=-1, -no-reboot). The verdict is what the listener stored and what
the guest printed, never a timer. A good boot and a missing root on this image are cells of the realism
matrix (test_matrix.py), as are the generators' images (scenarios 5 and 6).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rescue.harness.scenarios import Harness
from tests.conftest import Listener
from tests.vm.helpers import assert_stored_intact, text

pytestmark = pytest.mark.vm


def test_1_manual_recipe_typed_at_the_busybox_prompt(harness: Harness, listener: Listener) -> None:
    result = harness.manual_recipe(listener.port)
    assert [rc for _, _, rc in result.commands] == [0] * len(result.commands), result.commands
    assert "eth0 complete" in result.commands[3][1]  # ipconfig got its DHCP lease
    assert result.end == "shell exited", result.log_path
    event = listener.wait_for("capture")
    man = assert_stored_intact(event)
    assert man["kind"] == "raw" and [f["name"] for f in man["files"]] == ["dmesg.txt"]
    dmesg = text(event, "dmesg.txt")
    assert "Linux version" in dmesg and "rescue-test: shell" in dmesg
    # The listener analysed it: a healthy boot, so no error finding.
    assert isinstance(man["analysis"], dict) and "findings" in man["analysis"], man["analysis"]
    assert not [f for f in man["analysis"]["findings"] if f["severity"] == "error"], event["findings"]


def test_2_btrfs_without_libcrc32c_sends_by_itself(
    harness: Harness, listener: Listener, collector: Path
) -> None:
    result = harness.broken_btrfs(listener.port)
    assert "mount of /dev/vda failed" in result.markers, result.markers
    assert "collector exit 0" in result.markers, result.log_path
    event = listener.wait_for("capture")
    man = assert_stored_intact(event)
    assert man["kind"] in ("header+tar", "header+gzip"), man["kind"]
    assert man["sha256sums"] == "verified"
    assert "Unknown symbol crc32c" in text(event, "dmesg.txt")
    assert "need libcrc32c dep btrfs missing" in text(event, "modcheck.txt")
    assert "btrfs-crc32c-missing" in event["findings"], event

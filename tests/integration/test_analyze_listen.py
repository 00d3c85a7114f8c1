"""The listener analyses each capture: a real boot log sent with busybox nc, as from the rescue shell."""

from __future__ import annotations

import json
from pathlib import Path

from rescue.diagnose.analyze import analyze_path
from tests.conftest import Listener, nc_send

RECORDED = Path(__file__).resolve().parents[1] / "data" / "analyze"


def test_capture_of_a_failed_boot_is_diagnosed(listener: Listener, busybox: str) -> None:
    log = (RECORDED / "btrfs-crc32c-missing.console.log").read_bytes()
    assert nc_send(busybox, listener.port, log).returncode == 0
    event = listener.wait_for("capture")
    assert event["status"] == "complete"
    assert event["findings"][:1] == ["btrfs-crc32c-missing"]
    assert "btrfs cannot load" in event["headline"]
    capture = Path(event["path"])
    manifest = json.loads((capture / "manifest.json").read_text())
    assert manifest["analysis"]["findings"][0]["id"] == "btrfs-crc32c-missing"
    # `rescue analyze CAPTURE` afterwards says the same as the listener did.
    again = analyze_path(capture)
    assert [f.id for f in again.findings] == [f["id"] for f in manifest["analysis"]["findings"]]


def test_capture_of_a_healthy_boot_raises_nothing(listener: Listener, busybox: str) -> None:
    log = (RECORDED / "normal-btrfs-boot.console.log").read_bytes()
    assert nc_send(busybox, listener.port, log).returncode == 0
    event = listener.wait_for("capture")
    assert event["findings"] == []
    assert event["headline"] == "no known boot failure found"

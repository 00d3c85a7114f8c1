"""Replay from inside a qemu guest: the stream rebuilt from a recorded capture, sent by busybox nc."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rescue.harness.scenarios import Harness
from rescue.listen.replay import build_replay
from tests.conftest import REPO, Listener
from tests.vm.helpers import assert_stored_intact

pytestmark = pytest.mark.vm


@pytest.mark.parametrize("name", ["manual-dmesg", "btrfs-crc32c-missing"])
def test_guest_replays_a_capture_with_busybox_nc(harness: Harness, listener: Listener, name: str) -> None:
    capture = REPO / "tests" / "captures" / name
    original = json.loads((capture / "manifest.json").read_text())
    replay = build_replay(capture)
    result = harness.send_from_guest(name, replay.stream, listener.port)
    assert "network up" in result.markers and "nc exit 0" in result.markers, result.log_path
    event = listener.wait_for("capture")
    man = assert_stored_intact(event)
    assert man["kind"] == original["kind"]
    assert {f["name"]: f["sha256"] for f in man["files"]} == {
        f["name"]: f["sha256"] for f in original["files"]
    }
    if name != "manual-dmesg":
        assert name in event["findings"], event
    assert (
        Path(event["path"]).parent.name == "127.0.0.1"
    )  # qemu's user network: the guest is seen as loopback

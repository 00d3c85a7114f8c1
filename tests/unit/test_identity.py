"""Capture directories per machine (rescue.capture.identity), and the per-peer layout kept for old senders."""

from __future__ import annotations

from pathlib import Path

import pytest

from rescue.capture.identity import capture_name, machine_dir
from rescue.capture.store import Store


@pytest.mark.parametrize(
    ("header", "want"),
    [
        ({"machine": "525400123456"}, "525400123456"),
        ({"machine": "4c4c4544-0042-3510-8052-b4c04f4d4e32"}, "4c4c4544-0042-3510-8052-b4c04f4d4e32"),
        ({"machine": "../etc"}, "192.0.2.7"),
        ({"machine": ".."}, "192.0.2.7"),
        ({"machine": "a" * 65}, "192.0.2.7"),
        ({"machine": "with space"}, "192.0.2.7"),
        ({"machine": ""}, "192.0.2.7"),
        ({"host": "web1"}, "192.0.2.7"),
        (None, "192.0.2.7"),
    ],
)
def test_machine_dir(header: dict[str, str] | None, want: str) -> None:
    assert machine_dir(header, "192.0.2.7") == want


def test_capture_name_is_utc_then_unique() -> None:
    assert capture_name(0.0, "0001") == "19700101T000000Z-0001"


def test_store_groups_a_machine_behind_two_addresses_and_keeps_the_peer(tmp_path: Path) -> None:
    store = Store(tmp_path)
    a = store.new_capture("192.0.2.7", 1.0, {"machine": "m1", "host": "web1"})
    b = store.new_capture("198.51.100.9", 2.0, {"machine": "m1"})
    old = store.new_capture("192.0.2.7", 3.0)
    assert a.path.parent == b.path.parent == tmp_path / "m1"
    assert a.path != b.path
    assert (a.manifest.peer, b.manifest.peer) == ("192.0.2.7", "198.51.100.9")
    assert old.path.parent == tmp_path / "192.0.2.7"

"""`rescue replay` from the host to a real `rescue listen`, with the captures recorded under qemu."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from rescue.diagnose.analyze import analyze_path
from rescue.diagnose.rules import RULE_IDS
from rescue.errors import RescueError
from rescue.listen.replay import build_replay, parse_target, tar_bytes
from tests.conftest import REPO, Listener

CAPTURES = sorted(p for p in (REPO / "tests" / "captures").iterdir() if (p / "manifest.json").is_file())


def expected(capture: Path) -> str | None:
    """The root cause a recorded capture must produce: its EXPECTED file's first word ("none": none), else the
    finding id its name starts with (tests/captures/README.md); names starting with "normal" expect none."""
    if (capture / "EXPECTED").is_file():
        word = (capture / "EXPECTED").read_text().split()[0]
        return None if word in ("none", "ok") else word
    for rule_id in sorted(RULE_IDS, key=len, reverse=True):
        if capture.name.startswith(rule_id):
            return rule_id
    assert capture.name.startswith(("normal", "ok")), (
        f"{capture}: no EXPECTED file and no finding id in its name"
    )
    return None


def rescue(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rescue", *args], capture_output=True, text=True, timeout=60)


def file_hashes(manifest: dict) -> dict[str, str]:  # type: ignore[type-arg]
    return {f["name"]: f["sha256"] for f in manifest["files"]}


def test_captures_were_recorded() -> None:
    names = {p.name for p in CAPTURES}
    assert {
        "manual-dmesg",
        "btrfs-crc32c-missing",
        "root-device-missing",
        "mkinitramfs-btrfs-crc32c-missing",
    } <= names


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_replay_arrives_identical(capture: Path, listener: Listener) -> None:
    original = json.loads((capture / "manifest.json").read_text())
    proc = rescue("replay", str(capture), "--to", f"127.0.0.1:{listener.port}")
    assert proc.returncode == 0, proc.stderr
    event = listener.wait_for("capture")
    assert event["status"] == "complete"
    replayed = json.loads((Path(event["path"]) / "manifest.json").read_text())
    assert replayed["kind"] == original["kind"]
    assert file_hashes(replayed) == file_hashes(original)
    assert replayed.get("header", {}) == original.get("header", {})
    if original.get("sha256sums") == "verified":
        assert replayed["sha256sums"] == "verified"


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_replay_gives_the_same_findings(capture: Path, listener: Listener) -> None:
    assert rescue("replay", str(capture), "--to", f"127.0.0.1:{listener.port}").returncode == 0
    event = listener.wait_for("capture")
    # The same findings as the stored capture analysed here and now (its manifest may predate a rule).
    assert event["findings"] == [f.id for f in analyze_path(capture).findings]
    want = expected(capture)
    if want is None:
        analysis = json.loads((Path(event["path"]) / "manifest.json").read_text())["analysis"]
        assert not [f["id"] for f in analysis["findings"] if f["severity"] == "error"], event["findings"]
    else:
        assert event["findings"][:1] == [want], event


def test_stream_kinds_are_rebuilt() -> None:
    raw = build_replay(REPO / "tests" / "captures" / "manual-dmesg")
    assert raw.kind == "raw" and raw.stream == (REPO / "tests/captures/manual-dmesg/dmesg.txt").read_bytes()
    bundle = build_replay(REPO / "tests" / "captures" / "btrfs-crc32c-missing", token="s3cret")
    head, _, body = bundle.stream.partition(b"\n")
    assert head.startswith(b"RESCUE/1 ") and head.endswith(b" token=s3cret")
    if bundle.kind.endswith("gzip"):
        body = gzip.decompress(body)
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert "modcheck.txt" in tar.getnames() and all(m.isreg() for m in tar.getmembers())


def test_changed_capture_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "cap"
    shutil.copytree(REPO / "tests" / "captures" / "manual-dmesg", copy)
    with (copy / "dmesg.txt").open("a") as f:
        f.write("forged line\n")
    proc = rescue("replay", str(copy), "--to", "127.0.0.1:9")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "sha256 differs" in proc.stderr


@pytest.mark.parametrize("target", ["localhost", "host:", ":3333", "h:99999", "h:abc"])
def test_bad_target_is_one_line(target: str) -> None:
    with pytest.raises(RescueError, match="bad target"):
        parse_target(target)
    proc = rescue("replay", str(CAPTURES[0]), "--to", target)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_not_a_capture_and_nobody_listening(tmp_path: Path) -> None:
    proc = rescue("replay", str(tmp_path), "--to", "127.0.0.1:9")
    assert proc.returncode == 2 and "not a capture" in proc.stderr
    assert parse_target("[::1]:3333") == ("::1", 3333)
    with socket.socket() as s:  # a port that was free a moment ago, and nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = rescue("replay", str(CAPTURES[0]), "--to", f"127.0.0.1:{port}", "--timeout", "5")
    assert proc.returncode == 2 and "cannot send" in proc.stderr


def test_replay_to_a_listener_that_wants_a_token(tmp_path: Path) -> None:
    lst = Listener(tmp_path / "captures", "--token", "s3cret")
    try:
        capture = REPO / "tests" / "captures" / "manual-dmesg"
        # The listener resets a stream it rejects as soon as the header shows it, often before the sender
        # has written it all: replay may then report that it could not send; either way nothing is kept.
        refused = rescue("replay", str(capture), "--to", f"127.0.0.1:{lst.port}")
        assert refused.returncode == 0 or "cannot send" in refused.stderr
        assert lst.wait_for("capture")["status"] == "rejected"
        proc = rescue("replay", str(capture), "--to", f"127.0.0.1:{lst.port}", "--token", "s3cret")
        assert proc.returncode == 0, proc.stderr
        event = lst.wait_for("capture")
        assert event["status"] == "complete"
        man = json.loads((Path(event["path"]) / "manifest.json").read_text())
        assert man["kind"] == "header+raw" and "token" not in man["header"]
        assert (Path(event["path"]) / "dmesg.txt").read_bytes() == (capture / "dmesg.txt").read_bytes()
    finally:
        lst.stop()


def test_a_gzipped_tar_capture_replays_as_one(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "captures")
    files = [("dmesg.txt", b"[    2.1] btrfs: Unknown symbol crc32c (err -2)\n"), ("info.txt", b"KERNEL=x\n")]
    body = gzip.compress(tar_bytes(files), mtime=0)
    sent = subprocess.run(
        [busybox, "nc", "127.0.0.1", str(lst.port)], input=body, capture_output=True, timeout=30
    )
    assert sent.returncode == 0
    first = lst.wait_for("capture")
    assert (first["status"], first["kind"]) == ("complete", "tar.gz")
    replay = build_replay(Path(first["path"]))
    assert replay.kind == "tar.gz" and gzip.decompress(replay.stream) == tar_bytes(files)
    assert rescue("replay", first["path"], "--to", f"127.0.0.1:{lst.port}").returncode == 0
    again = lst.wait_for("capture")
    assert (again["status"], again["kind"], again["findings"]) == ("complete", "tar.gz", first["findings"])
    original = json.loads((Path(first["path"]) / "manifest.json").read_text())
    replayed = json.loads((Path(again["path"]) / "manifest.json").read_text())
    assert file_hashes(replayed) == file_hashes(original)

"""The collector's send path end to end: busybox ash + busybox nc -> a real `rescue listen` on 127.0.0.1."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.collector_root import build, run_collector
from tests.conftest import Listener, require
from tests.host_kernel import HOST_MODDIR, KVER


@pytest.fixture(autouse=True)
def _kernel() -> None:
    require((HOST_MODDIR / "modules.dep").is_file(), f"{HOST_MODDIR} is missing (linux-image-cloud-amd64)")


def test_bundle_arrives_complete_and_verified(busybox: str, tmp_path: Path, listener: Listener) -> None:
    fake = build(tmp_path, drop=["libcrc32c"])
    proc = run_collector(busybox, fake, "panic", RESCUE_HOST="127.0.0.1", RESCUE_PORT=str(listener.port))
    event = listener.wait_for("capture")
    payload = (fake.path / "run" / "rescue" / "payload").read_bytes()
    sent = len(payload)
    header = payload.split(b"\n", 1)[0]
    assert header.startswith(b"RESCUE/1 name=bundle ")
    assert f"rescue: sent {sent} bytes to 127.0.0.1:{listener.port}" in proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode == 0
    assert event["status"] == "complete"
    assert event["kind"] == "header+tar"
    assert event["sha256sums"] == "verified"
    assert event["bytes"] == sent - len(header) - 1  # the listener counts the body after the header line
    capture = Path(event["path"])
    manifest = json.loads((capture / "manifest.json").read_text())
    assert manifest["header"]["name"] == "bundle"
    assert manifest["header"]["kernel"] == KVER
    assert manifest["header"]["host"] == "broken_host"  # spaces become _ on the wire
    assert manifest["header"]["boot"] == "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    # The files arrive byte for byte as the collector wrote them.
    for name in ("modcheck.txt", "info.txt", "dmesg.txt", "SHA256SUMS"):
        assert (capture / name).read_bytes() == (fake.bundle / name).read_bytes(), name
    assert "result fail missing=libcrc32c" in (capture / "modcheck.txt").read_text()


def test_token_is_sent_in_the_header_and_not_stored(busybox: str, tmp_path: Path) -> None:
    lst = Listener(tmp_path / "captures", "--token", "s3cr3t-tok")
    try:
        fake = build(tmp_path / "a", cmdline="root=/dev/vda")
        bad = run_collector(busybox, fake, "panic", RESCUE_HOST="127.0.0.1", RESCUE_PORT=str(lst.port),
                            RESCUE_TOKEN="wrong", RESCUE_TIMEOUT="5")  # fmt: skip
        rejected = lst.wait_for("capture")
        assert rejected["status"] == "rejected"
        # busybox nc may exit 0 (a reset after its own EOF): the refusal line tells the collector anyway.
        out = bad.stdout
        assert "rescue: send failed: " in out and "rescue: refused: wrong token" in out, out
        assert "rescue: sent " not in out and bad.returncode != 0
        # Nothing marked sent: a later failure path of this boot may try again.
        assert not (fake.path / "run" / "rescue" / "sent-failure").exists()
        fake2 = build(tmp_path / "b", cmdline="root=/dev/vda")
        (fake2.path / "etc" / "rescue.conf").write_text("RESCUE_TOKEN=s3cr3t-tok\n")
        good = run_collector(busybox, fake2, "panic", RESCUE_HOST="127.0.0.1", RESCUE_PORT=str(lst.port))
        accepted = lst.wait_for("capture")
        assert accepted["status"] == "complete", accepted
        assert "rescue: sent " in good.stdout
        stored = b"".join(p.read_bytes() for p in Path(accepted["path"]).iterdir() if p.is_file())
        assert b"s3cr3t-tok" not in stored
    finally:
        lst.stop()


def test_sends_once_per_boot_and_reason(busybox: str, tmp_path: Path, listener: Listener) -> None:
    fake = build(tmp_path)
    env = {"RESCUE_HOST": "127.0.0.1", "RESCUE_PORT": str(listener.port)}
    first = run_collector(busybox, fake, "panic", **env)
    assert listener.wait_for("capture")["status"] == "complete"
    assert "rescue: sent " in first.stdout
    # initramfs-tools may call panic() again: no second send.
    again = run_collector(busybox, fake, "panic", **env)
    assert again.returncode == 0
    assert "already sent (panic)" in again.stdout
    # A different reason (rescue.always=1 before the mount, then the panic) is new evidence.
    other = run_collector(busybox, fake, "always", **env)
    assert "rescue: sent " in other.stdout
    assert listener.wait_for("capture")["status"] == "complete"
    # After the listener has stopped (it finishes what is in flight first), exactly two captures exist.
    listener.stop()
    assert len(list((listener.dir / "127.0.0.1").iterdir())) == 2


def test_retries_until_the_listener_is_up(busybox: str, tmp_path: Path) -> None:
    """The collector starts before anyone listens (the listener comes up a moment later): it retries."""
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fake = build(tmp_path)
    from tests.collector_root import COLLECTOR

    sender = subprocess.Popen(
        [busybox, "ash", str(COLLECTOR), "panic"],
        env=fake.env(RESCUE_HOST="127.0.0.1", RESCUE_PORT=str(port), RESCUE_TIMEOUT="40"),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sender.stdout is not None
        # Wait until it has failed at least once, then start the listener on that port.
        for line in sender.stdout:
            if line.startswith("rescue: result "):
                break
        argv = [sys.executable, "-m", "rescue", "listen", "--bind", "127.0.0.1", "--port", str(port),
                "--dir", str(tmp_path / "captures"), "--json"]  # fmt: skip
        lst = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        try:
            out, _ = sender.communicate(timeout=60)
            assert "rescue: sent " in out, out
            assert sender.returncode == 0
        finally:
            lst.terminate()
            lst.wait(timeout=20)
    finally:
        if sender.poll() is None:
            sender.kill()

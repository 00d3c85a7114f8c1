"""The listener's own machinery under faults: config values of the wrong type (on start and on HUP),
its stdout or log failing, links planted inside --dir, and what --bind :: takes."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Listener, nc_send, wait_until
from tests.integration.hostile import DMESG, fill, manifest_of, read_all, tmpfs

REFUSED = b"rescue: refused: "


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("token = 123456", "token must be a string"),
        ("max_bytes = 4.5", "max_bytes must be a whole number of bytes"),
        ('port = "3333"', "port must be a whole number"),
    ],
)
def test_a_config_value_of_the_wrong_type_stops_the_start_in_one_line(
    tmp_path: Path, text: str, message: str
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text + "\n")
    argv = [sys.executable, "-m", "rescue", "listen", "--port", "0", "--dir", str(tmp_path / "c")]
    proc = subprocess.run([*argv, "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2
    assert "123456" not in proc.stderr


def test_a_bad_config_on_hup_keeps_the_old_one_and_the_token_check(tmp_path: Path, busybox: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('token = "right"\n')
    lst = Listener(tmp_path / "c", "--config", str(cfg))
    cfg.write_text("token = 123456\n")
    lst.proc.send_signal(signal.SIGHUP)
    err = lst.wait_for("error")
    assert err["error"].startswith("config file") and "token must be a string" in err["error"]
    assert "123456" not in lst.stderr_now()
    # Never fails open: the old token still decides.
    assert nc_send(busybox, lst.port, b"RESCUE/1 token=123456\n" + DMESG).stdout == REFUSED + b"wrong token\n"
    assert lst.wait_for("capture")["status"] == "rejected"
    assert nc_send(busybox, lst.port, b"RESCUE/1 token=right\n" + DMESG).stdout == b""
    assert lst.wait_for("capture")["status"] == "complete"


def test_a_closed_stdout_never_stops_receiving(tmp_path: Path, busybox: str) -> None:
    directory = tmp_path / "c"
    argv = [sys.executable, "-m", "rescue", "listen", "--bind", "127.0.0.1", "--port", "0"]
    argv += ["--dir", str(directory), "--json", "--idle-timeout", "1"]
    stderr = (tmp_path / "err").open("w")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        assert proc.stdout is not None
        port = json.loads(proc.stdout.readline())["port"]
        proc.stdout.close()  # `--json | jq` and jq died
        for n in range(3):
            assert nc_send(busybox, port, DMESG + str(n).encode()).returncode == 0
        wait_until(lambda: len(list(directory.glob("*/*/dmesg.txt"))) == 3, 30, "three captures")
        # The once-a-second round lives on: an idle sender is still closed, and told.
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(DMESG)
            assert read_all(s, 20).startswith(REFUSED + b"sender silent")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr.close()
    text = (tmp_path / "err").read_text()
    assert text.count("cannot write stdout") == 1 and "Traceback" not in text


def test_a_log_on_a_full_disk_never_stops_receiving(tmp_path: Path, busybox: str) -> None:
    with tmpfs(tmp_path / "logs", "1m") as logs:
        lst = Listener(tmp_path / "c", "--log", str(logs / "rescue.log"))
        fill(logs, leave=0)
        # The log's last page still has room for a few lines: send until it is full (at most 40).
        for n in range(40):
            assert nc_send(busybox, lst.port, DMESG + str(n).encode()).returncode == 0
            assert lst.wait_for("capture")["status"] == "complete"
            if "cannot write the log" in lst.stderr_now():
                break
        for n in range(3):  # and after it
            assert nc_send(busybox, lst.port, DMESG + str(n).encode()).returncode == 0
        assert all(e["status"] == "complete" for e in lst.captures(3))
        lst.stop()
        assert lst.stderr_now().count("cannot write the log") == 1


def test_a_link_planted_as_the_peer_directory_is_not_followed(tmp_path: Path, busybox: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    directory = tmp_path / "c"
    directory.mkdir()
    (directory / "127.0.0.1").symlink_to(outside)
    lst = Listener(directory)
    sent = nc_send(busybox, lst.port, DMESG)
    assert sent.stdout.startswith(REFUSED + b"cannot store the stream")
    assert "link" in lst.wait_for("error")["error"]
    assert list(outside.iterdir()) == []


def test_recovery_does_not_rewrite_through_a_planted_link(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "x"
    elsewhere.mkdir(parents=True)
    original = '{"version": 1, "peer": "p", "started": "s", "status": "receiving"}\n'
    (elsewhere / "manifest.json").write_text(original)
    directory = tmp_path / "c"
    directory.mkdir()
    (directory / "evil").symlink_to(tmp_path / "elsewhere")
    lst = Listener(directory)
    lst.stop()
    assert (elsewhere / "manifest.json").read_text() == original
    assert not any(e["event"] == "recovered" for e in lst.events)


def test_bind_any_ipv6_also_takes_ipv4(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "c", bind="::")
    assert nc_send(busybox, lst.port, DMESG).returncode == 0
    assert lst.wait_for("capture")["peer"] == "127.0.0.1"
    assert nc_send(busybox, lst.port, DMESG, host="::1").returncode == 0
    assert lst.wait_for("capture")["peer"] == "::1"


def test_ipv6_only_is_asked_for(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "c", "--ipv6-only", bind="::")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", lst.port), timeout=5)
    assert nc_send(busybox, lst.port, DMESG, host="::1").returncode == 0
    assert manifest_of(lst.wait_for("capture")["path"])["peer"] == "::1"

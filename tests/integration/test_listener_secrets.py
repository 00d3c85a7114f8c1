"""The token off the command line (--token-file, RESCUE_TOKEN) and the socket systemd passes (LISTEN_FDS).

Real `rescue listen` processes and busybox nc senders. systemd itself is not PID 1 here: the socket is
handed over the way systemd does it (a bound, listening socket as fd 3, LISTEN_PID naming the process,
LISTEN_FDS=1), by a few lines of Python that exec the listener, as `systemd-socket-activate` would.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from rescue.listen.config import build_settings
from tests.conftest import REPO, Listener, nc_send

DMESG = b"[    0.000000] Linux version 7.0.0 (test)\n[    2.100000] btrfs: Unknown symbol crc32c (err -2)\n"
CAPTURE = REPO / "tests" / "captures" / "manual-dmesg"

# Puts the socket given as argv[1] at fd 3, names this process in LISTEN_PID, execs the rest of argv.
ACTIVATE = (
    "import os, sys; fd = int(sys.argv[1]); os.dup2(fd, 3); os.close(fd);"
    " os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); os.execvp(sys.argv[2], sys.argv[2:])"
)


def rescue(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rescue", *args], capture_output=True, text=True, timeout=60, env=env
    )


def test_listener_serves_the_socket_systemd_passes(tmp_path: Path, busybox: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        port = sock.getsockname()[1]
        fd = sock.fileno()
        # --bind names an address this machine does not have: binding it would fail, the inherited socket not.
        lst = Listener(
            tmp_path / "captures",
            wrap=[sys.executable, "-c", ACTIVATE, str(fd)],
            bind="192.0.2.1",
            pass_fds=(fd,),
        )
    assert lst.port == port
    assert lst.events[-1]["bind"] == "127.0.0.1"  # the socket's own address, not --bind's
    assert nc_send(busybox, port, DMESG).returncode == 0
    event = lst.wait_for("capture")
    assert event["status"] == "complete" and "btrfs-crc32c-missing" in event["findings"]
    assert lst.stop() == 0


def test_a_socket_meant_for_another_process_is_not_taken(tmp_path: Path) -> None:
    env = {**os.environ, "LISTEN_PID": "1", "LISTEN_FDS": "1"}  # systemd's variables, but not for this pid
    lst = Listener(tmp_path / "captures", env=env)
    assert lst.port != 0  # it bound its own port 0 -> a real one
    with socket.create_connection(("127.0.0.1", lst.port), timeout=5):
        pass


def test_token_from_a_file_and_from_the_environment(tmp_path: Path, busybox: str) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("fIle-t0ken\n")
    env = {k: v for k, v in os.environ.items() if k != "RESCUE_TOKEN"}
    for extra, token, listener_env in (
        (["--token-file", str(token_file)], b"fIle-t0ken", env),
        ([], b"env-t0ken", {**env, "RESCUE_TOKEN": "env-t0ken"}),
    ):
        lst = Listener(tmp_path / "captures", *extra, env=listener_env)
        nc_send(busybox, lst.port, b"RESCUE/1 token=wrong\n" + DMESG)
        assert (lst.wait_for("capture")["status"], lst.events[-1]["reason"]) == ("rejected", "wrong token")
        nc_send(busybox, lst.port, b"RESCUE/1 token=" + token + b"\n" + DMESG)
        event = lst.wait_for("capture")
        assert event["status"] == "complete"
        assert token.decode() not in (Path(event["path"]) / "manifest.json").read_text()
        assert token.decode() not in lst.stderr_now()
        lst.stop()


def test_token_file_is_reread_on_hup(tmp_path: Path, busybox: str) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    lst = Listener(tmp_path / "captures", "--token-file", str(token_file))
    token_file.write_text("second\n")
    lst.proc.send_signal(1)  # SIGHUP
    assert lst.wait_for("reloaded")["token"] is True
    nc_send(busybox, lst.port, b"RESCUE/1 token=first\n" + DMESG)
    assert lst.wait_for("capture")["status"] == "rejected"
    nc_send(busybox, lst.port, b"RESCUE/1 token=second\n" + DMESG)
    assert lst.wait_for("capture")["status"] == "complete"


def test_token_layers_flags_then_environment_then_config_file(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("from-file\n")
    (tmp_path / "c.toml").write_text(f'token_file = "{tmp_path / "t"}"\n')
    cfg = str(tmp_path / "c.toml")
    assert build_settings({"config": cfg}, env={}).token == "from-file"
    assert build_settings({"config": cfg}, env={"RESCUE_TOKEN": "env"}).token == "env"
    assert build_settings({"config": cfg, "token": "flag"}, env={"RESCUE_TOKEN": "env"}).token == "flag"
    (tmp_path / "empty").write_text("\n")
    assert build_settings({"token_file": str(tmp_path / "empty")}, env={}).token is None


def test_a_token_on_the_command_line_is_warned_about_and_a_bad_file_is_one_line(tmp_path: Path) -> None:
    proc = rescue("replay", str(CAPTURE), "--to", "127.0.0.1:1", "--token", "visible")
    assert "visible in ps" not in proc.stderr and "--token shows the token" in proc.stderr
    assert "visible" not in proc.stderr.replace("--token shows", "")
    (tmp_path / "bad").write_text("two words\n")
    proc = rescue("listen", "--token-file", str(tmp_path / "bad"), "--port", "0", "--dir", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "not a token" in proc.stderr
    assert "two words" not in proc.stderr
    proc = rescue("listen", "--token-file", str(tmp_path / "missing"), "--port", "0", "--dir", str(tmp_path))
    assert proc.returncode == 2 and "cannot read token file" in proc.stderr


def test_replay_sends_the_token_from_a_file_and_says_json(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    lst = Listener(tmp_path / "captures", "--token-file", str(tmp_path / "token"))
    target = f"127.0.0.1:{lst.port}"
    proc = rescue("replay", str(CAPTURE), "--to", target, "--token-file", str(tmp_path / "token"), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["to"] == f"127.0.0.1:{lst.port}" and doc["kind"] == "raw" and doc["bytes"] > 0
    assert lst.wait_for("capture")["status"] == "complete"
    env = {**os.environ, "RESCUE_TOKEN": "s3cret"}
    assert rescue("replay", str(CAPTURE), "--to", f"127.0.0.1:{lst.port}", env=env).returncode == 0
    assert lst.wait_for("capture")["status"] == "complete"
    proc = rescue("replay", str(CAPTURE), "--to", "127.0.0.1:1", "--json")
    assert proc.returncode == 2 and "cannot send" in json.loads(proc.stdout)["error"]

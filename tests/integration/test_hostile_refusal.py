"""A sender the listener refuses learns it (busybox nc's view), refusals leak nothing, the header's form
never costs a body, and a guessing flood leaves one directory a minute."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

from tests.conftest import Listener, nc_send, wait_until
from tests.integration.hostile import DMESG, connect_from, endless, manifest_of, read_all

REFUSED = b"rescue: refused: "


def test_wrong_token_small_sender_reads_the_line(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "c", "--token", "s3cret")
    sent = nc_send(busybox, lst.port, b"RESCUE/1 token=wrong\n" + DMESG)
    # All of it was sent before the refusal arrived: nc can only show the line (and exits 0).
    assert sent.stdout == REFUSED + b"wrong token\n"
    ev = lst.wait_for("capture")
    assert ev["status"] == "rejected" and ev["files"] == []
    assert not [p for p in Path(ev["path"]).iterdir() if p.name != "manifest.json"]


def test_wrong_token_endless_sender_prints_the_line_and_exits_1(tmp_path: Path) -> None:
    lst = Listener(tmp_path / "c", "--token", "s3cret")
    sent = endless(lst.port, b"RESCUE/1 token=wrong\n")
    assert sent.stdout == REFUSED + b"wrong token\n"
    assert sent.returncode == 1 and b"reset" in sent.stderr  # busybox nc says it failed


def test_max_bytes_tells_the_endless_sender_and_keeps_exactly_the_limit(tmp_path: Path) -> None:
    lst = Listener(tmp_path / "c", "--max-bytes", "1M")
    sent = endless(lst.port)
    assert sent.returncode == 1 and sent.stdout.startswith(REFUSED + b"stopped at --max-bytes")
    ev = lst.wait_for("capture")
    assert ev["status"] == "incomplete" and ev["bytes"] == 1 << 20
    assert (Path(ev["path"]) / "stream.bin.partial").stat().st_size == 1 << 20


def test_allow_refusal_is_visible_and_stores_nothing(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "c", "--allow", "10.0.0.0/8")
    sent = nc_send(busybox, lst.port, DMESG)
    assert sent.stdout == REFUSED + b"address not in --allow\n"
    assert lst.wait_for("refused")["peer"] == "127.0.0.1"
    assert not list(lst.dir.glob("*/*"))


def test_missing_token_on_a_raw_stream_says_what_to_send(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "c", "--token", "s3cret")
    sent = nc_send(busybox, lst.port, DMESG)
    assert sent.stdout.startswith(REFUSED + b"a token is required")
    assert lst.wait_for("capture")["status"] == "rejected"


def test_refusals_never_quote_a_secret(tmp_path: Path, busybox: str) -> None:
    log = tmp_path / "rescue.log"
    lst = Listener(tmp_path / "c", "--token", "s3cret", "--log", str(log))
    # A token typed with a capital: not the token field, and its text must not travel anywhere.
    sent = nc_send(busybox, lst.port, b"RESCUE/1 Token=TOPSECRET99 name=x\n" + DMESG)
    assert sent.stdout == REFUSED + b"missing token\n"
    ev = lst.wait_for("capture")
    lst.stop()
    m = manifest_of(ev["path"])
    assert m["header_problems"] == ["header field 1 has a malformed key (lower case letters, digits, _)"]
    for text in (str(m), str(ev), lst.stderr_now(), log.read_text(), sent.stdout.decode()):
        assert "TOPSECRET99" not in text


def test_malformed_header_without_token_required_keeps_the_body(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "c")
    for line in (
        b"RESCUE/1 name=my file.txt",
        b"RESCUE/1 Name=x",
        b"RESCUE/1 name=\xff\xfe",
        b"RESCUE/2 a=b",
    ):
        sent = nc_send(busybox, lst.port, line + b"\n" + DMESG)
        assert sent.returncode == 0 and sent.stdout == b""
        ev = lst.wait_for("capture")
        assert ev["status"] == "complete", (line, ev)
        m = manifest_of(ev["path"])
        assert len(m["header_problems"]) == 1
        assert (Path(ev["path"]) / ev["files"][0]).read_bytes() == DMESG


def test_malformed_header_with_the_right_token_keeps_the_body(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "c", "--token", "s3cret")
    sent = nc_send(busybox, lst.port, b"RESCUE/1 host=a b token=s3cret Bad=1\n" + DMESG)
    assert sent.returncode == 0 and sent.stdout == b""
    ev = lst.wait_for("capture")
    assert ev["status"] == "complete" and (Path(ev["path"]) / "dmesg.txt").read_bytes() == DMESG
    m = manifest_of(ev["path"])
    assert len(m["header_problems"]) == 2 and "token" not in m["header"]


def test_a_body_that_starts_like_a_header_is_body(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "c")
    body = b"RESCUE/1 this is data, not a header\n" * 20
    assert nc_send(busybox, lst.port, b"RESCUE/1 name=notes.txt\n" + body).returncode == 0
    ev = lst.wait_for("capture")
    assert ev["status"] == "complete" and ev["kind"] == "header+raw"
    assert (Path(ev["path"]) / "notes.txt").read_bytes() == body


def test_a_guessing_flood_leaves_one_directory_with_a_count(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "c", "--token", "s3cret")
    outs = [nc_send(busybox, lst.port, f"RESCUE/1 token=guess{n}\n".encode() + DMESG) for n in range(40)]
    assert all(o.stdout == REFUSED + b"wrong token\n" for o in outs)  # every guesser is told
    first = lst.wait_for("capture")
    wait_until(lambda: manifest_of(first["path"]).get("rejections") == 40, 15, "the count of 40")
    assert len(list(lst.dir.glob("*/*/manifest.json"))) == 1
    # Another peer has its own record.
    with connect_from("127.0.0.2", lst.port) as s:
        s.sendall(b"RESCUE/1 token=nope\n" + DMESG)
        s.shutdown(socket.SHUT_WR)
        assert read_all(s).startswith(REFUSED + b"wrong token")
    assert lst.wait_for("capture")["peer"] == "127.0.0.2"


def test_idle_sender_is_told_and_its_bytes_kept(tmp_path: Path) -> None:
    lst = Listener(tmp_path / "c", "--idle-timeout", "1")
    with socket.create_connection(("127.0.0.1", lst.port)) as s:
        s.sendall(DMESG)
        assert read_all(s, 20).startswith(REFUSED + b"sender silent for 1s")
    ev = lst.wait_for("capture")
    assert ev["status"] == "incomplete" and (Path(ev["path"]) / "dmesg.txt.partial").read_bytes() == DMESG


def test_stop_during_a_transfer_tells_the_sender(tmp_path: Path) -> None:
    lst = Listener(tmp_path / "c", "--drain-timeout", "0.5")
    with socket.create_connection(("127.0.0.1", lst.port)) as s:
        s.sendall(DMESG)
        lst.wait_for("connection")
        wait_until(lambda: any(lst.dir.glob("*/*/dmesg.txt.partial")), 10, "the stream on disk")
        lst.proc.send_signal(signal.SIGTERM)
        assert read_all(s).startswith(REFUSED + b"the listener was stopped")
    assert lst.stop() == 0


def test_a_port_probe_stores_nothing_and_hears_nothing(tmp_path: Path) -> None:
    lst = Listener(tmp_path / "c")
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", lst.port)) as s:
            s.shutdown(socket.SHUT_WR)
            assert read_all(s) == b""
    assert nc_send("/bin/busybox", lst.port, os.urandom(10)).returncode == 0
    lst.wait_for("capture")
    assert len(list(lst.dir.glob("*/*/manifest.json"))) == 1

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from rescue.capture.store import FileWriter, decode_name, safe_relpath, verify_sha256sums


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("dmesg.txt", "dmesg.txt"),
        ("./proc/cmdline", "proc/cmdline"),
        ("a//b/./c", "a/b/c"),
        ("../x", None),
        ("a/../../x", None),
        ("/etc/passwd", None),
        ("", None),
        (".", None),
        ("tab\there\x1b[31m", "tab_here_[31m"),
        ("manifest.json", "_manifest.json"),
        ("x.partial", "_x.partial"),
    ],
)
def test_safe_relpath(name: str, safe: str | None) -> None:
    assert safe_relpath(name) == safe


def test_long_components_are_cut_to_fit_name_max() -> None:
    safe = safe_relpath("é" * 300)
    assert safe is not None and len(safe.encode()) <= 200


def test_decode_name() -> None:
    assert decode_name("日志.txt".encode()) == ("日志.txt", "utf-8")
    assert decode_name("日志.txt".encode("gbk")) == ("日志.txt", "gbk")
    name, how = decode_name(b"\xff\xfe\x01")
    assert how == "escaped" and name == "\\xff\\xfe\x01"
    assert decode_name("日志".encode("gbk"), legacy="") == ("\\xc8\\xd5\\xd6\\xbe", "escaped")


def test_file_writer_is_invisible_until_committed(tmp_path: Path) -> None:
    w = FileWriter(tmp_path, "sub/dmesg.txt")
    w.write(b"abc")
    w.write(memoryview(b"def"))
    assert not (tmp_path / "sub/dmesg.txt").exists() and (tmp_path / "sub/dmesg.txt.partial").exists()
    stored = w.commit()
    assert (tmp_path / "sub/dmesg.txt").read_bytes() == b"abcdef"
    assert not (tmp_path / "sub/dmesg.txt.partial").exists()
    assert (stored.bytes, stored.sha256) == (6, hashlib.sha256(b"abcdef").hexdigest())


def test_verify_sha256sums() -> None:
    a = hashlib.sha256(b"a").hexdigest()
    files = {"a.txt": a, "b.txt": hashlib.sha256(b"b").hexdigest()}
    assert verify_sha256sums(f"{a}  a.txt\n", files) == ("verified", [])
    assert verify_sha256sums(f"{a} *./a.txt\n", files) == ("verified", [])
    assert verify_sha256sums(f"{a}  b.txt\n{a}  c.txt\n", files) == (
        "mismatch",
        ["b.txt: sha256 differs", "c.txt: listed but not received"],
    )
    assert verify_sha256sums("garbage\n", files) == ("mismatch", ["SHA256SUMS lists no files"])

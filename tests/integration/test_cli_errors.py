"""Bad and hostile input through the real command line: one line on stderr, exit 2, nothing lost, no hang.

Every case runs `python -m rescue` as a user would. Images are compressed by the real gzip and zstd tools;
a decompression bomb is a sparse file of zeros squeezed by zstd.
"""

from __future__ import annotations

import errno
import io
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from rescue.errors import RescueError
from rescue.image.cpio import CpioEntry, write_newc
from rescue.run import run
from tests.conftest import require

FILE = stat.S_IFREG | 0o644
DIR = stat.S_IFDIR | 0o755
CRC32C_LINE = "btrfs: Unknown symbol crc32c (err -2)\n"


def rescue(*args: str, cwd: Path | None = None, memory: int = 0) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        if memory:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run(
        [sys.executable, "-m", "rescue", *args],
        capture_output=True,
        text=True,
        timeout=60,  # a hang fails the test instead of blocking the suite
        cwd=cwd,
        preexec_fn=limit,
    )


def one_line_error(proc: subprocess.CompletedProcess[str], text: str, code: int = 2) -> None:
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("rescue"), proc.stderr
    assert text in proc.stderr, proc.stderr
    if (
        "--json" in proc.args
    ):  # --json readers get exactly one document saying what failed, never half a report
        assert json.loads(proc.stdout) == {
            "error": proc.stderr.removeprefix("rescue: ").strip(),
            "exit": code,
        }
    else:
        assert proc.stdout == ""


def cpio(entries: list[CpioEntry]) -> bytes:
    buf = io.BytesIO()
    write_newc(entries, buf)
    return buf.getvalue()


# --- the command line itself -------------------------------------------------------------------------


@pytest.mark.parametrize("args", [[], ["frobnicate"], ["hooks"], ["hooks", "frobnicate"]])
def test_missing_or_unknown_sub_command(args: list[str]) -> None:
    proc = rescue(*args)
    one_line_error(proc, "error:")


def test_unexpected_exception_is_one_line_and_its_own_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rescue import cli
    from rescue.diagnose import analyze

    def broken(args: object) -> int:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(analyze, "command", broken)
    assert cli.main(["analyze", "x"]) == 70
    err = capsys.readouterr().err
    assert err == "rescue: internal error: ZeroDivisionError: boom (--debug shows where)\n"
    with pytest.raises(ZeroDivisionError):
        cli.main(["--debug", "analyze", "x"])


def test_control_characters_in_a_path_stay_on_one_line(tmp_path: Path) -> None:
    proc = rescue("analyze", str(tmp_path / "a\nb\x1b[2J"))
    one_line_error(proc, "a\\x0ab\\x1b[2J: no such file or directory")


# --- files that are not what they seem -----------------------------------------------------------------


@pytest.mark.parametrize("command", ["analyze", "check-image"])
def test_a_fifo_with_no_writer_does_not_hang(tmp_path: Path, command: str) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    one_line_error(rescue(command, str(fifo)), "empty file")


@pytest.mark.parametrize("command", ["analyze", "check-image"])
def test_paths_that_cannot_be_read(tmp_path: Path, command: str) -> None:
    (tmp_path / "file").write_text("x\n")
    one_line_error(rescue(command, str(tmp_path / "nope")), "no such file or directory")
    one_line_error(rescue(command, str(tmp_path / "file" / "sub")), "not a directory")


def test_check_image_of_a_directory(tmp_path: Path) -> None:
    one_line_error(rescue("check-image", str(tmp_path)), "is a directory, a file was expected")


def test_analyze_of_an_empty_file_says_there_is_nothing(tmp_path: Path) -> None:
    (tmp_path / "dmesg.txt").write_bytes(b"")
    one_line_error(rescue("analyze", "--json", str(tmp_path / "dmesg.txt")), "empty file, nothing to analyse")


def test_a_log_with_nuls_and_bad_utf8_is_still_analysed(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    noise = b"\x00\xff\xfe junk \xc3\x28 line\r\n" * 3
    log.write_bytes(b"boot\n" * 200 + noise + CRC32C_LINE.encode() + noise)
    proc = rescue("analyze", "--json", str(log))
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["findings"][0]["id"] == "btrfs-crc32c-missing"


def test_escape_sequences_in_a_log_do_not_reach_the_terminal(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(CRC32C_LINE.encode()[:-1] + b" \x1b]0;owned\x07\x1b[2J\n")
    proc = rescue("analyze", str(log))
    assert proc.returncode == 1, proc.stderr
    assert "Unknown symbol crc32c" in proc.stdout
    assert not any(c in proc.stdout for c in "\x1b\x07")


# --- capture directories ------------------------------------------------------------------------------


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    cap = tmp_path / "capture"
    cap.mkdir()
    (cap / "dmesg.txt").write_text(CRC32C_LINE)
    return cap


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),  # too deep for the parser
        (b'{"header": ["a", "b"]}', "not a capture manifest"),
        (b'{"header": "x"}', "not a capture manifest"),
        (b'{"files": [' + b'"x",' * 5_000_000 + b'"x"]}', "larger than 16,777,216 bytes"),
    ],
)
def test_a_hostile_manifest_is_one_line(capture: Path, manifest: bytes, message: str) -> None:
    (capture / "manifest.json").write_bytes(manifest)
    one_line_error(rescue("analyze", "--json", str(capture)), message)


def test_a_capture_is_read_without_following_links(capture: Path, tmp_path: Path) -> None:
    # The listener writes regular files only; a link could show another file's lines as evidence.
    (capture / "dmesg.txt").write_text("boot ok\n")
    outside = tmp_path / "secret.log"
    outside.write_text(CRC32C_LINE)
    (capture / "console.log").symlink_to(outside)
    os.mkfifo(capture / "serial.log")  # and a FIFO would block
    proc = rescue("analyze", "--json", str(capture))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["files"] == ["dmesg.txt"]


# --- initramfs images ---------------------------------------------------------------------------------


def test_a_decompression_bomb_is_refused_within_bounded_memory(tmp_path: Path) -> None:
    require(shutil.which("zstd") is not None, "zstd is not installed")
    zeros = tmp_path / "zeros"
    with zeros.open("wb") as f:
        f.truncate(3 << 30)  # sparse: 3 GiB of zeros that take no disk
    bomb = tmp_path / "initrd.img"
    run(["zstd", "-q", "-1", "-o", str(bomb), str(zeros)])
    zeros.unlink()
    assert bomb.stat().st_size < 1 << 20
    # Without the cap this needs 3 GiB and dies of MemoryError under the 2 GiB address-space limit.
    proc = rescue("check-image", "--json", str(bomb), memory=2 << 30)
    one_line_error(proc, "unpacks to more than 1024 MiB; refusing")
    assert "--max-unpacked" in proc.stderr


def test_a_gzip_bomb_is_refused_at_a_chosen_limit(tmp_path: Path) -> None:
    require(shutil.which("gzip") is not None, "gzip is not installed")
    zeros = tmp_path / "zeros"
    with zeros.open("wb") as f:
        f.truncate(256 << 20)
    bomb = tmp_path / "initrd.img"
    bomb.write_bytes(run(["gzip", "-1", "-c", str(zeros)]).stdout)
    one_line_error(rescue("check-image", "--max-unpacked", "16M", str(bomb)), "unpacks to more than 16 MiB")
    one_line_error(rescue("check-image", "--max-unpacked", "lots", str(bomb)), "bad size 'lots'")


def test_an_endless_device_or_a_huge_file_is_refused(tmp_path: Path) -> None:
    one_line_error(rescue("check-image", "--max-unpacked", "1M", "/dev/zero"), "holds more than 1 MiB")
    huge = tmp_path / "initrd.img"
    with huge.open("wb") as f:
        f.truncate(8 << 30)  # sparse; refused from its size, before anything is read
    proc = rescue("check-image", str(huge), memory=512 << 20)
    one_line_error(proc, "holds more than 1024 MiB")


def test_a_truncated_zstd_image_names_the_damage(tmp_path: Path) -> None:
    require(shutil.which("zstd") is not None, "zstd is not installed")
    archive = cpio([CpioEntry("lib", DIR), CpioEntry("init", FILE, os.urandom(50_000))])
    packed = run(["zstd", "-q", "-c"], input=archive).stdout
    image = tmp_path / "initrd.img"
    image.write_bytes(packed[: len(packed) // 2])
    one_line_error(rescue("check-image", str(image)), "zstd data truncated")


def test_a_header_that_lies_about_sizes(tmp_path: Path) -> None:
    archive = bytearray(cpio([CpioEntry("init", FILE, b"#!/bin/sh\n")]))
    archive[6 + 8 * 6 : 6 + 8 * 7] = b"7FFFFFFF"  # c_filesize of the first member: 2 GiB
    image = tmp_path / "initrd.img"
    image.write_bytes(bytes(archive))
    one_line_error(rescue("check-image", str(image)), "cpio archive truncated")


def test_hostile_member_names_are_read_never_extracted(tmp_path: Path) -> None:
    require(shutil.which("zstd") is not None, "zstd is not installed")
    victim = tmp_path / "victim"
    names = [f"../../../../../../{victim}", str(tmp_path / "absolute"), "./../escape"]
    entries = [CpioEntry(n, FILE, b"owned\n") for n in names]
    entries += [CpioEntry(f"many/{i}", FILE) for i in range(5000)]
    image = tmp_path / "initrd.img"
    image.write_bytes(run(["zstd", "-q", "-c"], input=cpio(entries)).stdout)
    work = tmp_path / "cwd"
    work.mkdir()
    one_line_error(rescue("check-image", str(image), cwd=work), "no lib/modules directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "initrd.img"]
    assert list(work.iterdir()) == []


def test_module_metadata_of_absurd_size_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A 300 MB modules.dep of distinct lines, parsed, took 4 GB and a minute; the limit is scaled down here.
    from rescue.image import check as checkimage

    monkeypatch.setattr(checkimage, "MAX_METADATA", 10_000)
    moddir = "lib/modules/6.1.0-99-test-amd64"
    dep = "".join(f"kernel/m{i}.ko: kernel/d{i}.ko\n" for i in range(1000)).encode()
    dirs = [CpioEntry(d, DIR) for d in ("lib", "lib/modules", moddir)]
    image = tmp_path / "initrd.img"
    image.write_bytes(cpio([*dirs, CpioEntry(f"{moddir}/modules.dep", FILE, dep)]))
    with pytest.raises(RescueError, match=r"modules\.dep holds 30,780 bytes; refusing"):
        checkimage.check_image(image, require=["btrfs"])


def test_a_failing_disk_is_not_called_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    from rescue import cli

    assert cli._fail(OSError(errno.EIO, "Input/output error", "/var/x")) == 74
    assert capsys.readouterr().err == "rescue: /var/x: input/output error\n"
    assert cli._fail(OSError(errno.ENOENT, "No such file or directory", "/nope")) == 2
    assert cli._fail(OSError(errno.ENOSPC, "No space left on device", "/full")) == 74

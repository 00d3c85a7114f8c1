"""Hostile and damaged tar streams: nothing received is lost or faked, and what is written is bounded."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import tarfile
from pathlib import Path

from rescue.listen.replay import build_replay, send
from tests.conftest import Listener, nc_send
from tests.integration.hostile import DMESG, files_on_disk, manifest_of, sha, tar_of, vm_hwm


def test_a_member_named_like_the_spool_cannot_clobber_it(listener: Listener, busybox: str) -> None:
    data = tar_of([("stream.tar", b"not the spool\n"), ("after.txt", b"still here\n")])
    assert nc_send(busybox, listener.port, data).returncode == 0
    ev = listener.wait_for("capture")
    cap = Path(ev["path"])
    assert ev["status"] == "complete"
    assert (cap / "_stream.tar").read_bytes() == b"not the spool\n"
    assert (cap / "after.txt").read_bytes() == b"still here\n"


def test_a_file_after_a_directory_of_the_same_name_and_later_members(
    listener: Listener, busybox: str
) -> None:
    data = tar_of([("d/x", b"inner\n"), ("d", b"a file named d\n"), ("later.txt", b"later\n")])
    assert nc_send(busybox, listener.port, data).returncode == 0
    ev = listener.wait_for("capture")
    cap = Path(ev["path"])
    assert ev["status"] == "complete"
    assert (cap / "d" / "x").read_bytes() == b"inner\n" and (cap / "d~2").read_bytes() == b"a file named d\n"
    assert (cap / "later.txt").read_bytes() == b"later\n"
    assert {"name": "d", "reason": "stored as d~2: the name is taken"} in manifest_of(cap)["skipped"]


def test_a_path_too_long_for_the_file_system_is_kept_under_another_name(
    listener: Listener, busybox: str
) -> None:
    long_name = "/".join(["p" * 199] * 21)  # 4,200 bytes: every part fits NAME_MAX, the whole not PATH_MAX
    data = tar_of([(long_name, b"deep\n"), ("later.txt", b"later\n")], fmt=tarfile.PAX_FORMAT)
    assert nc_send(busybox, listener.port, data).returncode == 0
    ev = listener.wait_for("capture")
    cap = Path(ev["path"])
    assert ev["status"] == "complete" and (cap / "later.txt").read_bytes() == b"later\n"
    assert (cap / "_member1").read_bytes() == b"deep\n"
    assert manifest_of(cap)["skipped"][0]["reason"].startswith("stored as _member1")


def test_a_tar_cut_at_a_member_boundary_is_incomplete(listener: Listener, busybox: str) -> None:
    data = tar_of([("a.txt", b"A" * 700), ("b.txt", b"B" * 10)], end=False)
    assert nc_send(busybox, listener.port, data).returncode == 0
    ev = listener.wait_for("capture")
    cap = Path(ev["path"])
    assert ev["status"] == "incomplete" and "end-of-archive" in ev["reason"]
    assert (cap / "stream.tar.partial").read_bytes() == data  # every byte that came is kept
    assert (cap / "a.txt").read_bytes() == b"A" * 700


def test_a_tar_cut_inside_a_header_keeps_the_spool(listener: Listener, busybox: str) -> None:
    whole = tar_of([("a.txt", b"A" * 700), ("b.txt", b"B" * 10)])
    data = whole[: 1536 + 100]  # the first member, then 100 bytes of the second header
    assert nc_send(busybox, listener.port, data).returncode == 0
    ev = listener.wait_for("capture")
    cap = Path(ev["path"])
    assert ev["status"] == "incomplete" and "inside a member header" in ev["reason"]
    assert (cap / "stream.tar.partial").read_bytes() == data


def test_a_member_cut_mid_way_keeps_the_bytes_that_arrived(listener: Listener, busybox: str) -> None:
    payload = os.urandom(300_000)
    whole = tar_of([("big.bin", payload)])
    data = whole[: 512 + 200_000]
    assert nc_send(busybox, listener.port, data).returncode == 0
    ev = listener.wait_for("capture")
    cap = Path(ev["path"])
    assert ev["status"] == "incomplete"
    assert (cap / "big.bin.partial").read_bytes() == payload[:200_000]


def test_a_gzip_bomb_writes_no_more_than_max_bytes(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "c", "--max-bytes", "4M")
    bomb = gzip.compress(tar_of([("zeros.bin", b"\0" * (64 << 20))]), compresslevel=9)
    assert len(bomb) < 256 << 10
    assert nc_send(busybox, lst.port, bomb).returncode == 0
    ev = lst.wait_for("capture", timeout=60)
    assert ev["status"] == "incomplete" and "max-bytes" in ev["reason"]
    on_disk = files_on_disk(ev["path"])
    assert sum(on_disk.values()) <= (4 << 20) + len(bomb)  # the extracted bytes, and the spool
    assert on_disk["zeros.bin.partial"] == 4 << 20


def test_a_sparse_member_cannot_expand_past_max_bytes(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "c", "--max-bytes", "4M")
    sparse = tmp_path / "sparse.img"
    with sparse.open("wb") as f:
        f.truncate(1 << 30)  # 1 GiB of holes
        f.write(b"data at the start\n")
    archive = subprocess.run(
        ["tar", "--sparse", "--format=gnu", "-cf", "-", "-C", str(tmp_path), "sparse.img"],
        capture_output=True,
        check=True,
    ).stdout
    assert len(archive) < 64 << 10
    assert nc_send(busybox, lst.port, archive).returncode == 0
    ev = lst.wait_for("capture", timeout=60)
    assert ev["status"] == "incomplete" and "max-bytes" in ev["reason"]
    assert files_on_disk(ev["path"])["sparse.img.partial"] == 4 << 20


def test_a_huge_pax_header_is_damage_not_memory(listener: Listener, busybox: str) -> None:
    info = tarfile.TarInfo("x.txt")
    info.pax_headers = {"comment": "c" * (3 << 20)}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(tarfile.TarInfo("first.txt"), io.BytesIO(b""))
        tar.addfile(info, io.BytesIO(b""))
    assert nc_send(busybox, listener.port, buf.getvalue()).returncode == 0
    ev = listener.wait_for("capture")
    assert ev["status"] == "incomplete" and "pax header" in ev["reason"]
    assert "stream.tar.partial" in ev["files"]


def test_sha256sums_mismatch_is_corrupt_and_said_first(listener: Listener, busybox: str) -> None:
    sums = f"{sha(b'other')}  dmesg.txt\n".encode()
    assert (
        nc_send(busybox, listener.port, tar_of([("dmesg.txt", DMESG), ("SHA256SUMS", sums)])).returncode == 0
    )
    ev = listener.wait_for("capture")
    assert ev["status"] == "corrupt" and ev["headline"].startswith("CORRUPT: SHA256SUMS")
    assert "btrfs-crc32c-missing" in ev["headline"]  # the diagnosis still follows
    assert manifest_of(ev["path"])["reason"].startswith("SHA256SUMS does not match")


def test_a_huge_sha256sums_is_read_in_bounded_memory(listener: Listener, busybox: str) -> None:
    line = f"{sha(b'x')}  {'n' * 60}\n".encode()
    sums = line * ((24 << 20) // len(line))  # 24 MiB
    data = tar_of([("dmesg.txt", DMESG), ("SHA256SUMS", sums)])
    assert nc_send(busybox, listener.port, data, timeout=120).returncode == 0
    ev = listener.wait_for("capture", timeout=120)
    assert ev["sha256sums"] == "mismatch" and ev["status"] == "corrupt"
    problems = manifest_of(ev["path"])["sha256sums_problems"]
    assert len(problems) <= 52 and "larger than" in problems[-1]
    assert vm_hwm(listener.proc.pid) < 256 << 20


def test_too_many_members_stop_with_a_reason(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "c")
    data = tar_of([(f"f{n}", b"") for n in range(10_050)])
    assert nc_send(busybox, lst.port, data, timeout=120).returncode == 0
    ev = lst.wait_for("capture", timeout=120)
    assert ev["status"] == "incomplete" and "more than 10000 members" in ev["reason"]


def test_replay_of_an_incomplete_capture_stays_incomplete(listener: Listener, busybox: str) -> None:
    whole = tar_of([("a.txt", b"A" * 700), ("b.txt", os.urandom(5000))])
    cut = whole[:2048]
    assert nc_send(busybox, listener.port, cut).returncode == 0
    first = listener.wait_for("capture")
    assert first["status"] == "incomplete"
    send(build_replay(Path(first["path"])).stream, "127.0.0.1", listener.port)
    again = listener.wait_for("capture")
    assert again["status"] == "incomplete"
    assert (Path(again["path"]) / "stream.tar.partial").read_bytes() == cut
    assert manifest_of(again["path"])["header"]["incomplete"] == "1"


def test_a_huge_kernel_log_is_analysed_in_bounded_memory(tmp_path: Path, busybox: str) -> None:
    lst = Listener(tmp_path / "c")
    script = f"yes '[    1.000000] a kernel line' | head -c {300 << 20} | {busybox} nc 127.0.0.1 {lst.port}"
    assert subprocess.run(["sh", "-c", script], timeout=300).returncode == 0
    ev = lst.wait_for("capture", timeout=300)
    assert ev["status"] == "complete" and ev["bytes"] == 300 << 20
    assert vm_hwm(lst.proc.pid) < 256 << 20

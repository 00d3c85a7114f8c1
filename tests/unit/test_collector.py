"""The collector under busybox-static's ash against a fake root whose module tree is real (copied .ko files,
real depmod). /proc and blkid are fixtures: the host's would describe this machine, not a failed boot."""

from __future__ import annotations

import contextlib
import hashlib
import socket
from pathlib import Path

import pytest

from tests.collector_root import BTRFS_UUID, FakeRoot, build, run_collector
from tests.conftest import free_port, require
from tests.host_kernel import HOST_MODDIR, KVER, ko

MEMBERS = {
    "dmesg.txt", "cmdline.txt", "modules.txt", "crypto.txt", "filesystems.txt", "partitions.txt",
    "mounts.txt", "blkid.txt", "disks.txt", "info.txt", "initramfs-modules.txt", "modules-dep.txt",
    "network.txt", "modcheck.txt", "devices.txt", "storage.txt", "SHA256SUMS",
}  # fmt: skip


@pytest.fixture(autouse=True)
def _kernel() -> None:
    require((HOST_MODDIR / "modules.dep").is_file(), f"{HOST_MODDIR} is missing (linux-image-cloud-amd64)")


def modcheck(fake: FakeRoot) -> list[str]:
    return (fake.bundle / "modcheck.txt").read_text().splitlines()


def test_btrfs_with_libcrc32c_is_ok(busybox: str, tmp_path: Path) -> None:
    fake = build(tmp_path)
    proc = run_collector(busybox, fake, "test")
    lines = modcheck(fake)
    assert lines[0] == "# rescue modcheck 1"
    assert lines[1] == "fstype btrfs source=blkid"
    assert "need btrfs root - available" in lines
    assert "need libcrc32c dep btrfs available" in lines
    assert "need crypto-crc32c softdep btrfs builtin crc32c_generic" in lines
    # libcrc32c's own softdep on crc32c is walked too (busybox modprobe would ignore it).
    assert "need crc32c softdep libcrc32c builtin crc32c_generic" in lines
    assert "crypto crc32c present driver=crc32c-generic" in lines
    assert lines[-1] == "result ok"
    # The person at the console sees the same lines.
    assert "rescue: result ok" in proc.stdout
    # No host configured: collected, not sent, and it says so.
    assert proc.returncode == 1
    assert "rescue: send failed: no host configured" in proc.stdout


def test_btrfs_without_libcrc32c_names_it(busybox: str, tmp_path: Path) -> None:
    fake = build(tmp_path, drop=["libcrc32c"])
    proc = run_collector(busybox, fake, "test")
    lines = modcheck(fake)
    # depmod on the trimmed tree no longer lists libcrc32c for btrfs; btrfs.ko's own depends= still does.
    dep = (fake.bundle / "modules-dep.txt").read_text()
    btrfs, xor, raid6 = (
        ko("kernel/fs/btrfs/btrfs.ko"),
        ko("kernel/crypto/xor.ko"),
        ko("kernel/lib/raid6/raid6_pq.ko"),
    )
    assert f"{btrfs}: {xor} {raid6}" in dep
    assert "libcrc32c.ko" not in dep.split("\n")[0]
    assert "depends=" in dep and "libcrc32c" in dep
    assert "need libcrc32c dep btrfs missing" in lines
    assert "need crypto-crc32c softdep btrfs builtin crc32c_generic" in lines
    assert lines[-1] == "result fail missing=libcrc32c"
    assert "rescue: need libcrc32c dep btrfs missing" in proc.stdout
    assert "rescue: result fail missing=libcrc32c" in proc.stdout


def test_loaded_modules_come_from_proc_modules(busybox: str, tmp_path: Path) -> None:
    fake = build(
        tmp_path, proc_modules="btrfs 1675264 0 - Live 0x0000000000000000\nxor 24576 1 btrfs, Live 0x0\n"
    )
    run_collector(busybox, fake, "test")
    lines = modcheck(fake)
    assert "need btrfs root - loaded" in lines
    assert "need xor dep btrfs loaded" in lines
    assert "need raid6_pq dep btrfs available" in lines


def test_missing_filesystem_module(busybox: str, tmp_path: Path) -> None:
    # An image without btrfs at all (MODULES=dep in a container does this).
    fake = build(tmp_path, roots=["xor"])
    run_collector(busybox, fake, "test")
    lines = modcheck(fake)
    assert "need btrfs root - missing" in lines
    assert lines[-1] == "result fail missing=btrfs"


@pytest.mark.parametrize(
    ("env", "cmdline", "blkid", "expected"),
    [
        ({"ROOTFSTYPE": "btrfs"}, "root=/dev/vda", None, "fstype btrfs source=ROOTFSTYPE"),
        ({}, "root=/dev/vda rootfstype=btrfs", None, "fstype btrfs source=cmdline"),
        ({"ROOT": "/dev/vda"}, "quiet", None, "fstype btrfs source=blkid"),
        ({}, "root=LABEL=nosuch", None, "fstype btrfs source=signature"),
        ({}, "root=/dev/vdb", '/dev/vdb: UUID="x" TYPE="ext4"\n', "fstype ext4 source=blkid"),
        ({}, "root=/dev/vdb", "", "fstype unknown source=none"),
    ],
)
def test_root_fstype_sources(
    busybox: str, tmp_path: Path, env: dict[str, str], cmdline: str, blkid: str | None, expected: str
) -> None:
    fake = build(tmp_path, cmdline=cmdline)
    if blkid is not None:
        fake.blkid.write_text(blkid)
    run_collector(busybox, fake, "test", **env)
    lines = modcheck(fake)
    assert lines[1] == expected
    if expected.endswith("source=none"):
        assert lines[-1] == "result ok"
        assert not any(line.startswith("need ") for line in lines)


def test_bundle_members_checksums_and_masking(busybox: str, tmp_path: Path) -> None:
    cifs = "cifs://admin:pa55word@nas/root"
    fake = build(tmp_path, cmdline=f"console=ttyS0 root={cifs} rescue.token=s3cr3t-tok")
    (fake.path / "etc" / "rescue.conf").write_text("RESCUE_TOKEN=s3cr3t-tok\n")
    run_collector(busybox, fake, "panic", ROOT=cifs)
    names = {p.name for p in fake.bundle.iterdir()}
    assert names == MEMBERS
    sums = {}
    for line in (fake.bundle / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(None, 1)
        sums[name] = digest
    assert set(sums) == MEMBERS - {"SHA256SUMS"}
    for name, digest in sums.items():
        assert hashlib.sha256((fake.bundle / name).read_bytes()).hexdigest() == digest, name
    everything = b"".join(p.read_bytes() for p in fake.bundle.iterdir())
    for secret in (b"s3cr3t-tok", b"pa55word", b"hunter2"):
        assert secret not in everything
    assert "rescue.token=***" in (fake.bundle / "cmdline.txt").read_text()
    assert "cifs://admin:***@nas/root" in (fake.bundle / "cmdline.txt").read_text()
    assert "rd.iscsi.password=***" in (fake.bundle / "dmesg.txt").read_text()
    info = dict(line.split("=", 1) for line in (fake.bundle / "info.txt").read_text().splitlines())
    assert set(info) == {"KERNEL", "HOSTNAME", "MACHINE", "BOOT_ID", "GENERATOR", "ROOT", "ROOTFSTYPE",
                         "ROOTFLAGS", "REASON", "RESCUE_VERSION"}  # fmt: skip
    assert info["KERNEL"] == KVER
    assert info["REASON"] == "panic"
    assert info["GENERATOR"] == "custom"
    assert info["ROOT"] == "cifs://admin:***@nas/root"
    # Raw levels kept; every module path of the tree listed.
    assert (fake.bundle / "dmesg.txt").read_text().startswith("<6>")
    mods = (fake.bundle / "initramfs-modules.txt").read_text().split()
    assert ko("kernel/fs/btrfs/btrfs.ko") in mods and ko("kernel/lib/libcrc32c.ko") in mods


def test_rescue_off_does_nothing(busybox: str, tmp_path: Path) -> None:
    fake = build(tmp_path, cmdline="root=/dev/vda rescue=off")
    proc = run_collector(busybox, fake, "panic")
    assert proc.returncode == 0
    assert "rescue: disabled (rescue=off)" in proc.stdout
    assert not fake.bundle.exists()


def test_cmdline_overrides_config_file_overrides_default(busybox: str, tmp_path: Path) -> None:
    file_port, cmdline_port = free_port(), free_port()
    fake = build(tmp_path, cmdline=f"root=/dev/vda rescue.port={cmdline_port}")
    (fake.path / "etc" / "rescue.conf").write_text(f"RESCUE_HOST=127.0.0.1\nRESCUE_PORT={file_port}\n")
    proc = run_collector(busybox, fake, "panic", RESCUE_TIMEOUT="2")
    assert proc.returncode == 1
    assert f"rescue: send failed: 127.0.0.1:{cmdline_port}:" in proc.stdout
    (fake.path / "proc" / "cmdline").write_text("root=/dev/vda\n")
    proc = run_collector(busybox, fake, "panic", RESCUE_TIMEOUT="2")
    assert f"rescue: send failed: 127.0.0.1:{file_port}:" in proc.stdout


def test_send_gives_up_at_the_deadline_when_the_peer_never_closes(busybox: str, tmp_path: Path) -> None:
    # A peer that accepts and reads but never closes: busybox nc would wait forever without the bound.
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        fake = build(tmp_path)
        proc = run_collector(busybox, fake, "panic", timeout=60, RESCUE_HOST="127.0.0.1",
                             RESCUE_PORT=str(port), RESCUE_TIMEOUT="3")  # fmt: skip
    assert proc.returncode == 1
    assert f"rescue: send failed: 127.0.0.1:{port}" in proc.stdout
    assert not list((fake.path / "run" / "rescue").glob("sent-*"))


def test_builtin_filesystem_and_builtin_softdeps(busybox: str, tmp_path: Path) -> None:
    # ext4 is built into this kernel; its softdep on crypto-crc32c lives only in modules.builtin.modinfo.
    fake = build(tmp_path, roots=["xor"])
    run_collector(busybox, fake, "test", ROOTFSTYPE="ext4")
    lines = modcheck(fake)
    assert lines[1] == "fstype ext4 source=ROOTFSTYPE"
    assert "need ext4 root - builtin" in lines
    assert "need crypto-crc32c softdep ext4 builtin crc32c_generic" in lines
    assert lines[-1] == "result ok"


def test_listed_in_modules_dep_but_file_missing(busybox: str, tmp_path: Path) -> None:
    # A hand-built image that copied the kernel's modules.dep but not every .ko: the file decides.
    fake = build(tmp_path)
    (fake.path / f"lib/modules/{KVER}" / ko("kernel/lib/libcrc32c.ko")).unlink()
    run_collector(busybox, fake, "test")
    lines = modcheck(fake)
    assert "need libcrc32c dep btrfs missing" in lines
    assert lines[-1] == "result fail missing=libcrc32c"


def _btrfs_device(fake: FakeRoot, csum: str) -> None:
    """A real btrfs filesystem (mkfs.btrfs on a sparse file) where blkid says the root is: /dev/vda."""
    import shutil
    import subprocess

    require(shutil.which("mkfs.btrfs") is not None, "btrfs-progs is not installed")
    dev = fake.path / "dev" / "vda"
    with dev.open("wb") as f:
        f.truncate(128 << 20)
    subprocess.run(["mkfs.btrfs", "-q", "-f", "--csum", csum, str(dev)], check=True, capture_output=True)


def test_optional_checksum_softdeps_do_not_fail_the_check(busybox: str, tmp_path: Path) -> None:
    # Debian's own MODULES=most image has no xxhash_generic: harmless for a crc32c filesystem.
    fake = build(tmp_path, drop=["xxhash_generic"])
    _btrfs_device(fake, "crc32c")
    run_collector(busybox, fake, "test")
    lines = modcheck(fake)
    assert "need xxhash64 softdep btrfs missing" in lines
    assert "# btrfs checksum: crc32c" in lines
    assert "# missing, needed only by filesystems that use them: xxhash64" in lines
    assert lines[-1] == "result ok"


def test_the_root_filesystems_checksum_module_is_required(busybox: str, tmp_path: Path) -> None:
    fake = build(tmp_path, drop=["xxhash_generic"])
    _btrfs_device(fake, "xxhash")
    run_collector(busybox, fake, "test")
    lines = modcheck(fake)
    assert "# btrfs checksum: xxhash64" in lines
    assert lines[-1] == "result fail missing=xxhash64"


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [("root=/dev/vda", "fstype btrfs source=blkid"), ("root=UUID={uuid}", "fstype btrfs source=signature")],
)
def test_without_blkid_the_partitions_are_probed(
    busybox: str, tmp_path: Path, cmdline: str, expected: str
) -> None:
    # busybox-static has no blkid applet and a hand-built image may lack util-linux: klibc fstype (or the
    # btrfs magic) on each partition of /proc/partitions says what is there.
    fake = build(tmp_path, cmdline=cmdline, drop=["libcrc32c"])
    _btrfs_device(fake, "crc32c")
    run_collector(busybox, fake, "test", RESCUE_BLKID="probe")
    assert '/dev/vda: TYPE="btrfs"' in (fake.bundle / "blkid.txt").read_text()
    lines = modcheck(fake)
    assert lines[1] == expected
    assert "# btrfs checksum: crc32c" in lines
    assert lines[-1] == "result fail missing=libcrc32c"


def test_a_stale_lock_does_not_stop_it(busybox: str, tmp_path: Path) -> None:
    # A collector killed mid-way leaves /run/rescue/lock; a pid that no longer runs must not block the next.
    import subprocess

    fake = build(tmp_path)
    lock = fake.path / "run" / "rescue" / "lock"
    lock.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (lock / "pid").write_text(f"{dead.pid}\n")
    proc = run_collector(busybox, fake, "test")
    assert "rescue: collecting evidence" in proc.stdout
    assert (fake.bundle / "modcheck.txt").is_file()
    assert not lock.exists()


def test_a_running_collector_is_not_doubled(busybox: str, tmp_path: Path) -> None:
    import os

    fake = build(tmp_path)
    lock = fake.path / "run" / "rescue" / "lock"
    lock.mkdir(parents=True)
    (lock / "pid").write_text(f"{os.getpid()}\n")  # alive: this test process
    proc = run_collector(busybox, fake, "test")
    assert proc.returncode == 0
    assert f"another collector is running (pid {os.getpid()})" in proc.stdout
    assert not fake.bundle.exists()


def test_the_watchdog_bounds_a_hang(busybox: str, tmp_path: Path) -> None:
    # A FIFO with no writer blocks the read forever, as a probe of a dying disk can: the watchdog ends the
    # collector shortly after RESCUE_TIMEOUT and gives the console back.
    import os

    fifo = tmp_path / "hang"
    os.mkfifo(fifo)
    fake = build(tmp_path / "f")
    try:
        proc = run_collector(busybox, fake, "test", timeout=60, RESCUE_DMESG=str(fifo), RESCUE_TIMEOUT="2")
        assert "rescue: timed out after 7 s; giving up" in proc.stdout
        assert proc.returncode != 0
        assert not (fake.path / "run" / "rescue" / "lock").exists()
    finally:
        # Release the reader left behind: opening for writing and closing gives it EOF (ENXIO: none left).
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.parametrize(
    ("env", "cmdline", "line"),
    [
        ({}, "root=UUID={uuid}", f"rootdev UUID={BTRFS_UUID} present"),
        ({"ROOT": "/dev/vda"}, "quiet", "rootdev /dev/vda present"),
        ({"ROOT": "/dev/vdb"}, "quiet", "rootdev /dev/vdb missing"),
        ({}, "root=UUID=00000000-dead-beef", "rootdev UUID=00000000-dead-beef missing"),
        ({}, "root=LABEL=nowhere", "rootdev LABEL=nowhere missing"),
        ({}, "root=/dev/nfs nfsroot=10.0.2.2:/srv", None),
        ({}, "root=ZFS=rpool/ROOT", None),
    ],
)
def test_the_root_device_is_present_or_missing(
    busybox: str, tmp_path: Path, env: dict[str, str], cmdline: str, line: str | None
) -> None:
    fake = build(tmp_path, cmdline=cmdline)
    run_collector(busybox, fake, "test", **env)
    lines = modcheck(fake)
    assert [x for x in lines if x.startswith("rootdev ")] == ([line] if line else [])
    assert lines[-1].startswith("result ")

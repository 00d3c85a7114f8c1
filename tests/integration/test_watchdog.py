"""The watchdog (hooks/collector/watchdog.sh) under busybox-static's ash against a fake root, sending with
busybox nc to a real `rescue listen`: it sends by itself when the root is not mounted in time, stays quiet
when it is (or when stopped), and the panic script after it sends nothing more (one marker per boot)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.collector_root import COLLECTOR, FakeRoot, build, run_collector
from tests.conftest import Listener, require, wait_until
from tests.host_kernel import HOST_MODDIR

WATCHDOG = COLLECTOR.parent / "watchdog.sh"
MACHINE_ID = "5f1c0e6a9b3d4c2e8a7f6b5c4d3e2f10"


@pytest.fixture(autouse=True)
def _kernel() -> None:
    require((HOST_MODDIR / "modules.dep").is_file(), f"{HOST_MODDIR} is missing (linux-image-cloud-amd64)")


def start(busybox: str, fake: FakeRoot, port: int, *args: str) -> subprocess.Popen[str]:
    (fake.path / "kmsg").touch()  # the kernel log stand-in: written only where it exists, as /dev/kmsg
    env = fake.env(RESCUE_HOST="127.0.0.1", RESCUE_PORT=str(port), RESCUE_SH=f"{busybox} ash",
                   RESCUE_KMSG=str(fake.path / "kmsg"))  # fmt: skip
    return subprocess.Popen([busybox, "ash", str(WATCHDOG), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def with_nic(fake: FakeRoot) -> None:
    nic = fake.path / "sys" / "class" / "net" / "ens3"
    (nic / "device").mkdir(parents=True)
    (nic / "address").write_text("52:54:00:12:34:56\n")
    (fake.path / "sys" / "class" / "net" / "lo").mkdir()


def test_sends_when_the_root_is_not_mounted_in_time(busybox: str, tmp_path: Path, listener: Listener) -> None:
    fake = build(tmp_path, cmdline="console=ttyS0 root=/dev/vdb panic=10 rescue.after=1")
    with_nic(fake)
    (fake.path / "etc" / "rescue.conf").write_text("RESCUE_HOSTNAME=web1\n")
    proc = start(busybox, fake, listener.port, "initramfs-tools")
    out, _ = proc.communicate(timeout=60)
    assert "the root filesystem is not mounted after 1s" in out, out
    assert "rescue: sent " in out, out
    event = listener.wait_for("capture")
    assert event["status"] == "complete"
    info = (Path(event["path"]) / "info.txt").read_text().splitlines()
    assert "REASON=watchdog" in info and "GENERATOR=initramfs-tools" in info
    header = json.loads((Path(event["path"]) / "manifest.json").read_text())["header"]
    assert header["machine"] == "525400123456" and header["mac"] == "52:54:00:12:34:56"
    assert header["host"] == "web1"  # baked in at build time, not the initramfs's "(none)"
    assert Path(event["path"]).parent.name == "525400123456"
    # The identity line went to the kernel log, early (the watchdog's start) and again from the collector.
    kmsg = (fake.path / "kmsg").read_text().splitlines()
    assert kmsg[0] == "<5>rescue: boot=1b4e28ba-2fa1-11d2-883f-0016d3cca427 machine=525400123456"
    # The panic script runs later (panic() without panic=): it shares the marker and sends nothing more.
    again = run_collector(busybox, fake, "panic", RESCUE_HOST="127.0.0.1", RESCUE_PORT=str(listener.port))
    assert "evidence already sent (panic)" in again.stdout, again.stdout


def test_quiet_when_the_root_is_mounted(busybox: str, tmp_path: Path, listener: Listener) -> None:
    fake = build(tmp_path, cmdline="console=ttyS0 root=/dev/vda rescue.after=1")
    with (fake.path / "proc" / "mounts").open("a") as f:
        f.write("/dev/vda /root btrfs rw 0 0\n")
    proc = start(busybox, fake, listener.port, "initramfs-tools")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "rescue:" not in out, out
    assert not (fake.path / "run" / "rescue" / "bundle").exists()


def test_stop_ends_the_watchdog_and_its_sleep(busybox: str, tmp_path: Path, listener: Listener) -> None:
    fake = build(tmp_path, cmdline="console=ttyS0 root=/dev/vda")  # the default delay: 20 s
    (fake.path / "etc" / "machine-id").write_text(MACHINE_ID + "\n")
    proc = start(busybox, fake, listener.port, "initramfs-tools")
    pidfile = fake.path / "run" / "rescue" / "watchdog.pid"
    wait_until(pidfile.exists, 10, "the watchdog's pid file")  # written whole, never half
    pids = [int(p) for p in pidfile.read_text().split()]
    assert pids[0] == proc.pid and len(pids) == 2
    kmsg = (fake.path / "kmsg").read_text()
    assert f"machine={MACHINE_ID}" in kmsg  # the image's machine-id comes first
    stop = subprocess.run([busybox, "ash", str(WATCHDOG), "stop"], env=fake.env(), timeout=10)
    assert stop.returncode == 0
    out, _ = proc.communicate(timeout=10)
    assert "rescue:" not in out, out
    wait_until(lambda: not Path(f"/proc/{pids[1]}").exists(), 10, "the sleep to end")


def test_stopped_before_it_got_going(busybox: str, tmp_path: Path, listener: Listener) -> None:
    """A fast boot may mount the root before the watchdog has written its pid file: it ends by itself."""
    fake = build(tmp_path, cmdline="console=ttyS0 root=/dev/vda")
    stop = subprocess.run([busybox, "ash", str(WATCHDOG), "stop"], env=fake.env(), timeout=10)
    assert stop.returncode == 0
    proc = start(busybox, fake, listener.port, "initramfs-tools")
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "rescue:" not in out, out


@pytest.mark.parametrize(
    ("generator", "cmdline", "after"),
    [
        ("initramfs-tools", "root=/dev/vda", 20),
        ("initramfs-tools", "root=/dev/vda rootdelay=90", 60),
        ("dracut", "root=/dev/vda", 60),
        ("dracut", "root=/dev/vda rd.retry=30", 20),
        ("dracut", "root=/dev/vda rd.timeout=45", 30),
        ("dracut", "root=/dev/vda rescue.after=7", 7),
    ],
)
def test_default_delay(busybox: str, tmp_path: Path, generator: str, cmdline: str, after: int) -> None:
    fake = build(tmp_path, cmdline=cmdline)
    env = fake.env(RESCUE_KMSG=str(fake.path / "kmsg"))
    if "rootdelay=90" in cmdline:
        env["ROOTDELAY"] = "90"  # initramfs-tools' init exports it
    proc = subprocess.Popen([busybox, "ash", str(WATCHDOG), generator], env=env)
    pidfile = fake.path / "run" / "rescue" / "watchdog.pid"
    try:
        wait_until(pidfile.exists, 10, "the watchdog's pid file")
        sleep_pid = pidfile.read_text().split()[1]
        wait_until(lambda: Path(f"/proc/{sleep_pid}/cmdline").exists(), 5, "the sleep")
        argv = Path(f"/proc/{sleep_pid}/cmdline").read_bytes().split(b"\0")
        assert argv[-2:] == [str(after).encode(), b""], argv
    finally:
        subprocess.run([busybox, "ash", str(WATCHDOG), "stop"], env=fake.env(), timeout=10)
        proc.wait(timeout=10)


def test_after_zero_and_rescue_off_turn_it_off(busybox: str, tmp_path: Path) -> None:
    for cmdline in ("root=/dev/vda rescue.after=0", "root=/dev/vda rescue=off"):
        fake = build(tmp_path / cmdline.split()[-1], cmdline=cmdline)
        done = subprocess.run([busybox, "ash", str(WATCHDOG), "dracut"], env=fake.env(), timeout=10)
        assert done.returncode == 0
        assert not (fake.path / "run" / "rescue" / "watchdog.pid").exists()


def test_a_passphrase_prompt_postpones_it(busybox: str, tmp_path: Path, listener: Listener) -> None:
    """A boot waiting for a LUKS passphrase is waiting for a person: the watchdog waits another round."""
    fake = build(tmp_path, cmdline="console=ttyS0 root=/dev/mapper/root rescue.after=1")
    askpass = fake.path / "proc" / "4242"
    askpass.mkdir()
    (askpass / "comm").write_text("askpass\n")
    proc = start(busybox, fake, listener.port, "initramfs-tools")
    pidfile = fake.path / "run" / "rescue" / "watchdog.pid"
    wait_until(pidfile.exists, 10, "the watchdog's pid file")
    first = pidfile.read_text().split()[1]
    # A second sleep, not a send: the prompt is still there.
    wait_until(lambda: pidfile.read_text().split()[1:] not in ([first], []), 10, "the second round")
    assert proc.poll() is None
    (askpass / "comm").unlink()
    askpass.rmdir()
    out, _ = proc.communicate(timeout=60)
    assert "rescue: sent " in out, out
    assert listener.wait_for("capture")["status"] == "complete"

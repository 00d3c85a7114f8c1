"""netconsole from a real kernel under qemu: armed by the hooks' netconsole.sh in the initramfs (configfs,
extended format), through qemu's user network (the guest's UDP to 10.0.2.2 reaches the host's 127.0.0.1),
into a real `rescue listen`. Three boots: a crash after the root mounted, an initramfs that fails, and the
same in a real mkinitramfs image (which scenario 5b builds anyway)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rescue.harness.scenarios import Harness
from rescue.harness.testinitrd import LONG_MESSAGE
from tests.conftest import Listener
from tests.vm.helpers import assert_stored_intact, text
from tests.vm.test_generators import need_generator

pytestmark = pytest.mark.vm


def test_a_crash_after_the_root_mounted_arrives_over_netconsole(
    harness: Harness, tmp_path: Path, collector: Path
) -> None:
    lst = Listener(tmp_path / "captures", "--netconsole-quiet", "30")
    result = harness.netconsole_crash(lst.port)
    assert result.root_reached and "root mounted" in result.markers, result.log_path
    opened = lst.wait_for("netconsole")
    event = lst.wait_for("capture")
    assert event["kind"] == "netconsole" and event["reason"] == "the kernel panicked", event
    assert event["lost"] == 0 and "kernel-oops" in event["findings"], event
    man = assert_stored_intact(event)
    assert man["header"]["boot"] == opened["boot"]
    log = text(event, "netconsole.log")
    assert "Kernel panic - not syncing: sysrq triggered crash" in log
    # The message longer than a datagram came in pieces (ncfrag) and was put together again.
    assert f"] {LONG_MESSAGE}\n" in log
    # The kernel's own log on the serial console says the same boot id.
    assert f"rescue: boot={opened['boot']} machine=" in result.log_path.read_text(errors="replace")


def test_a_failed_initramfs_is_one_capture_of_bundle_and_stream(
    harness: Harness, tmp_path: Path, collector: Path
) -> None:
    lst = Listener(tmp_path / "captures", "--netconsole-quiet", "5")
    result = harness.netconsole_missing_root(lst.port)
    assert "collector exit 0" in result.markers, result.log_path
    # The stream may go quiet (and be analysed alone) before the bundle arrives, or not: either order.
    event = lst.wait_for("capture")
    while not {"dmesg.txt", "netconsole.log"} <= set(event["files"]):
        event = lst.wait_for("capture")
    man = assert_stored_intact(event)
    assert man["kind"] == "header+tar", man["kind"]
    assert "dmesg.txt" in event["files"] and "netconsole.txt" in event["files"], event["files"]
    assert text(event, "netconsole.txt").startswith("network: ")
    assert re.search(
        r"^armed in [\d.]+s: eth0 10\.0\.2\.15 -> 10\.0\.2\.2:\d+ via ", text(event, "netconsole.txt"), re.M
    )
    log = text(event, "netconsole.log")
    assert "ALERT!  /dev/vdb does not exist.  Dropping to a shell!" in log
    assert f"rescue: boot={man['header']['boot']} machine=" in log
    assert "root-device-missing" in event["findings"], event
    # One capture of that boot: the stream's own directory went when the bundle arrived.
    assert len(list((tmp_path / "captures").glob("*/*"))) == 1


@pytest.mark.image
def test_a_mkinitramfs_image_arms_netconsole_from_init_premount(
    harness: Harness, tmp_path: Path, collector: Path
) -> None:
    """The real generator's wiring (udev-named NIC, kmod's modprobe), on the image scenario 5b builds."""
    need_generator(harness, "mkinitramfs", "initramfs-tools")
    lst = Listener(tmp_path / "captures", "--netconsole-quiet", "5")
    result = harness.mkinitramfs_missing_root(lst.port, "mkinitramfs-netconsole", netconsole=True)
    assert result.end and result.end.startswith("rescue: sent"), result.log_path
    assert "rescue: netconsole: armed in " in result.log_path.read_text(errors="replace")
    event = lst.wait_for("capture")
    while not {"dmesg.txt", "netconsole.log"} <= set(event["files"]):  # the bundle with the stream in it
        event = lst.wait_for("capture")
    assert "root-device-missing" in event["findings"], event
    assert re.search(r"^armed in [\d.]+s: ens\d+ ", text(event, "netconsole.txt"), re.M)
    assert "rescue: boot=" in text(event, "netconsole.log")

"""The recipe `rescue listen` prints, read from the listener's own output and typed exactly as printed at
the prompt of real images booted under qemu: the `(initramfs)` prompt of a mkinitramfs image (busybox ash,
udev names the NIC ens2/ens3) and the emergency shell of a dracut image with bash and its NIC driver (no nc,
no DHCP client: bash's /dev/tcp and an address set by hand). Neither image runs the hooks: rescue=off for
the mkinitramfs one (it would send by itself otherwise), the dracut one is built without them."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from rescue.harness.console import Console
from rescue.harness.imagebuild import build_dracut_image
from rescue.harness.qemu import HOST_FROM_GUEST, VMSpec, boot, kernel_cmdline
from rescue.harness.scenarios import Harness
from tests.conftest import Listener, require
from tests.host_kernel import KERNEL, MISSING
from tests.vm.helpers import assert_stored_intact, text

pytestmark = [pytest.mark.vm, pytest.mark.image]

PROMPT_TIMEOUT = 180.0


def need(tool: str, package: str) -> None:
    require(
        shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is not None, f"{package} is not installed"
    )
    require(KERNEL is not None and KERNEL.vmlinuz is not None, MISSING)


def recipe_listener(tmp_path: Path) -> tuple[Listener, dict[str, Any]]:
    """A listener that tells the machines the address qemu's user network gives the host."""
    lst = Listener(tmp_path / "captures", "--advertise", HOST_FROM_GUEST)
    listening = next(e for e in lst.events if e["event"] == "listening")
    return lst, listening


def type_lines(console: Console, lines: list[str]) -> list[tuple[str, str, int]]:
    """Each printed command line, typed as it is (comment lines are for people)."""
    done = []
    for line in lines:
        if line.startswith("#"):
            continue
        out, rc = console.run(line, 90)
        done.append((line, out, rc))
        if rc != 0:
            raise console.fail(f"{line!r} exited {rc}: {out}")
    return done


def check_nic(done: list[tuple[str, str, int]]) -> str:
    nic = done[0][1].strip()
    assert nic.startswith("NIC: ") and nic != "NIC: *", done
    return nic.removeprefix("NIC: ")


def check_dmesg_capture(lst: Listener) -> dict[str, Any]:
    event = lst.wait_for("capture", 60)
    man = assert_stored_intact(event)
    assert man["kind"] == "raw" and [f["name"] for f in man["files"]] == ["dmesg.txt"], man
    assert "Linux version" in text(event, "dmesg.txt")
    assert isinstance(man["analysis"], dict) and "findings" in man["analysis"], man  # diagnosed
    return event


def test_recipe_typed_at_the_initramfs_prompt_of_a_mkinitramfs_image(
    harness: Harness, tmp_path: Path
) -> None:
    need("mkinitramfs", "initramfs-tools")
    lst, listening = recipe_listener(tmp_path)
    lines = listening["commands"]
    assert f"dmesg | nc {HOST_FROM_GUEST} {lst.port}" in lines
    img = harness.generator_image("initramfs-tools", drop=())
    # break=premount: the (initramfs) prompt after udev has named the NIC, without the 30 s root wait.
    spec = replace(
        harness.spec(img, kernel=harness.generator_kernel()[1]),
        cmdline=kernel_cmdline("break=premount", "rescue=off", panic=False),
    )
    with boot(spec, log_path=tmp_path / "recipe-mkinitramfs.console.log") as console:
        console.setup_shell(r"\(initramfs\) ", PROMPT_TIMEOUT)
        done = type_lines(console, lines)
    assert check_nic(done) != "eth0"  # udev renamed it: the seed's recipe failed exactly here
    check_dmesg_capture(lst)
    bundle = lst.wait_for("capture", 60)  # the all-at-once line
    assert_stored_intact(bundle)
    assert {"dmesg.txt", "cmdline.txt", "modules.txt", "partitions.txt"} <= set(bundle["files"]), bundle
    assert "break=premount" in text(bundle, "cmdline.txt")


def dracut_bash_image(harness: Harness) -> Path:
    out = harness.workdir / "dracut-bash-no-hooks.img"
    if not out.exists():
        # What the recipe says a dracut image needs: bash (a shell that can open a socket), the NIC's
        # driver and ip. No hooks: this is a machine without them.
        extra = ["--add", "bash", "--add-drivers", "virtio_net", "--install", "ip"]
        build_dracut_image(
            out, harness.generator_kernel()[0], host=HOST_FROM_GUEST, port=3333, hooks=False, extra_args=extra
        )
    return out


def test_bash_recipe_typed_at_the_emergency_shell_of_a_dracut_image(harness: Harness, tmp_path: Path) -> None:
    need("dracut", "dracut-core")
    lst, listening = recipe_listener(tmp_path)
    lines = listening["commands_bash"]
    assert f"dmesg > /dev/tcp/{HOST_FROM_GUEST}/{lst.port}" in lines
    img = dracut_bash_image(harness)
    # A root that never appears; rd.retry=5 ends dracut's wait (and the boot) in its emergency shell.
    spec: VMSpec = replace(
        harness.spec(img, kernel=harness.generator_kernel()[1]),
        cmdline=kernel_cmdline("root=/dev/vdb", "rd.retry=5", panic=False),
    )
    with boot(spec, log_path=tmp_path / "recipe-dracut.console.log") as console:
        console.setup_shell(r"dracut:/# ", PROMPT_TIMEOUT)
        out, _ = console.run("command -v nc; echo $BASH_VERSION", 30)
        assert "nc" not in out.split("\n")[0] and out.strip(), out  # no nc: bash it is
        done = type_lines(console, lines)
    check_nic(done)
    event = check_dmesg_capture(lst)
    assert "Could not boot" in text(event, "dmesg.txt")  # what dracut said before its shell

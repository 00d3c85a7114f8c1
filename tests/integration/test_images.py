"""Real images with the hooks: `mkinitramfs -d CONFDIR` and `dracut --no-hostonly`, looked at with
lsinitramfs, unpacked, and their own collector run against their own module tree (the image's depmod
output)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from rescue.harness.imagebuild import build_dracut_image, build_initramfs_tools_image
from tests.collector_root import FakeRoot, add_fixtures, run_collector
from tests.conftest import Listener, require
from tests.host_kernel import KVER, ko

pytestmark = pytest.mark.image


def _tools(*names: str) -> None:
    for name in names:
        found = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
        require(found is not None, f"{name} is not installed")
    require(Path(f"/lib/modules/{KVER}/modules.dep").is_file(), f"kernel {KVER} is not installed")


def listing(image: Path) -> set[str]:
    out = subprocess.run(["lsinitramfs", str(image)], capture_output=True, text=True, check=True).stdout
    # Merged /usr: /bin and /lib are links to usr/bin and usr/lib in the image; compare without usr/.
    return {line.removeprefix("usr/") for line in out.split()}


def unpack(image: Path, dest: Path) -> Path:
    subprocess.run(["unmkinitramfs", str(image), str(dest)], check=True, capture_output=True)
    # Images with an early microcode cpio unpack into early/ and main/.
    return dest / "main" if (dest / "main").is_dir() else dest


@pytest.fixture(scope="module")
def itools_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _tools("mkinitramfs", "lsinitramfs", "unmkinitramfs")
    out = tmp_path_factory.mktemp("itools") / "initrd.img"
    return build_initramfs_tools_image(out, KVER, host="10.0.2.2", port=3333, token="tok-123",
                                       drop_modules=["libcrc32c"])  # fmt: skip


@pytest.fixture(scope="module")
def dracut_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _tools("dracut", "lsinitramfs", "unmkinitramfs")
    out = tmp_path_factory.mktemp("dracut") / "initrd.img"
    return build_dracut_image(out, KVER, host="10.0.2.2", port=3333, drop_modules=["libcrc32c"])


def test_initramfs_tools_image_has_the_hooks(itools_image: Path) -> None:
    files = listing(itools_image)
    for path in ("bin/busybox", "bin/nc", "bin/ipconfig", "lib/rescue/collect.sh", "etc/rescue.conf",
                 "scripts/panic/rescue", "scripts/local-premount/rescue", "scripts/init-premount/rescue",
                 "lib/rescue/netconsole.sh", f"lib/modules/{KVER}/{ko('kernel/drivers/net/netconsole.ko')}",
                 f"lib/modules/{KVER}/kernel/fs/btrfs/btrfs.ko",
                 f"lib/modules/{KVER}/kernel/drivers/net/virtio_net.ko"):  # fmt: skip
        assert path in files, path
    assert any(p.startswith("lib/klibc-") and p.endswith(".so") for p in files)
    # drop_modules took libcrc32c out, as the broken configuration under test does.
    assert not any(p.endswith("/libcrc32c.ko") for p in files)


def test_initramfs_tools_image_unpacked(itools_image: Path, tmp_path: Path, busybox: str) -> None:
    root = unpack(itools_image, tmp_path / "x")
    applets = subprocess.run([str(root / "bin" / "busybox"), "--list"], capture_output=True, text=True).stdout
    assert {"nc", "tar", "sha256sum", "udhcpc", "timeout", "ash"} <= set(applets.split())
    conf = (root / "etc" / "rescue.conf").read_text()
    for line in ("RESCUE_HOST=10.0.2.2", "RESCUE_PORT=3333", "RESCUE_TOKEN=tok-123"):
        assert line in conf.splitlines()
    # The panic script is in panic()'s run order; the premount one runs after btrfs's.
    assert "/scripts/panic/rescue" in (root / "scripts" / "panic" / "ORDER").read_text()
    # netconsole (rescue.netconsole=1) is armed from init-premount, after udev loaded the NIC's driver.
    assert "/scripts/init-premount/rescue" in (root / "scripts" / "init-premount" / "ORDER").read_text()
    order = (root / "scripts" / "local-premount" / "ORDER").read_text()
    assert order.index("/scripts/local-premount/btrfs") < order.index("/scripts/local-premount/rescue")
    # mkinitramfs's depmod left the image consistent with itself: btrfs no longer lists libcrc32c.
    dep = (root / "lib" / "modules" / KVER / "modules.dep").read_text()
    assert "kernel/fs/btrfs/btrfs.ko: kernel/crypto/xor.ko" in dep
    assert "libcrc32c" not in dep


def _run_image_collector(busybox: str, root: Path, tmp_path: Path, listener: Listener) -> FakeRoot:
    fake = add_fixtures(root, tmp_path)
    proc = run_collector(busybox, fake, "panic", collector=root / "lib" / "rescue" / "collect.sh",
                         RESCUE_HOST="127.0.0.1", RESCUE_PORT=str(listener.port))  # fmt: skip
    assert "rescue: need libcrc32c dep btrfs missing" in proc.stdout, proc.stdout + proc.stderr
    assert "rescue: result fail missing=libcrc32c" in proc.stdout
    assert f"bytes to 127.0.0.1:{listener.port}" in proc.stdout
    event = listener.wait_for("capture")
    assert event["status"] == "complete"
    assert "modcheck.txt" in event["files"]
    return fake


def test_initramfs_tools_image_collector_finds_the_hole(
    itools_image: Path, tmp_path: Path, busybox: str, listener: Listener
) -> None:
    # The image's collector, against the image's own module tree: the only trace of libcrc32c left is
    # btrfs.ko's modinfo, and the collector reads it.
    root = unpack(itools_image, tmp_path / "x")
    fake = _run_image_collector(busybox, root, tmp_path, listener)
    info = (fake.bundle / "info.txt").read_text()
    assert "GENERATOR=initramfs-tools" in info


def test_dracut_image_has_the_module(dracut_image: Path) -> None:
    files = listing(dracut_image)
    for path in ("lib/rescue/collect.sh", "lib/rescue/busybox", "lib/rescue/ipconfig", "etc/rescue.conf",
                 "lib/dracut/hooks/emergency/50-rescue-emergency.sh",
                 "lib/rescue/netconsole.sh", "lib/dracut/hooks/initqueue/settled/90-rescue-netconsole.sh",
                 "lib/dracut/hooks/pre-mount/05-rescue-netconsole.sh",
                 "lib/dracut/hooks/pre-mount/90-rescue-always.sh",
                 f"lib/modules/{KVER}/{ko('kernel/fs/btrfs/btrfs.ko')}",
                 f"lib/modules/{KVER}/{ko('kernel/drivers/net/netconsole.ko')}"):  # fmt: skip
        assert path in files, path
    assert any(p.startswith("lib/klibc-") and p.endswith(".so") for p in files)
    assert not any("/libcrc32c.ko" in p for p in files)


def test_dracut_image_unpacked(dracut_image: Path, tmp_path: Path, busybox: str, listener: Listener) -> None:
    root = unpack(dracut_image, tmp_path / "x")
    bb = root / "lib" / "rescue" / "busybox"
    applets = subprocess.run([str(bb), "--list"], capture_output=True, text=True).stdout
    assert "nc" in applets.split()
    assert "RESCUE_HOST=10.0.2.2\n" in (root / "etc" / "rescue.conf").read_text()
    fake = _run_image_collector(busybox, root, tmp_path, listener)
    assert "GENERATOR=dracut" in (fake.bundle / "info.txt").read_text()


def test_missing_generator_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from rescue.errors import RescueError
    from rescue.harness import imagebuild

    # The generators are installed here; a PATH lookup that finds nothing stands in for a machine without.
    monkeypatch.setattr(imagebuild.shutil, "which", lambda *a, **k: None)
    builders: list[Callable[[], Path]] = [
        lambda: build_initramfs_tools_image(tmp_path / "a.img", KVER, host="h", port=1),
        lambda: build_dracut_image(tmp_path / "b.img", KVER, host="h", port=1),
    ]
    for build in builders:
        with pytest.raises(RescueError, match="not found"):
            build()


def _chroot(root: Path, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run shell inside the unpacked image, with the image's own /bin/sh (busybox) and files."""
    import os

    require(os.geteuid() == 0, "chroot needs root")
    full = {"PATH": "/sbin:/usr/sbin:/bin:/usr/bin", "RESCUE_IP": "none", **env}
    return subprocess.run(["chroot", str(root), "/bin/sh", "-c", script], env=full, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_panic_scripts_run_from_the_images_run_order(
    itools_image: Path, tmp_path: Path, listener: Listener
) -> None:
    # What panic() does: `run_scripts /scripts/panic` from /scripts/functions, in the image's own userland.
    root = unpack(itools_image, tmp_path / "x")
    add_fixtures(
        root,
        tmp_path,
        cmdline=f"console=ttyS0 root=/dev/vda rescue.host=127.0.0.1 rescue.port={listener.port}",
    )
    (tmp_path / "blkid.fixture").replace(root / "blkid.txt")
    proc = _chroot(root, ". /scripts/functions; run_scripts /scripts/panic", ROOT="/dev/vda",
                   RESCUE_BLKID="/blkid.txt")  # fmt: skip
    assert "rescue: collecting evidence (reason: panic)" in proc.stdout, proc.stdout + proc.stderr
    assert "rescue: sent " in proc.stdout
    event = listener.wait_for("capture")
    assert event["status"] == "complete"
    info = (Path(event["path"]) / "info.txt").read_text()
    assert "GENERATOR=initramfs-tools" in info and "REASON=panic" in info
    assert "result fail missing=libcrc32c" in (Path(event["path"]) / "modcheck.txt").read_text()
    # A second panic() in the same boot sends nothing more.
    again = _chroot(root, ". /scripts/functions; run_scripts /scripts/panic", ROOT="/dev/vda",
                    RESCUE_BLKID="/blkid.txt")  # fmt: skip
    assert "already sent (panic)" in again.stdout


@pytest.mark.parametrize("always", [False, True])
def test_premount_script_sends_only_with_rescue_always(
    itools_image: Path, tmp_path: Path, listener: Listener, always: bool
) -> None:
    root = unpack(itools_image, tmp_path / "x")
    flag = " rescue.always=1" if always else ""
    add_fixtures(
        root, tmp_path, cmdline=f"root=/dev/vda rescue.host=127.0.0.1 rescue.port={listener.port}{flag}"
    )
    (tmp_path / "blkid.fixture").replace(root / "blkid.txt")
    proc = _chroot(root, "/scripts/local-premount/rescue", RESCUE_BLKID="/blkid.txt")
    assert proc.returncode == 0
    if always:
        assert "rescue: sent " in proc.stdout, proc.stdout + proc.stderr
        event = listener.wait_for("capture")
        assert "REASON=always" in (Path(event["path"]) / "info.txt").read_text()
    else:
        # A good boot: the script reads the command line and does nothing else.
        assert proc.stdout == ""
        assert not (root / "run" / "rescue").exists()


def test_an_installed_confdir_builds_an_image(tmp_path: Path) -> None:
    """What a user does: `rescue hooks install --root R`, then mkinitramfs with R's confdir."""
    import sys

    _tools("mkinitramfs", "lsinitramfs")
    root = tmp_path / "root"
    shutil.copytree("/etc/initramfs-tools", root / "etc/initramfs-tools", symlinks=True)
    (root / "etc/initramfs-tools/conf.d/zz-test").write_text("MODULES=most\n")
    (root / "usr/sbin").mkdir(parents=True)
    (root / "usr/sbin/mkinitramfs").symlink_to("/usr/sbin/mkinitramfs")
    argv = [sys.executable, "-m", "rescue", "hooks", "install", "--root", str(root),
            "--host", "192.0.2.7", "--port", "4000"]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    image = tmp_path / "initrd.img"
    subprocess.run(["mkinitramfs", "-d", str(root / "etc/initramfs-tools"), "-o", str(image), KVER],
                   check=True, capture_output=True, timeout=900)  # fmt: skip
    files = listing(image)
    assert {"lib/rescue/collect.sh", "etc/rescue.conf", "scripts/panic/rescue", "bin/nc"} <= files
    extracted = unpack(image, tmp_path / "x")
    assert "RESCUE_HOST=192.0.2.7" in (extracted / "etc/rescue.conf").read_text().splitlines()

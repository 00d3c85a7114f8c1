"""The wheel is the product: built with `python -m build`, installed into a new venv outside the checkout,
and every command that touches the shell files run from / with the checkout hidden.

The checkout is hidden by mounting an empty tmpfs over it in a private mount namespace (`unshare -m`): as
root, file modes would not stop a read, a mount does. Real tools throughout: pip, mkinitramfs, busybox nc.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, require
from tests.host_kernel import KVER, MISSING

pytestmark = pytest.mark.image

DMESG = (REPO / "tests" / "captures" / "manual-dmesg" / "dmesg.txt").read_bytes()


class Installed:
    """A venv with the built wheel in it; run() starts its `rescue` with the checkout hidden, from /."""

    def __init__(self, venv_dir: Path) -> None:
        self.rescue = venv_dir / "bin" / "rescue"

    def argv(self, *args: str) -> list[str]:
        hide = 'mount -t tmpfs -o size=1m hidden "$0" && cd / && exec "$@"'
        unshare = ["unshare", "--mount", "--propagation", "private"]
        return [*unshare, "sh", "-c", hide, str(REPO), str(self.rescue), *args]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        return subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout, env=env)

    def ok(self, *args: str, timeout: float = 300) -> str:
        proc = self.run(*args, timeout=timeout)
        assert proc.returncode == 0, f"rescue {' '.join(args)}: {proc.stderr}"
        return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    require(shutil.which("unshare") is not None, "unshare (util-linux) is missing")
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(work / "dist"), str(REPO)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    (wheel,) = (work / "dist").glob("rescue-*.whl")
    venv.create(work / "venv", with_pip=True)
    pip = [str(work / "venv" / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, str(wheel)], check=True, capture_output=True, timeout=600)
    yield Installed(work / "venv")


def test_the_checkout_is_really_hidden(installed: Installed) -> None:
    proc = subprocess.run(
        [*installed.argv("--version")[:-2], "ls", "-A", str(REPO)], capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout == ""  # an empty tmpfs where the checkout was


def test_version_and_render_both_flavours(installed: Installed, tmp_path: Path) -> None:
    assert installed.ok("--version").startswith("rescue ")
    out = tmp_path / "it"
    doc = json.loads(installed.ok("hooks", "render", "--out", str(out), "--host", "10.0.2.2", "--json"))
    assert {Path(f).relative_to(out).as_posix() for f in doc["files"]} >= {
        "hooks/rescue",
        "rescue/collector/collect.sh",
        "rescue/collector/modcheck.awk",
        "rescue/collector/conf.sh",
    }
    collector = (out / "rescue" / "collector" / "collect.sh").read_bytes()
    assert collector == (REPO / "hooks" / "collector" / "collect.sh").read_bytes()
    installed.ok("hooks", "render", "--flavor", "dracut", "--out", str(tmp_path / "d"), "--host", "h")
    assert (tmp_path / "d" / "90rescue-send" / "module-setup.sh").is_file()


def test_install_then_a_real_mkinitramfs_then_check_image(installed: Installed, tmp_path: Path) -> None:
    require(bool(KVER), MISSING)
    require(shutil.which("mkinitramfs") is not None, "initramfs-tools is not installed")
    root = tmp_path / "root"
    shutil.copytree("/etc/initramfs-tools", root / "etc" / "initramfs-tools", symlinks=True)
    (root / "usr" / "sbin").mkdir(parents=True)
    (root / "usr" / "sbin" / "mkinitramfs").symlink_to(shutil.which("mkinitramfs") or "")
    conf = root / "etc" / "initramfs-tools" / "initramfs.conf"
    conf.write_text(
        conf.read_text().replace("MODULES=dep", "MODULES=most")
    )  # dep sees no root in a container
    installed.ok("hooks", "install", "--root", str(root), "--host", "10.0.2.2")
    image = tmp_path / "initrd.img"
    subprocess.run(["mkinitramfs", "-d", str(root / "etc" / "initramfs-tools"), "-o", str(image), KVER],
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    listing = subprocess.run(["lsinitramfs", str(image)], capture_output=True, text=True, check=True).stdout
    # merged /usr: lib is a link to usr/lib in the image
    assert {"lib/rescue/collect.sh", "etc/rescue.conf"} <= {p.removeprefix("usr/") for p in listing.split()}
    report = json.loads(installed.ok("check-image", str(image), "--require", "btrfs", "--json"))
    assert report["kernel"] == KVER and not [f for f in report["findings"] if f["severity"] == "error"]


def test_listen_nc_analyze_replay(installed: Installed, tmp_path: Path, busybox: str) -> None:
    captures = tmp_path / "captures"
    listen = installed.argv("listen", "--bind", "127.0.0.1", "--port", "0", "--dir", str(captures), "--json")
    proc = subprocess.Popen(listen, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        events = (json.loads(line) for line in proc.stdout)
        port = next(e for e in events if e["event"] == "listening")["port"]
        sent = subprocess.run(
            [busybox, "nc", "127.0.0.1", str(port)], input=DMESG, capture_output=True, timeout=30
        )
        assert sent.returncode == 0
        capture = next(e for e in events if e["event"] == "capture")
        assert capture["status"] == "complete"
        analysis = json.loads(installed.run("analyze", capture["path"], "--json").stdout)
        from_checkout = subprocess.run(
            [sys.executable, "-m", "rescue", "analyze", capture["path"], "--json"],
            capture_output=True,
            text=True,
        )
        assert analysis["findings"] == json.loads(from_checkout.stdout)["findings"]
        replayed = json.loads(installed.ok("replay", capture["path"], "--to", f"127.0.0.1:{port}", "--json"))
        assert replayed["bytes"] == len(DMESG)
        again = next(e for e in events if e["event"] == "capture")
        assert again["status"] == "complete" and again["path"] != capture["path"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)

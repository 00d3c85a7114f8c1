"""The Debian package, installed for real: `make deb`, then a debootstrap bookworm chroot with a kernel.

Installs the .deb with apt, runs what it installed (the command, the man pages, update-initramfs with the
hooks on and off, the listener from the unit's own ExecStart line with the socket passed the systemd way),
and purges it again: nothing it added may stay behind. Needs root (chroot, mounts) and the mirror apt uses.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require, wait_until
from tests.package import chroot

pytestmark = pytest.mark.deb

REPO = chroot.REPO
TOKEN = "pkg-test-token-1"
# Not part of what the package leaves behind: apt's and dpkg's own state and logs, caches, runtime
# mounts. Everything else must be as it was before the install once the package is purged.
IGNORED = ("proc", "sys", "dev", "run", "tmp", "var/lib/dpkg", "var/lib/apt", "var/cache", "var/log")


def build_deb() -> Path:
    """The .deb under test: $RESCUE_DEB when set, else built now with `make deb` (from this tree)."""
    given = os.environ.get("RESCUE_DEB")
    if given:
        return Path(given)
    proc = subprocess.run(["make", "-C", str(REPO), "deb"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"make deb failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    debs = sorted((REPO / "build/deb").glob("rescue_*_all.deb"))
    assert len(debs) == 1, debs
    return debs[0]


def snapshot(root: Path) -> set[str]:
    """Every path under root (files, links, directories), relative, minus the IGNORED trees."""
    paths: set[str] = set()
    for top, dirs, files in os.walk(root):
        rel = os.path.relpath(top, root)
        rel = "" if rel == "." else rel + "/"
        dirs[:] = [d for d in dirs if (rel + d) not in IGNORED]
        paths.update(rel + name for name in (*dirs, *files))
    return paths


@dataclass
class Chroot:
    root: Path
    kver: str
    before: set[str]  # snapshot() before the package was installed
    apt_output: str

    def run(self, *argv: str, timeout: float = 600) -> str:
        return chroot.in_root(self.root, argv, timeout=timeout).stdout

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chroot]:
    require(os.geteuid() == 0, "the package test needs root (chroot, mounts)")
    for tool in ("dpkg-buildpackage", "debootstrap", "lintian", "chroot", "zstd"):
        require(shutil.which(tool) is not None, f"{tool} is not installed (make deps)")
    deb = build_deb()
    tar = chroot.cached_tarball()
    root = tmp_path_factory.mktemp("deb") / "root"
    chroot.unpack(tar, root)
    try:
        with chroot.mounted(root):
            kernels = sorted(p.name for p in (root / "lib/modules").iterdir())
            assert len(kernels) == 1, f"one kernel in the chroot, not {kernels}"
            before = snapshot(root)
            shutil.copy(deb, root / "tmp" / deb.name)
            out = chroot.in_root(root, ["apt-get", "install", "-y", f"/tmp/{deb.name}"]).stdout
            (root / "tmp" / deb.name).unlink()
            yield Chroot(root, kernels[0], before, out)
    finally:
        chroot.remove_tree(root)


def test_apt_installs_rescue_and_nothing_else(system: Chroot) -> None:
    new = re.search(r"The following NEW packages will be installed:\n((?:  .*\n)+)", system.apt_output)
    assert new, system.apt_output
    assert new.group(1).split() == ["rescue"], "the chroot tarball lacks a dependency: see chroot.PACKAGES"


def test_version_is_the_changelogs(system: Chroot) -> None:
    changelog = (REPO / "debian/changelog").read_text().split("\n", 1)[0]
    version = re.match(r"rescue \(([^)-]+)", changelog)
    assert version
    assert system.run("rescue", "--version").split() == ["rescue", version.group(1)]


def test_man_pages_and_completion(system: Chroot) -> None:
    for command in ("", "-listen", "-analyze", "-check-image", "-hooks", "-replay"):
        page = f"rescue{command}"
        assert system.run("man", "-w", page).strip() == f"/usr/share/man/man1/{page}.1.gz"
    text = system.run("sh", "-c", "zcat /usr/share/man/man1/rescue-listen.1.gz")
    assert "\\-\\-token\\-file" in text and "\\-\\-config" in text
    completion = system.path("/usr/share/bash-completion/completions/rescue").read_text()
    assert "--token-file" in completion and "check-image" in completion


def configure(system: Chroot, host: str, token: str | None) -> None:
    conf = system.path("/etc/rescue/initramfs.conf")
    text = re.sub(r"^RESCUE_HOST=.*$", f"RESCUE_HOST={host}", conf.read_text(), flags=re.MULTILINE)
    if token is not None:
        token_file = system.path("/root/rescue-token")
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
    text = re.sub(
        r"^RESCUE_TOKEN_FILE=.*$",
        "RESCUE_TOKEN_FILE=" + ("/root/rescue-token" if token else ""),
        text,
        flags=re.MULTILINE,
    )
    conf.write_text(text)


def build_image(system: Chroot) -> list[str]:
    """update-initramfs -c for the chroot's kernel; the image's `lsinitramfs -l` lines."""
    image = f"/boot/initrd.img-{system.kver}"
    if system.path(image).exists():
        system.run("update-initramfs", "-d", "-k", system.kver)
    system.run("update-initramfs", "-c", "-k", system.kver)
    return system.run("lsinitramfs", "-l", image).splitlines()


def member(listing: list[str], name: str) -> str | None:
    return next((line for line in listing if line.split()[-1] == name), None)


def test_image_with_a_listener_configured(system: Chroot) -> None:
    configure(system, "192.0.2.10", TOKEN)
    try:
        listing = build_image(system)
    finally:
        configure(system, "", None)
        system.path("/root/rescue-token").unlink()
    collector, conf = member(listing, "usr/lib/rescue/collect.sh"), member(listing, "usr/etc/rescue.conf")
    collector = collector or member(listing, "lib/rescue/collect.sh")
    conf = conf or member(listing, "etc/rescue.conf")
    assert collector and collector.startswith("-rwxr-xr-x"), listing
    assert conf and conf.startswith("-rw-------"), conf
    assert member(listing, "scripts/panic/rescue") and member(listing, "scripts/local-premount/rescue")
    out = system.root / "tmp/unpacked"
    system.run("unmkinitramfs", f"/boot/initrd.img-{system.kver}", "/tmp/unpacked")
    try:
        main = next(p for p in (out, out / "main") if (p / "scripts/panic/ORDER").exists())
        assert "/scripts/panic/rescue" in (main / "scripts/panic/ORDER").read_text()
        baked = (main / "etc/rescue.conf").read_text()
        assert "RESCUE_HOST=192.0.2.10\n" in baked and f"RESCUE_TOKEN={TOKEN}\n" in baked, baked
        busybox = main / "bin/busybox"
        applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout
        assert "nc" in applets.split()
    finally:
        shutil.rmtree(out)


def test_image_with_the_conffile_as_shipped_has_nothing_of_rescue(system: Chroot) -> None:
    assert re.search(r"^RESCUE_HOST=$", system.path("/etc/rescue/initramfs.conf").read_text(), re.MULTILINE)
    listing = build_image(system)
    assert len(listing) > 100, "an image with next to nothing in it says nothing"
    assert [line for line in listing if "rescue" in line.split()[-1]] == []


def exec_start(unit: str) -> list[str]:
    line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


def test_listener_from_the_units_exec_start(system: Chroot) -> None:
    unit = system.path("/lib/systemd/system/rescue-listen.service").read_text()
    assert "DynamicUser=yes" in unit and "--token" not in unit.replace("--token-file", "")
    # What systemd would do: the credential in /run/credentials/UNIT, the state directory, a listening
    # socket as fd 3 with LISTEN_FDS=1 and LISTEN_PID, an unprivileged user.
    creds = system.path("/run/credentials/rescue-listen.service")
    creds.mkdir(parents=True)
    (creds / "token").write_text(TOKEN + "\n")
    os.chown(creds / "token", 65534, 65534)
    captures = system.path("/var/lib/rescue/captures")
    captures.mkdir(parents=True)
    os.chown(captures, 65534, 65534)
    credentials = "/run/credentials/rescue-listen.service"
    argv = [a.replace("${CREDENTIALS_DIRECTORY}", credentials) for a in exec_start(unit)]
    assert "$" not in " ".join(argv), argv
    sock = socket.create_server(("127.0.0.1", 0), backlog=16)
    port, fd = sock.getsockname()[1], sock.fileno()
    # The socket to fd 3 and LISTEN_PID = the pid that then execs the command (dash cannot redirect fd >= 10).
    handover = (
        f"import os, sys; os.dup2({fd}, 3); os.close({fd}); "
        "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid())); os.execv(sys.argv[1], sys.argv[1:])"
    )
    proc = subprocess.Popen(
        ["chroot", "--userspec=65534:65534", str(system.root), "/usr/bin/python3", "-c", handover, *argv],
        pass_fds=(fd,),
        env=chroot.ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    sock.close()
    try:
        dmesg = b"[    0.000000] Linux version 6.1.0 (debian-kernel@lists.debian.org)\n" * 50
        sent = subprocess.run(
            ["/bin/busybox", "nc", "127.0.0.1", str(port)],
            input=f"RESCUE/1 token={TOKEN} name=dmesg.txt\n".encode() + dmesg,
            capture_output=True,
            timeout=60,
        )
        assert sent.returncode == 0, sent
        wrong = subprocess.run(
            ["/bin/busybox", "nc", "127.0.0.1", str(port)],
            input=b"RESCUE/1 token=wrong name=dmesg.txt\n" + dmesg,
            capture_output=True,
            timeout=60,
        )
        # Refused visibly: the line, then a reset (nc's exit depends on whether it had sent everything).
        assert wrong.stdout.startswith(b"rescue: refused: wrong token"), wrong

        def states() -> list[str]:
            texts = [p.read_text() for p in captures.glob("*/*/manifest.json")]
            return sorted(re.findall(r'"status": "(\w+)"', "".join(texts)))

        # A manifest says "receiving" from the connection on; finished ones say how they ended.
        wait_until(lambda: len(states()) == 2 and "receiving" not in states(), 60, "two finished captures")
        assert states() == ["complete", "rejected"]
        stored = list(captures.glob("*/*/dmesg.txt"))
        assert [p.read_bytes() for p in stored] == [dmesg]
        assert stored[0].stat().st_uid == 65534
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0].decode(errors="replace")
        print(f"listener output:\n{out}")  # shown when the test fails
    assert proc.returncode == 0, out
    assert TOKEN not in out
    shutil.rmtree(system.path("/run/credentials"))


@contextlib.contextmanager
def second_kernel(system: Chroot) -> Iterator[str]:
    """A second kernel version: the first one's files under another name (what update-initramfs,
    mkinitramfs and dracut read), gone again afterwards."""
    second = system.kver + "-second"
    shutil.copytree(
        system.path(f"/lib/modules/{system.kver}"), system.path(f"/lib/modules/{second}"), symlinks=True
    )
    # update-initramfs -k all takes the versions `linux-version list` knows
    for name in ("config", "vmlinuz"):
        shutil.copy(system.path(f"/boot/{name}-{system.kver}"), system.path(f"/boot/{name}-{second}"))
    try:
        yield second
    finally:
        system.run("update-initramfs", "-d", "-k", second)
        shutil.rmtree(system.path(f"/lib/modules/{second}"))
        for name in ("config", "vmlinuz"):
            system.path(f"/boot/{name}-{second}").unlink()


def rebuilt(out: str) -> list[str]:
    return sorted(line.split()[-1] for line in out.splitlines() if line.startswith("rebuilt "))


def test_hooks_install_and_uninstall_update_every_kernels_image(system: Chroot) -> None:
    """`rescue hooks install --update` rebuilds the image of every installed kernel, not only the running
    one, and says which; `uninstall --update` takes the hooks out of all of them again."""
    fast = system.path("/etc/initramfs-tools/conf.d/zz-test-fast")
    fast.write_text("MODULES=list\n")  # small images: this is about which images, not what is in them
    try:
        with second_kernel(system) as second:
            images = [f"/boot/initrd.img-{k}" for k in (system.kver, second)]
            for kver, image in zip((system.kver, second), images, strict=True):
                if not system.path(image).exists():
                    system.run("update-initramfs", "-c", "-k", kver)
            out = system.run("rescue", "hooks", "install", "--host", "192.0.2.10", "--update")
            assert rebuilt(out) == images, out
            for image in images:
                listing = system.run("lsinitramfs", image).split()
                assert "lib/rescue/watchdog.sh" in listing or "usr/lib/rescue/watchdog.sh" in listing, image
                assert "scripts/init-premount/rescue" in listing, image
            out = system.run("rescue", "hooks", "uninstall", "--update")
            assert rebuilt(out) == images, out
            for image in images:
                assert not [n for n in system.run("lsinitramfs", image).split() if "rescue" in n], image
    finally:
        fast.unlink()
        if system.path("/var/lib/rescue/hooks-installed.json").exists():
            system.run("rescue", "hooks", "uninstall")


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[Chroot]:
    """The same bookworm chroot without the package: where a pip-installed rescue puts its hooks (the
    package brings its own dracut module, which `hooks install` rightly refuses to overwrite)."""
    root = tmp_path / "root"
    chroot.unpack(chroot.cached_tarball(), root)
    try:
        with chroot.mounted(root):
            yield Chroot(root, next(p.name for p in (root / "lib/modules").iterdir()), set(), "")
    finally:
        chroot.remove_tree(root)


def test_dracut_hooks_install_and_uninstall_update_every_kernels_image(bare: Chroot) -> None:
    """With dracut (bookworm's real dracut-core in the chroot), from this checkout's rescue with --root:
    `dracut --force --kver` for every kernel, and out again with uninstall --update."""
    bare.path("/etc/dracut.conf.d/zz-test-fast.conf").write_text('hostonly="yes"\ncompress="cat"\n')
    rescue = [sys.executable, "-m", "rescue", "hooks"]
    where = ["--root", str(bare.root)]
    with second_kernel(bare) as second:
        kvers = sorted((bare.kver, second))
        install = [*rescue, "install", *where, "--flavor", "dracut", "--host", "192.0.2.10", "--update"]
        out = chroot.run(install, cwd=REPO).stdout
        assert rebuilt(out) == kvers, out
        for kver in kvers:
            listing = bare.run("lsinitrd", f"/boot/initrd.img-{kver}")
            assert "rescue/watchdog.sh" in listing and "rescue-always.sh" in listing, kver
        out = chroot.run([*rescue, "uninstall", *where, "--update"], cwd=REPO).stdout
        assert rebuilt(out) == kvers, out
        for kver in kvers:  # (dracut's own module "rescue" is another thing)
            listing = bare.run("lsinitrd", f"/boot/initrd.img-{kver}")
            assert "rescue-send" not in listing and "rescue/watchdog.sh" not in listing, kver


def test_purge_leaves_nothing_behind(system: Chroot) -> None:
    # Runs last: the package is gone afterwards.
    added = snapshot(system.root) - system.before
    assert "usr/bin/rescue" in added and "etc/rescue/initramfs.conf" in added, "the snapshot sees the install"
    system.run("apt-get", "purge", "-y", "rescue")
    after = snapshot(system.root)
    assert sorted(after - system.before) == []
    assert sorted(system.before - after) == []

"""A Debian bookworm chroot for the package test: debootstrap once, then a cached tarball.

The tarball (`.cache/deb-chroot/bookworm-<mirror host>-<UTC date>-<package hash>.tar.zst`) holds minbase plus
everything the package and the test need (a kernel, initramfs-tools, the package's Depends and Recommends),
so that installing the .deb adds rescue and nothing else, and purging it can be compared file by file.
A new day, another mirror or another package list makes a new tarball; older ones are removed.

`python -m tests.package.chroot` builds the tarball alone (what the test does on a cache miss).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parent.parent.parent
CACHE = REPO / ".cache" / "deb-chroot"
SUITE = "bookworm"
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")

# What the chroot has before the .deb arrives: its Depends and Recommends (see debian/control), the kernel
# and generator for update-initramfs, dracut-core for `hooks install --flavor dracut --update` (it sits beside
# initramfs-tools), man-db for `man -w`. Kept in step with debian/control by the test,
# which fails when installing the .deb pulls in anything else.
PACKAGES = (
    "linux-image-cloud-amd64",
    "initramfs-tools",
    "dracut-core",
    "man-db",
    "python3",
    "python3-pexpect",
    "python3-pyroute2",
    "python3-zstandard",
    "python3-lz4",
    "busybox-static",
    "klibc-utils",
    "kmod",
    "cpio",
    "zstd",
)

ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
    "HOME": "/root",
}


def mirror(sources: Path = SOURCES) -> str:
    """The Debian mirror the host's apt uses for bookworm (deb822 sources, read only)."""
    default = "http://deb.debian.org/debian"
    try:
        text = sources.read_text()
    except OSError:
        return default
    for stanza in re.split(r"\n\s*\n", text):
        fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, re.MULTILINE))
        if SUITE in fields.get("Suites", "").split() and fields.get("URIs"):
            return fields["URIs"].split()[0].rstrip("/")
    return default


def tarball(packages: Sequence[str] = PACKAGES, url: str | None = None) -> Path:
    url = url or mirror()
    digest = hashlib.sha256(" ".join(sorted(packages)).encode()).hexdigest()[:12]
    day = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d")
    host = re.sub(r"[^A-Za-z0-9.-]", "_", urlparse(url).netloc or "mirror")
    return CACHE / f"{SUITE}-{host}-{day}-{digest}.tar.zst"


def run(argv: Sequence[str], timeout: float = 900, **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc  # type: ignore[no-any-return]


@contextmanager
def mounted(root: Path) -> Iterator[None]:
    """/proc, /sys and /dev of the host inside root; unmounted again whatever happens."""
    done: list[Path] = []
    try:
        for name in ("proc", "sys", "dev"):
            target = root / name
            target.mkdir(exist_ok=True)
            run(["mount", "--rbind", f"/{name}", str(target)])
            done.append(target)
            run(["mount", "--make-rslave", str(target)])
        yield
    finally:
        for target in reversed(done):
            if subprocess.run(["umount", "-R", str(target)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-R", "-l", str(target)], capture_output=True)


def in_root(root: Path, argv: Sequence[str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return run(["chroot", str(root), *argv], timeout=timeout, env=ENV)


def build_tarball(dest: Path, packages: Sequence[str] = PACKAGES, url: str | None = None) -> None:
    url = url or mirror()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rescue-debootstrap-", dir=dest.parent) as tmp:
        root = Path(tmp) / "root"
        run(["debootstrap", "--variant=minbase", SUITE, str(root), url], timeout=1800)
        # No daemon may start inside the chroot (there is no init here anyway).
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        with mounted(root):
            in_root(root, ["apt-get", "update", "-q"])
            in_root(
                root, ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], timeout=1800
            )
            in_root(root, ["apt-get", "clean"])
        part = dest.with_name(dest.name + ".partial")
        run(["tar", "--numeric-owner", "-I", "zstd -T0 -3", "-C", str(root), "-cf", str(part), "."])
        os.replace(part, dest)
    for old in dest.parent.glob(f"{SUITE}-*.tar.zst"):
        if old != dest:
            old.unlink()


def cached_tarball(packages: Sequence[str] = PACKAGES) -> Path:
    dest = tarball(packages)
    if not dest.exists():
        build_tarball(dest, packages)
    return dest


def unpack(tar: Path, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    run(["tar", "--numeric-owner", "-I", "zstd -T0", "-C", str(root), "-xf", str(tar)])


def remove_tree(root: Path) -> None:
    """Remove an unpacked chroot, refusing while anything is still mounted below it."""
    with open("/proc/self/mounts") as f:
        busy = [line.split()[1] for line in f if line.split()[1].startswith(str(root) + "/")]
    if busy:
        raise RuntimeError(f"still mounted under {root}: {busy}")
    shutil.rmtree(root)


if __name__ == "__main__":
    print(cached_tarball(), file=sys.stdout)

"""Helpers of the hostile listener tests: tars of any shape, small tmpfs mounts, senders that never stop.

Everything is real: busybox nc and sh as senders, tmpfs mounts for a full disk, the listener as a process.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import BUSYBOX, require

DMESG = (
    b"[    0.000000] Linux version 6.1.0-56-cloud-amd64\n"
    b"[    2.345678] btrfs: Unknown symbol crc32c (err -2)\n"
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_of(members: list[tuple[str, bytes]], fmt: int = tarfile.USTAR_FORMAT, end: bool = True) -> bytes:
    """A tar of regular files; end=False leaves out the end-of-archive blocks (a cut between members)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        body = buf.getvalue()  # before close() writes the end blocks
    return buf.getvalue() if end else body


def manifest_of(path: str | Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((Path(path) / "manifest.json").read_text())
    return data


def files_on_disk(capture: str | Path) -> dict[str, int]:
    """name -> size of every file a capture holds but its manifest."""
    root = Path(capture)
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and p.name != "manifest.json"
    }


def endless(port: int, head: bytes = b"", host: str = "127.0.0.1") -> subprocess.CompletedProcess[bytes]:
    """busybox nc fed by a pipe that never ends (after head): only the listener can stop it."""
    printed = "".join(f"\\{b:03o}" for b in head)
    script = f"(printf '{printed}'; {BUSYBOX} cat /dev/zero) | {BUSYBOX} nc {host} {port}"
    return subprocess.run([BUSYBOX, "sh", "-c", script], capture_output=True, timeout=60)


def connect_from(source: str, port: int) -> socket.socket:
    """A connection to the listener on 127.0.0.1 from another loopback address (another peer)."""
    s = socket.socket()
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def read_all(s: socket.socket, timeout: float = 10) -> bytes:
    """What the listener says before it closes (a reset after its line counts as the end), or until
    timeout seconds pass in silence."""
    s.settimeout(timeout)
    got = b""
    try:
        while chunk := s.recv(4096):
            got += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return got


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of this size mounted at where (a disk that fills up)."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    require(mounted.returncode == 0, "needs root to mount a small tmpfs")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def fill(path: Path, leave: int = 0) -> Path:
    """Fill the file system of path with one file until at most `leave` bytes are free."""
    hog = path / "hog"
    with hog.open("wb") as f:
        chunk = b"\0" * (1 << 20)
        while True:
            free = _free(path)
            if free <= leave:
                break
            try:
                f.write(chunk[: max(4096, min(len(chunk), free - leave))])
                f.flush()
            except OSError:
                break
    return hog


def _free(path: Path) -> int:
    import os

    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def vm_hwm(pid: int) -> int:
    """Peak resident memory of a process in bytes (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")

"""`rescue hooks render`: the shell of hooks/ laid out for a generator, with the configuration baked in.

A rendered tree is self-contained. For initramfs-tools it is laid out like a confdir (hooks/rescue,
scripts/{panic,local-premount,init-premount,init-bottom}/rescue, rescue/collector/*, rescue/rescue.conf), so
`cp -a DIR/. /etc/initramfs-tools/` or `mkinitramfs -d CONFDIR` works with no other file. For dracut it is a
modules.d tree (90rescue-send/...).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from rescue.errors import RescueError
from rescue.resources import collector_files, hooks_dir
from rescue.tokens import TOKEN

DRACUT_MODULE = "90rescue-send"  # dracut already ships a module called "rescue"
DRACUT_NAME = "rescue-send"

# The generators' own files (the collector's come from hooks/collector, whatever it holds).
INITRAMFS_TOOLS_FILES = (
    "hooks/rescue",
    "scripts/panic/rescue",
    "scripts/local-premount/rescue",
    "scripts/init-premount/rescue",
    "scripts/init-bottom/rescue",
)
DRACUT_FILES = (
    "module-setup.sh",
    "rescue-emergency.sh",
    "rescue-always.sh",
    "rescue-netconsole.sh",
    "rescue-watchdog-start.sh",
    "rescue-watchdog-stop.sh",
    "rescue-watchdog.service",
)

_HOST = re.compile(r"^[A-Za-z0-9._:-]{1,253}$")
_IP = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")


class Flavor(StrEnum):
    INITRAMFS_TOOLS = "initramfs-tools"
    DRACUT = "dracut"


@dataclass(frozen=True)
class Config:
    """What gets baked into /etc/rescue.conf; the kernel command line overrides each value."""

    host: str | None = None
    port: int = 3333
    token: str | None = None
    ip: str | None = None
    timeout: int = 30
    netconsole: bool = False  # stream the kernel log over UDP on every boot (netconsole.sh)

    def validate(self) -> None:
        if self.host is not None and not _HOST.match(self.host):
            raise RescueError(f"bad --host {self.host!r}", hint="a host name or an IP address")
        if not 1 <= self.port <= 65535:
            raise RescueError(f"bad --port {self.port}", hint="1-65535")
        if self.token is not None and not TOKEN.fullmatch(self.token):
            raise RescueError("bad --token", hint="printable characters, no spaces")
        if self.ip is not None and not _IP.match(self.ip):
            raise RescueError(f"bad --ip {self.ip!r}", hint="dhcp, none, or the kernel's ip= form")
        if not 1 <= self.timeout <= 3600:
            raise RescueError(f"bad --timeout {self.timeout}", hint="1-3600 seconds")

    def text(self) -> str:
        lines = [
            "# rescue: written by `rescue hooks`; the kernel command line overrides these",
            "# (rescue.host= rescue.port= rescue.token= rescue.ip= rescue=off)",
            f"RESCUE_HOST={self.host or ''}",
            f"RESCUE_PORT={self.port}",
            f"RESCUE_TIMEOUT={self.timeout}",
        ]
        if self.token:
            lines.append(f"RESCUE_TOKEN={self.token}")
        if self.ip:
            lines.append(f"RESCUE_IP={self.ip}")
        if self.netconsole:
            lines.append("RESCUE_NETCONSOLE=1")
        return "\n".join(lines) + "\n"


def no_links(base: Path, rel: Path) -> None:
    """Refuse a directory link between base and base/rel: writing there could land anywhere (a /tmp race)."""
    for parent in reversed(rel.parents[:-1]):
        if (base / parent).is_symlink():
            raise RescueError(f"{base / parent}: is a link; refusing to write through it")


def layout(flavor: Flavor, config: Config) -> list[tuple[Path, Path | str, int]]:
    """(path relative to the target, source file or text, mode) of every file the flavor installs."""
    src = hooks_dir()
    collector = collector_files()
    files: list[tuple[Path, Path | str, int]] = []
    if flavor is Flavor.INITRAMFS_TOOLS:
        base = src / "initramfs-tools"
        for name in INITRAMFS_TOOLS_FILES:
            files.append((Path(name), base / name, 0o755))
        files += [(Path("rescue/collector") / f.name, f, 0o755) for f in collector]
        files.append((Path("rescue/rescue.conf"), config.text(), 0o600))
    else:
        base = src / "dracut" / DRACUT_MODULE
        for name in DRACUT_FILES:
            files.append(
                (Path(DRACUT_MODULE) / name, base / name, 0o644 if name.endswith(".service") else 0o755)
            )
        files += [(Path(DRACUT_MODULE) / "collector" / f.name, f, 0o755) for f in collector]
        files.append((Path(DRACUT_MODULE) / "rescue.conf", config.text(), 0o600))
    return files


def render(out: Path, flavor: Flavor, config: Config) -> list[Path]:
    """Write the hooks for `flavor` under `out`; return the files written, relative to `out`."""
    config.validate()
    if out.exists() and not out.is_dir():
        raise RescueError(f"{out}: exists and is not a directory")
    written: list[Path] = []
    for rel, source, mode in layout(flavor, config):
        no_links(out, rel)
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_whole(dest, source.read_bytes() if isinstance(source, Path) else source.encode(), mode)
        written.append(rel)
    return written


def write_whole(dest: Path, data: bytes, mode: int) -> None:
    """Write a file whole or not at all; a link at dest is replaced, never followed."""
    tmp = dest.with_name(f".{dest.name}.rescue-tmp")
    tmp.unlink(missing_ok=True)
    with tmp.open("xb") as f:
        f.write(data)
        os.fchmod(f.fileno(), mode)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, dest)

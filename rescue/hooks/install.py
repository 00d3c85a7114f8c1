"""`rescue hooks render|install|uninstall`: put the initramfs hooks (hooks/) where the generator finds them.

A rendered tree is self-contained. For initramfs-tools it is laid out like a confdir (hooks/rescue,
scripts/panic/rescue, scripts/local-premount/rescue, rescue/collect.sh, rescue/rescue.conf), so
`cp -a DIR/. /etc/initramfs-tools/` or `mkinitramfs -d CONFDIR` works with no other file. For dracut it is a
modules.d tree (90rescue-send/...); dracut already ships a module named "rescue", hence "rescue-send".
`install` is render plus copy into the live system (or under --root); it records what it added so that
`uninstall` removes exactly that.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from rescue.errors import RescueError, os_error
from rescue.reading import load_json
from rescue.resources import hooks_dir
from rescue.run import run
from rescue.tokens import TOKEN, read_token_file, warn_visible_token

DRACUT_MODULE = "90rescue-send"
DRACUT_NAME = "rescue-send"
MANIFEST = Path("var/lib/rescue/hooks-installed.json")
DRACUT_CONF = Path("etc/dracut.conf.d/90-rescue-send.conf")

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
        return "\n".join(lines) + "\n"


def _no_links(base: Path, rel: Path) -> None:
    """Refuse a directory link between base and base/rel: writing there could land anywhere (a /tmp race)."""
    for parent in reversed(rel.parents[:-1]):
        if (base / parent).is_symlink():
            raise RescueError(f"{base / parent}: is a link; refusing to write through it")


def _layout(flavor: Flavor, config: Config) -> list[tuple[Path, Path | str, int]]:
    """(path relative to the target, source file or text, mode) of every file the flavor installs."""
    src = hooks_dir()
    collector = src / "lib" / "rescue-collect.sh"
    files: list[tuple[Path, Path | str, int]] = []
    if flavor is Flavor.INITRAMFS_TOOLS:
        base = src / "initramfs-tools"
        for name in ("hooks/rescue", "scripts/panic/rescue", "scripts/local-premount/rescue"):
            files.append((Path(name), base / name, 0o755))
        files.append((Path("rescue/collect.sh"), collector, 0o755))
        files.append((Path("rescue/rescue.conf"), config.text(), 0o600))
    else:
        base = src / "dracut" / DRACUT_MODULE
        for name in ("module-setup.sh", "rescue-emergency.sh"):
            files.append((Path(DRACUT_MODULE) / name, base / name, 0o755))
        files.append((Path(DRACUT_MODULE) / "collect.sh", collector, 0o755))
        files.append((Path(DRACUT_MODULE) / "rescue.conf", config.text(), 0o600))
    return files


def render(out: Path, flavor: Flavor, config: Config) -> list[Path]:
    """Write the hooks for `flavor` under `out`; return the files written, relative to `out`."""
    config.validate()
    collector = hooks_dir() / "lib" / "rescue-collect.sh"
    if not collector.is_file():
        raise RescueError(f"{collector}: missing", hint="a broken installation of rescue")
    if out.exists() and not out.is_dir():
        raise RescueError(f"{out}: exists and is not a directory")
    written: list[Path] = []
    for rel, source, mode in _layout(flavor, config):
        _no_links(out, rel)
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        _replace(dest, source.read_bytes() if isinstance(source, Path) else source.encode(), mode)
        written.append(rel)
    return written


def _installable(root: Path, flavor: Flavor) -> set[str]:
    """Every path (relative to root) install may write for the flavor: all that uninstall may delete."""
    target = _target(root, flavor).relative_to(root)
    paths = {str(target / rel) for rel, _, _ in _layout(flavor, Config())}
    return paths | ({str(DRACUT_CONF)} if flavor is Flavor.DRACUT else set())


def detect_flavor(root: Path) -> Flavor:
    """initramfs-tools when it is installed (Debian's default; dracut-core can sit beside it), else dracut."""
    if (root / "usr/sbin/mkinitramfs").exists() and (root / "etc/initramfs-tools").is_dir():
        return Flavor.INITRAMFS_TOOLS
    if (root / "usr/lib/dracut/modules.d").is_dir():
        return Flavor.DRACUT
    raise RescueError(f"no initramfs generator found under {root}", hint="install initramfs-tools or dracut")


def _target(root: Path, flavor: Flavor) -> Path:
    if flavor is Flavor.INITRAMFS_TOOLS:
        return root / "etc/initramfs-tools"
    return root / "usr/lib/dracut/modules.d"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_manifest(root: Path) -> dict[str, Any] | None:
    """The record of a previous install, checked: a flavor, files inside root that install writes."""
    path = root / MANIFEST
    if not path.exists():
        return None
    data = load_json(path, 1 << 20)
    hint = "remove it and the hooks by hand"
    try:
        flavor = Flavor(data["flavor"])
        files = [str(entry["path"]) for entry in data["files"]]
        dirs = [str(d) for d in data.get("dirs", [])]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise RescueError(f"{path}: not a rescue manifest", hint=hint) from None
    # The manifest decides what uninstall deletes: only what install could have written, inside root.
    allowed = _installable(root, flavor)
    parents = {str(parent) for rel in (*allowed, str(MANIFEST)) for parent in Path(rel).parents[:-1]}
    for rel in files + dirs:
        if rel not in (allowed if rel in files else parents):
            raise RescueError(f"{path}: refusing path {rel!r}", hint=hint)
    return {"flavor": str(flavor), "files": data["files"], "dirs": dirs}


def install(root: Path, flavor: Flavor | None, config: Config, staging: Path) -> dict[str, Any]:
    """Copy the rendered hooks into `root`; refuse to overwrite files rescue did not put there."""
    if root.exists() and not root.is_dir():
        raise RescueError(f"{root}: not a directory", hint="--root names the system's root directory")
    flavor = flavor or detect_flavor(root)
    target = _target(root, flavor)
    if not target.is_dir():
        raise RescueError(f"{target}: not a directory", hint=f"is {flavor} installed under {root}?")
    previous = _read_manifest(root)
    if previous and previous.get("flavor") != str(flavor):
        message = f"the {previous.get('flavor')} hooks are installed under {root}"
        raise RescueError(message, hint="rescue hooks uninstall first")
    ours = {f["path"] for f in previous["files"]} if previous else set()
    rendered = render(staging, flavor, config)
    pairs = [(staging / rel, target / rel) for rel in rendered]
    if flavor is Flavor.DRACUT:
        conf = staging / "dracut.conf"
        conf.write_text(
            f'# rescue: always include the {DRACUT_NAME} module\nadd_dracutmodules+=" {DRACUT_NAME} "\n'
        )
        pairs.append((conf, root / DRACUT_CONF))
    for _src, dest in pairs:
        base = target if dest.is_relative_to(target) else dest.parent
        _no_links(base, dest.relative_to(base))
        rel = str(dest.relative_to(root))
        if (dest.exists() or dest.is_symlink()) and rel not in ours:
            raise RescueError(f"{dest}: exists and was not installed by rescue", hint="move it away first")
    created_dirs: list[str] = list(previous.get("dirs", [])) if previous else []

    def note_new_dirs(rel: Path) -> None:
        for parent in reversed(rel.parents[:-1]):
            if not (root / parent).exists() and str(parent) not in created_dirs:
                created_dirs.append(str(parent))

    note_new_dirs(MANIFEST)
    (root / MANIFEST).parent.mkdir(parents=True, exist_ok=True)  # a place for the record before any copy
    files: list[dict[str, str]] = []
    try:
        for src, dest in pairs:
            note_new_dirs(dest.relative_to(root))
            dest.parent.mkdir(parents=True, exist_ok=True)
            _replace(dest, src.read_bytes(), src.stat().st_mode & 0o777)
            files.append({"path": str(dest.relative_to(root)), "sha256": _sha256(dest)})
    except OSError as e:
        # Record what did get copied, so that `rescue hooks uninstall` can remove it.
        done = {f["path"] for f in files}
        files += [f for f in (previous or {}).get("files", []) if f["path"] not in done]
        _write_manifest(root, {"flavor": str(flavor), "files": files, "dirs": created_dirs})
        raise RescueError(
            f"{os_error(e).message}; installing stopped",
            hint="rescue hooks uninstall removes what was copied",
        ) from None
    manifest = {"flavor": str(flavor), "files": files, "dirs": created_dirs}
    _write_manifest(root, manifest)
    return manifest


def _replace(dest: Path, data: bytes, mode: int) -> None:
    """Write a file whole or not at all; a link at dest is replaced, never followed."""
    tmp = dest.with_name(f".{dest.name}.rescue-tmp")
    tmp.unlink(missing_ok=True)
    with tmp.open("xb") as f:
        f.write(data)
        os.fchmod(f.fileno(), mode)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, dest)


def _write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    _replace(root / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode(), 0o644)


def uninstall(root: Path) -> dict[str, Any]:
    """Remove exactly what install added (files, then the directories it created, when empty)."""
    manifest = _read_manifest(root)
    if manifest is None:
        raise RescueError(f"rescue hooks are not installed under {root} (no {root / MANIFEST})")
    for entry in manifest["files"]:
        path = root / entry["path"]
        if path.is_symlink() or path.is_file():
            path.unlink()
    (root / MANIFEST).unlink()
    for rel in sorted(manifest["dirs"], key=len, reverse=True):
        path = root / rel
        if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            path.rmdir()
    return manifest


def update_images(flavor: Flavor, kver: str) -> None:
    """Rebuild the running system's initramfs for `kver` so the hooks take effect."""
    if flavor is Flavor.INITRAMFS_TOOLS:
        run(["update-initramfs", "-u", "-k", kver], capture=False)
    else:
        run(["dracut", "--force", "--kver", kver], capture=False)


# --- command line ---------------------------------------------------------------------------------------


def _config(args: argparse.Namespace) -> Config:
    if args.token:
        warn_visible_token()
    token = args.token or (read_token_file(Path(args.token_file)) if args.token_file else None)
    return Config(host=args.host, port=args.port, token=token, ip=args.ip, timeout=args.timeout)


def _say(args: argparse.Namespace, doc: dict[str, Any], lines: list[str]) -> None:
    """One JSON document with --json, else the lines for people."""
    if args.json:
        print(json.dumps(doc))
    else:
        print("\n".join(lines))


def _cmd_render(args: argparse.Namespace) -> int:
    out = Path(args.out)
    written = render(out, Flavor(args.flavor), _config(args))
    doc = {"flavor": args.flavor, "out": str(out), "files": [str(out / rel) for rel in written]}
    _say(args, doc, doc["files"])
    return 0


def _cmd_install(args: argparse.Namespace) -> int:
    import tempfile

    root = Path(args.root)
    flavor = None if args.flavor == "auto" else Flavor(args.flavor)
    if args.update and root.resolve() != Path("/"):
        raise RescueError("--update rebuilds this system's initramfs; it cannot be used with --root")
    config = _config(args)
    with tempfile.TemporaryDirectory(prefix="rescue-hooks-") as tmp:
        manifest = install(root, flavor, config, Path(tmp))
    files = [str(root / entry["path"]) for entry in manifest["files"]]
    lines = [f"installed {f}" for f in files]
    if not config.host:
        lines.append("note: no --host baked in; boot with rescue.host=H rescue.port=P on the command line")
    if args.update:
        _say(args, {"flavor": manifest["flavor"], "installed": files, "updated": [args.kver]}, lines)
        update_images(Flavor(manifest["flavor"]), args.kver)
    else:
        lines.append(f"the hooks take effect with the next build (update-initramfs -u -k {args.kver})")
        _say(args, {"flavor": manifest["flavor"], "installed": files, "updated": []}, lines)
    return 0


def _cmd_uninstall(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if args.update and root.resolve() != Path("/"):
        raise RescueError("--update rebuilds this system's initramfs; it cannot be used with --root")
    manifest = uninstall(root)
    files = [str(root / entry["path"]) for entry in manifest["files"]]
    updated = [args.kver] if args.update else []
    doc = {"flavor": manifest["flavor"], "removed": files, "updated": updated}
    _say(args, doc, [f"removed {f}" for f in files])
    if args.update:
        update_images(Flavor(manifest["flavor"]), args.kver)
    return 0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="the listener's address, baked into /etc/rescue.conf")
    p.add_argument("--port", type=_port, default=3333, help="the listener's port (default 3333)")
    p.add_argument("--token-file", metavar="FILE", help="the token the listener requires, read from FILE")
    p.add_argument("--token", help="the same, given on the command line (visible in ps: prefer --token-file)")
    p.add_argument("--ip", help="network setup: dhcp (default), none, or the kernel's ip= form")
    p.add_argument("--timeout", type=int, default=30, help="the collector's total time limit in seconds")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hooks = sub.add_parser("hooks", help="render, install or remove the initramfs hooks")
    hsub = hooks.add_subparsers(dest="hooks_command", required=True, parser_class=type(hooks))

    p = hsub.add_parser("render", help="write the hooks into a directory")
    p.add_argument("--out", required=True, help="directory to write (a confdir or a dracut modules.d tree)")
    p.add_argument("--flavor", choices=[f.value for f in Flavor], default=Flavor.INITRAMFS_TOOLS.value)
    _add_config_args(p)
    p.add_argument("--json", action="store_true", help="print the result as one JSON document")
    p.set_defaults(func=_cmd_render)

    kver = os.uname().release
    p = hsub.add_parser("install", help="install the hooks into this system (or under --root)")
    p.add_argument("--root", default="/", help="the system's root directory (default /)")
    p.add_argument("--flavor", choices=["auto", *(f.value for f in Flavor)], default="auto")
    p.add_argument("--update", action="store_true", help="rebuild the initramfs of --kver afterwards")
    p.add_argument("--kver", default=kver, help=f"kernel version for --update (default {kver})")
    _add_config_args(p)
    p.add_argument("--json", action="store_true", help="print the result as one JSON document")
    p.set_defaults(func=_cmd_install)

    p = hsub.add_parser("uninstall", help="remove exactly what install added")
    p.add_argument("--root", default="/", help="the system's root directory (default /)")
    p.add_argument("--update", action="store_true", help="rebuild the initramfs of --kver afterwards")
    p.add_argument("--kver", default=kver, help=f"kernel version for --update (default {kver})")
    p.add_argument("--json", action="store_true", help="print the result as one JSON document")
    p.set_defaults(func=_cmd_uninstall)

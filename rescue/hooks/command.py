"""The `rescue hooks` command line: render, install, uninstall (each with --json)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rescue.hooks.install import (
    check_updatable,
    detect_flavor,
    install,
    read_record,
    uninstall,
    update_images,
)
from rescue.hooks.render import Config, Flavor, render
from rescue.tokens import read_token_file, warn_visible_token


def _config(args: argparse.Namespace) -> Config:
    if args.token:
        warn_visible_token()
    token = args.token or (read_token_file(Path(args.token_file)) if args.token_file else None)
    return Config(
        host=args.host,
        port=args.port,
        token=token,
        ip=args.ip,
        timeout=args.timeout,
        netconsole=args.netconsole,
    )


def _say(args: argparse.Namespace, doc: dict[str, Any], lines: list[str]) -> None:
    """One JSON document with --json, else the lines for people."""
    if args.json:
        print(json.dumps(doc))
    else:
        print("\n".join(lines))


def render_command(args: argparse.Namespace) -> int:
    out = Path(args.out)
    written = render(out, Flavor(args.flavor), _config(args))
    doc = {"flavor": args.flavor, "out": str(out), "files": [str(out / rel) for rel in written]}
    _say(args, doc, doc["files"])
    return 0


def install_command(args: argparse.Namespace) -> int:
    import tempfile

    root = Path(args.root)
    flavor = None if args.flavor == "auto" else Flavor(args.flavor)
    config = _config(args)
    if args.update and root.is_dir():
        check_updatable(root, flavor or detect_flavor(root))
    with tempfile.TemporaryDirectory(prefix="rescue-hooks-") as tmp:
        manifest = install(root, flavor, config, Path(tmp))
    files = [str(root / entry["path"]) for entry in manifest["files"]]
    lines = [f"installed {f}" for f in files]
    if not config.host:
        lines.append("note: no --host baked in; boot with rescue.host=H rescue.port=P on the command line")
    updated = _update(args, root, manifest["flavor"], lines)
    if not args.update:
        lines.append("the hooks take effect with the next build of each image (--update rebuilds them all)")
    _say(args, {"flavor": manifest["flavor"], "installed": files, "updated": updated}, lines)
    return 0


def uninstall_command(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if args.update:
        recorded = read_record(root)
        if recorded:
            check_updatable(root, Flavor(recorded["flavor"]))
    manifest = uninstall(root)
    files = [str(root / entry["path"]) for entry in manifest["files"]]
    lines = [f"removed {f}" for f in files]
    updated = _update(args, root, manifest["flavor"], lines)
    _say(args, {"flavor": manifest["flavor"], "removed": files, "updated": updated}, lines)
    return 0


def _update(args: argparse.Namespace, root: Path, flavor: str, lines: list[str]) -> list[str]:
    """With --update, rebuild every installed kernel's image; say which."""
    if not args.update:
        return []
    rebuilt = update_images(root, Flavor(flavor))
    lines += [f"rebuilt {image}" for image in rebuilt] or ["rebuilt no image (no installed kernel has one)"]
    return rebuilt


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
    p.add_argument(
        "--netconsole",
        action="store_true",
        help="stream the kernel log to the listener over UDP on every boot (rescue.netconsole=1)",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hooks = sub.add_parser("hooks", help="render, install or remove the initramfs hooks")
    hsub = hooks.add_subparsers(dest="hooks_command", required=True, parser_class=type(hooks))

    p = hsub.add_parser("render", help="write the hooks into a directory")
    p.add_argument("--out", required=True, help="directory to write (a confdir or a dracut modules.d tree)")
    p.add_argument("--flavor", choices=[f.value for f in Flavor], default=Flavor.INITRAMFS_TOOLS.value)
    _add_config_args(p)
    p.add_argument("--json", action="store_true", help="print the result as one JSON document")
    p.set_defaults(func=render_command)

    p = hsub.add_parser("install", help="install the hooks into this system (or under --root)")
    p.add_argument("--root", default="/", help="the system's root directory (default /)")
    p.add_argument("--flavor", choices=["auto", *(f.value for f in Flavor)], default="auto")
    p.add_argument(
        "--update", action="store_true", help="rebuild every installed kernel's initramfs afterwards"
    )
    _add_config_args(p)
    p.add_argument("--json", action="store_true", help="print the result as one JSON document")
    p.set_defaults(func=install_command)

    p = hsub.add_parser("uninstall", help="remove exactly what install added")
    p.add_argument("--root", default="/", help="the system's root directory (default /)")
    p.add_argument(
        "--update", action="store_true", help="rebuild every installed kernel's initramfs afterwards"
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON document")
    p.set_defaults(func=uninstall_command)

"""`rescue hooks install|uninstall`: the rendered hooks copied into a system, and exactly those removed.

install records what it added (RECORD) so that uninstall removes exactly that; it never overwrites a file
it did not install, nor writes through a link; each file is written whole.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from rescue.errors import RescueError, os_error
from rescue.hooks.render import DRACUT_NAME, Config, Flavor, layout, no_links, render, write_whole
from rescue.kmod import installed_kernels
from rescue.reading import load_json
from rescue.run import run

RECORD = Path("var/lib/rescue/hooks-installed.json")  # what install wrote, for uninstall
DRACUT_HOOKS_CONF = Path("etc/dracut.conf.d/90-rescue-send.conf")  # adds the module to every image


def _installable(root: Path, flavor: Flavor) -> set[str]:
    """Every path (relative to root) install may write for the flavor: all that uninstall may delete."""
    target = _target(root, flavor).relative_to(root)
    paths = {str(target / rel) for rel, _, _ in layout(flavor, Config())}
    return paths | ({str(DRACUT_HOOKS_CONF)} if flavor is Flavor.DRACUT else set())


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


def read_record(root: Path) -> dict[str, Any] | None:
    """The record of a previous install, checked: a flavor, files inside root that install writes."""
    path = root / RECORD
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
    parents = {str(parent) for rel in (*allowed, str(RECORD)) for parent in Path(rel).parents[:-1]}
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
    previous = read_record(root)
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
        pairs.append((conf, root / DRACUT_HOOKS_CONF))
    for _src, dest in pairs:
        base = target if dest.is_relative_to(target) else dest.parent
        no_links(base, dest.relative_to(base))
        rel = str(dest.relative_to(root))
        if (dest.exists() or dest.is_symlink()) and rel not in ours:
            raise RescueError(f"{dest}: exists and was not installed by rescue", hint="move it away first")
    created_dirs: list[str] = list(previous.get("dirs", [])) if previous else []

    def note_new_dirs(rel: Path) -> None:
        for parent in reversed(rel.parents[:-1]):
            if not (root / parent).exists() and str(parent) not in created_dirs:
                created_dirs.append(str(parent))

    note_new_dirs(RECORD)
    (root / RECORD).parent.mkdir(parents=True, exist_ok=True)  # a place for the record before any copy
    files: list[dict[str, str]] = []
    try:
        for src, dest in pairs:
            note_new_dirs(dest.relative_to(root))
            dest.parent.mkdir(parents=True, exist_ok=True)
            write_whole(dest, src.read_bytes(), src.stat().st_mode & 0o777)
            files.append({"path": str(dest.relative_to(root)), "sha256": _sha256(dest)})
    except OSError as e:
        # Record what did get copied, so that `rescue hooks uninstall` can remove it.
        done = {f["path"] for f in files}
        files += [f for f in (previous or {}).get("files", []) if f["path"] not in done]
        _write_record(root, {"flavor": str(flavor), "files": files, "dirs": created_dirs})
        raise RescueError(
            f"{os_error(e).message}; installing stopped",
            hint="rescue hooks uninstall removes what was copied",
        ) from None
    manifest = {"flavor": str(flavor), "files": files, "dirs": created_dirs}
    _write_record(root, manifest)
    return manifest


def _write_record(root: Path, manifest: dict[str, Any]) -> None:
    write_whole(root / RECORD, (json.dumps(manifest, indent=1) + "\n").encode(), 0o644)


def uninstall(root: Path) -> dict[str, Any]:
    """Remove exactly what install added (files, then the directories it created, when empty)."""
    manifest = read_record(root)
    if manifest is None:
        raise RescueError(f"rescue hooks are not installed under {root} (no {root / RECORD})")
    for entry in manifest["files"]:
        path = root / entry["path"]
        if path.is_symlink() or path.is_file():
            path.unlink()
    (root / RECORD).unlink()
    for rel in sorted(manifest["dirs"], key=len, reverse=True):
        path = root / rel
        if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            path.rmdir()
    return manifest


_UPDATERS = {Flavor.INITRAMFS_TOOLS: "update-initramfs", Flavor.DRACUT: "dracut"}


def check_updatable(root: Path, flavor: Flavor) -> None:
    """Refuse --update before anything is installed when the system under root cannot rebuild its images."""
    tool = _UPDATERS[flavor]
    if not any((root / d / tool).exists() for d in ("usr/sbin", "usr/bin", "sbin", "bin")):
        raise RescueError(f"--update: {tool} not found under {root}", hint=f"install {flavor} there first")


_GENERATING = re.compile(r"^update-initramfs: Generating (\S+)", re.MULTILINE)


def update_images(root: Path, flavor: Flavor) -> list[str]:
    """Rebuild the initramfs of every installed kernel under root (through chroot unless root is /), so the
    hooks are in (or out of) whichever kernel boots next; return the images rebuilt.

    initramfs-tools: `update-initramfs -u -k all` (every kernel that has an image). dracut: `dracut --force
    --kver KVER` for each kernel installed with a vmlinuz (dracut's --regenerate-all only knows the images
    it can find under its own naming).
    """
    chroot = [] if root.resolve() == Path("/") else ["chroot", str(root)]
    if flavor is Flavor.INITRAMFS_TOOLS:
        out = run([*chroot, "update-initramfs", "-u", "-k", "all"], timeout=3600).stdout or b""
        return _GENERATING.findall(out.decode(errors="replace"))
    rebuilt = []
    for kernel in installed_kernels(root):
        if kernel.vmlinuz is None:
            continue  # modules without a kernel to boot (a removed package's leftovers)
        run([*chroot, "dracut", "--force", "--kver", kernel.version], timeout=3600)
        rebuilt.append(kernel.version)
    return rebuilt

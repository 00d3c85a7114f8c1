"""Real initramfs images with the rescue hooks in them: mkinitramfs -d CONFDIR and dracut --no-hostonly.

Used by the image tests, the analysis tests and the qemu boots. `drop_modules` removes kernel modules from
the image the way a broken configuration would (the classic: libcrc32c missing next to btrfs).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rescue.errors import RescueError
from rescue.harness.suitechroot import in_chroot
from rescue.hooks.render import DRACUT_NAME, Config, Flavor, render
from rescue.run import run

SYSTEM_CONFDIR = Path("/etc/initramfs-tools")
DRACUT_BASEDIR = Path("/usr/lib/dracut")

# Runs after every other hook of the confdir (its prereqs name them all) and before mkinitramfs runs depmod
# on the image, so the image's own modules.dep stays consistent: the hole shows only against the kernel's.
_DROP_HOOK = """#!/bin/sh
PREREQ="{prereqs}"
prereqs() {{
	echo "$PREREQ"
}}
case $1 in
prereqs)
	prereqs
	exit 0
	;;
esac
for name in {names}; do
	find "$DESTDIR/lib/modules/$version" "$DESTDIR/usr/lib/modules/$version" -name "$name.ko*" \\
		-exec rm -f {{}} + 2>/dev/null || true
done
exit 0
"""


def _need(tool: str, package: str, root: Path | None = None) -> str:
    if root is not None:
        found = [d for d in ("usr/sbin", "usr/bin", "sbin", "bin") if (root / d / tool).exists()]
        if not found:
            raise RescueError(f"{tool} not found in the chroot {root}", hint=f"install {package} there")
        return f"/{found[0]}/{tool}"
    path = shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        raise RescueError(f"{tool} not found", hint=f"install {package} (make deps)")
    return path


def _check_kernel(kver: str, root: Path | None = None) -> None:
    base = (root or Path("/")) / "lib/modules"
    if not (base / kver / "modules.dep").is_file():
        raise RescueError(f"kernel {kver}: no {base / kver}/modules.dep", hint="install its package")


def _execute(argv: list[str], root: Path | None, env: dict[str, str] | None = None) -> None:
    """Run a generator on the host, or inside the chroot root (paths in argv are then the chroot's)."""
    if root is None:
        run(argv, env={**os.environ, **(env or {})}, timeout=900)
        return
    in_chroot(root, ["env", *(f"{k}={v}" for k, v in (env or {}).items()), *argv], timeout=900)


@contextmanager
def _workdir(root: Path | None, prefix: str) -> Iterator[tuple[Path, str]]:
    """A temporary directory: (its path here, its path as the generator sees it)."""
    parent = root / "tmp" if root else None
    with tempfile.TemporaryDirectory(prefix=prefix, dir=parent) as tmp:
        yield Path(tmp), ("/" + str(Path(tmp).relative_to(root)) if root else tmp)


def _module_names(names: Sequence[str]) -> list[str]:
    out = []
    for name in names:
        base = name.rsplit("/", 1)[-1].split(".ko", 1)[0]
        if not base or not all(c.isalnum() or c in "_-" for c in base):
            raise RescueError(f"bad module name to drop: {name!r}")
        out.append(base)
    return out


def build_initramfs_tools_image(
    out: Path,
    kver: str,
    *,
    host: str,
    port: int,
    token: str | None = None,
    modules: str = "most",
    drop_modules: Sequence[str] = (),
    hooks: bool = True,
    root: Path | None = None,
) -> Path:
    """A real `mkinitramfs -d CONFDIR -o OUT KVER` with the rescue hooks rendered into a temp confdir
    (hooks=False builds the same image without them, to measure what they add). root: run the
    mkinitramfs of that chroot (another Debian suite's, rescue.harness.suitechroot) instead of the host's."""
    mkinitramfs = _need("mkinitramfs", "initramfs-tools", root)
    _check_kernel(kver, root)
    if modules not in ("most", "dep", "netboot", "list"):
        raise RescueError(f"bad MODULES value {modules!r}", hint="most, dep, netboot or list")
    names = _module_names(drop_modules)
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    system_confdir = (root or Path("/")) / SYSTEM_CONFDIR.relative_to("/")
    with _workdir(root, "rescue-confdir-") as (tmp, inner):
        confdir = tmp / "initramfs-tools"
        if system_confdir.is_dir():
            shutil.copytree(system_confdir, confdir, symlinks=True)
        else:
            confdir.mkdir()
        if not (confdir / "initramfs.conf").exists():
            (confdir / "initramfs.conf").write_text("MODULES=most\nBUSYBOX=auto\nCOMPRESS=zstd\n")
        conf_d = confdir / "conf.d"
        conf_d.mkdir(exist_ok=True)
        # conf.d is read after initramfs.conf: these win over the system's settings.
        (conf_d / "zz-rescue-image").write_text(f"MODULES={modules}\nBUSYBOX=y\n")
        if hooks:
            render(confdir, Flavor.INITRAMFS_TOOLS, Config(host=host, port=port, token=token))
        if names:
            hookdir = confdir / "hooks"
            others = sorted(p.name for p in hookdir.iterdir() if p.is_file())
            drop = hookdir / "zz-rescue-drop-modules"
            drop.write_text(_DROP_HOOK.format(prereqs=" ".join(others), names=" ".join(names)))
            drop.chmod(0o755)
        _execute([mkinitramfs, "-d", f"{inner}/initramfs-tools", "-o", f"{inner}/out.img", kver], root)
        shutil.move(tmp / "out.img", out)
    return out


def build_dracut_image(
    out: Path,
    kver: str,
    *,
    host: str,
    port: int,
    token: str | None = None,
    drop_modules: Sequence[str] = (),
    systemd: bool = False,
    hooks: bool = True,
    extra_args: Sequence[str] = (),
    root: Path | None = None,
) -> Path:
    """A real `dracut --no-hostonly` image with the rescue-send module, from a temp copy of dracut's module
    dir (nothing is installed into the system's /usr/lib/dracut).

    By default the image uses dracut's shell init, which reaches the emergency hook by itself (rd.retry=N
    bounds the wait). With systemd=True, a btrfs root whose module does not load never becomes "ready" to
    udev and systemd waits for it without limit: boot it with rd.timeout=N (measured: emergency hook and a
    complete send with rd.timeout=30 under qemu TCG); the hooks' watchdog unit sends without it.
    hooks=False leaves the rescue-send module out (a machine without the hooks); extra_args go to dracut
    as they are (e.g. --add bash --add-drivers virtio_net --install ip). root: the dracut of that chroot,
    not the host's."""
    dracut = _need("dracut", "dracut-core", root)
    _check_kernel(kver, root)
    names = _module_names(drop_modules)
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    system_base = (root or Path("/")) / DRACUT_BASEDIR.relative_to("/")
    with _workdir(root, "rescue-dracut-") as (tmp, inner):
        base = tmp / "dracut"
        base.mkdir()
        # dracut finds its modules under $dracutbasedir: the system's entries, linked, plus ours. The links
        # name the paths dracut sees (inside the chroot when there is one).
        for entry in system_base.iterdir():
            if entry.name != "modules.d":
                (base / entry.name).symlink_to(DRACUT_BASEDIR / entry.name)
        modules_d = base / "modules.d"
        modules_d.mkdir()
        for entry in (system_base / "modules.d").iterdir():
            (modules_d / entry.name).symlink_to(DRACUT_BASEDIR / "modules.d" / entry.name)
        render(modules_d, Flavor.DRACUT, Config(host=host, port=port, token=token))
        (tmp / "conf.d").mkdir()
        argv = [dracut, "--no-hostonly", "--force", "--quiet", "--conf", "/dev/null",
                "--confdir", f"{inner}/conf.d"]  # fmt: skip
        argv += [*(["--add", DRACUT_NAME] if hooks else []), *extra_args]
        if names:
            argv += ["--omit-drivers", " ".join(names)]
        if not systemd:
            argv += ["--omit", "systemd systemd-initrd dracut-systemd systemd-udevd systemd-journald"]
        argv += [f"{inner}/out.img", kver]
        _execute(argv, root, {"dracutbasedir": f"{inner}/dracut"})
        shutil.move(tmp / "out.img", out)
    return out

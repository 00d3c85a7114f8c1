"""`rescue hooks render|install|uninstall` through the real command line, into temporary roots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def rescue(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rescue", *args], capture_output=True, text=True, timeout=60)


def tree(root: Path) -> dict[str, str]:
    """Every path under root with its mode and (for files) content, to compare before and after."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            out[rel] = oct(p.stat().st_mode) + (p.read_text() if p.is_file() else "")
    return out


@pytest.fixture
def itools_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "usr/sbin").mkdir(parents=True)
    (root / "usr/sbin/mkinitramfs").write_text("#!/bin/sh\n")
    (root / "etc/initramfs-tools/scripts/panic").mkdir(parents=True)
    (root / "etc/initramfs-tools/initramfs.conf").write_text("MODULES=most\n")
    return root


def test_render_initramfs_tools_is_a_confdir(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = rescue("hooks", "render", "--out", str(out), "--host", "10.0.2.2", "--port", "4444",
                  "--token", "t0k")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for rel in (
        "hooks/rescue",
        "scripts/panic/rescue",
        "scripts/local-premount/rescue",
        "scripts/init-premount/rescue",
        "scripts/init-bottom/rescue",
        "rescue/collector/collect.sh",
        "rescue/collector/netconsole.sh",
        "rescue/collector/watchdog.sh",
    ):
        assert (out / rel).stat().st_mode & 0o777 == 0o755, rel
    conf = out / "rescue/rescue.conf"
    assert conf.stat().st_mode & 0o777 == 0o600  # it may hold the token
    lines = conf.read_text().splitlines()
    assert {"RESCUE_HOST=10.0.2.2", "RESCUE_PORT=4444", "RESCUE_TOKEN=t0k"} <= set(lines)
    repo = Path(__file__).resolve().parent.parent.parent
    for name in ("collect.sh", "conf.sh", "net.sh", "modcheck.awk"):  # the whole collector, hooks/collector/
        assert (out / "rescue/collector" / name).read_bytes() == (
            repo / "hooks/collector" / name
        ).read_bytes()


def test_render_dracut_is_a_module_dir(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = rescue("hooks", "render", "--out", str(out), "--flavor", "dracut")
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (out / "90rescue-send").iterdir())
    assert names == ["collector", "module-setup.sh", "rescue-always.sh", "rescue-emergency.sh",
                     "rescue-netconsole.sh", "rescue-watchdog-start.sh", "rescue-watchdog-stop.sh",
                     "rescue-watchdog.service", "rescue.conf"]  # fmt: skip
    assert (out / "90rescue-send/rescue-watchdog.service").stat().st_mode & 0o777 == 0o644
    collector = sorted(p.name for p in (REPO / "hooks/collector").iterdir())
    assert {"collect.sh", "conf.sh", "modcheck.awk", "net.sh"} <= set(collector)
    assert sorted(p.name for p in (out / "90rescue-send/collector").iterdir()) == collector
    assert "RESCUE_HOST=\n" in (out / "90rescue-send/rescue.conf").read_text()
    assert "RESCUE_NETCONSOLE" not in (out / "90rescue-send/rescue.conf").read_text()


def test_render_netconsole_bakes_it_in(tmp_path: Path) -> None:
    proc = rescue("hooks", "render", "--out", str(tmp_path), "--host", "192.0.2.7", "--netconsole")
    assert proc.returncode == 0, proc.stderr
    assert "RESCUE_NETCONSOLE=1" in (tmp_path / "rescue/rescue.conf").read_text().splitlines()


def test_install_then_uninstall_leaves_the_root_as_it_was(itools_root: Path) -> None:
    before = tree(itools_root)
    proc = rescue("hooks", "install", "--root", str(itools_root), "--host", "192.0.2.1")
    assert proc.returncode == 0, proc.stderr
    confdir = itools_root / "etc/initramfs-tools"
    assert (confdir / "hooks/rescue").is_file()
    assert (confdir / "scripts/panic/rescue").is_file()
    assert "RESCUE_HOST=192.0.2.1" in (confdir / "rescue/rescue.conf").read_text()
    # Installing again (a new host) replaces rescue's own files.
    proc = rescue("hooks", "install", "--root", str(itools_root), "--host", "192.0.2.9")
    assert proc.returncode == 0, proc.stderr
    assert "RESCUE_HOST=192.0.2.9" in (confdir / "rescue/rescue.conf").read_text()
    proc = rescue("hooks", "uninstall", "--root", str(itools_root))
    assert proc.returncode == 0, proc.stderr
    assert "removed " in proc.stdout
    assert tree(itools_root) == before


def test_install_dracut_flavor(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/lib/dracut/modules.d/99base").mkdir(parents=True)
    before = tree(root)
    proc = rescue("hooks", "install", "--root", str(root), "--flavor", "auto", "--host", "h.example")
    assert proc.returncode == 0, proc.stderr
    assert (root / "usr/lib/dracut/modules.d/90rescue-send/module-setup.sh").is_file()
    conf = root / "etc/dracut.conf.d/90-rescue-send.conf"
    assert 'add_dracutmodules+=" rescue-send "' in conf.read_text()
    assert rescue("hooks", "uninstall", "--root", str(root)).returncode == 0
    assert tree(root) == before


def test_install_does_not_overwrite_foreign_files(itools_root: Path) -> None:
    foreign = itools_root / "etc/initramfs-tools/scripts/panic/rescue"
    foreign.write_text("#!/bin/sh\n# someone else's\n")
    proc = rescue("hooks", "install", "--root", str(itools_root))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "not installed by rescue" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert foreign.read_text() == "#!/bin/sh\n# someone else's\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hooks", "uninstall", "--root", "{root}"], "not installed"),
        (["hooks", "install", "--root", "{root}", "--port", "70000"], "port out of range"),
        (["hooks", "install", "--root", "{root}", "--host", "a b"], "bad --host"),
        (["hooks", "install", "--root", "{root}", "--update"], "--update: update-initramfs not found"),
        (["hooks", "install", "--root", "{root}/nothing"], "no initramfs generator"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(itools_root: Path, args: list[str], message: str) -> None:
    proc = rescue(*(a.format(root=itools_root) for a in args))
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr


def test_switching_flavor_needs_an_uninstall_first(itools_root: Path) -> None:
    (itools_root / "usr/lib/dracut/modules.d").mkdir(parents=True)
    assert rescue("hooks", "install", "--root", str(itools_root)).returncode == 0
    proc = rescue("hooks", "install", "--root", str(itools_root), "--flavor", "dracut")
    assert proc.returncode == 2
    assert "uninstall first" in proc.stderr and proc.stderr.count("\n") == 1
    assert not (itools_root / "usr/lib/dracut/modules.d/90rescue-send").exists()


def test_uninstall_refuses_a_manifest_that_points_outside(itools_root: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    manifest = itools_root / "var/lib/rescue/hooks-installed.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"flavor": "initramfs-tools", "files": [{"path": "../victim"}], "dirs": []}\n')
    proc = rescue("hooks", "uninstall", "--root", str(itools_root))
    assert proc.returncode == 2 and "refusing path" in proc.stderr
    assert victim.read_text() == "keep me\n"


def test_render_into_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x\n")
    for out, message in ((tmp_path / "file", "not a directory"), (Path("/proc/rescue"), "no such file")):
        proc = rescue("hooks", "render", "--out", str(out))
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1
    assert (tmp_path / "file").read_text() == "x\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--root", "{root}/etc/initramfs-tools/initramfs.conf"], "not a directory"),
        (["--root", "/proc", "--flavor", "initramfs-tools"], "is initramfs-tools installed under /proc"),
        (["--root", "{root}", "--flavor", "dracut"], "is dracut installed"),
        (["--root", "{root}", "--flavor", "mkinitcpio"], "invalid choice"),
    ],
)
def test_install_where_it_cannot_go(itools_root: Path, args: list[str], message: str) -> None:
    before = tree(itools_root)
    proc = rescue("hooks", "install", *(a.format(root=itools_root) for a in args))
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1
    assert tree(itools_root) == before


@pytest.mark.parametrize(
    "manifest",
    [
        "[1, 2]",
        '{"flavor": "initramfs-tools", "files": "abc"}',
        '{"flavor": "mkinitcpio", "files": []}',
        '{"flavor": "initramfs-tools", "files": [{"name": "x"}]}',
        "[" * 100_000,
    ],
)
def test_a_corrupt_manifest_is_one_line_for_install_and_uninstall(itools_root: Path, manifest: str) -> None:
    path = itools_root / "var/lib/rescue/hooks-installed.json"
    path.parent.mkdir(parents=True)
    path.write_text(manifest)
    before = tree(itools_root)
    for command in ("install", "uninstall"):
        proc = rescue("hooks", command, "--root", str(itools_root))
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "hooks-installed.json" in proc.stderr
    assert tree(itools_root) == before


def test_uninstall_deletes_only_what_install_can_write(itools_root: Path) -> None:
    # A damaged manifest naming the generator's own configuration must not get it deleted.
    conf = itools_root / "etc/initramfs-tools/initramfs.conf"
    path = itools_root / "var/lib/rescue/hooks-installed.json"
    path.parent.mkdir(parents=True)
    path.write_text(
        json.dumps({"flavor": "initramfs-tools", "files": [{"path": str(conf.relative_to(itools_root))}]})
    )
    proc = rescue("hooks", "uninstall", "--root", str(itools_root))
    assert proc.returncode == 2 and "refusing path" in proc.stderr, proc.stderr
    assert conf.read_text() == "MODULES=most\n"


def test_install_never_writes_through_a_link(itools_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (itools_root / "etc/initramfs-tools/hooks").mkdir()
    (itools_root / "etc/initramfs-tools/hooks/rescue").symlink_to(outside)  # dangling
    proc = rescue("hooks", "install", "--root", str(itools_root))
    assert proc.returncode == 2 and "not installed by rescue" in proc.stderr, proc.stderr
    assert not outside.exists()


def test_an_install_stopped_midway_can_be_uninstalled(itools_root: Path) -> None:
    # A file where install needs a directory: the copy fails after the first files went in.
    (itools_root / "etc/initramfs-tools/rescue").write_text("someone else's\n")
    before = tree(itools_root)
    proc = rescue("hooks", "install", "--root", str(itools_root))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "installing stopped" in proc.stderr
    assert (itools_root / "etc/initramfs-tools/hooks/rescue").is_file()  # copied before the failure
    proc = rescue("hooks", "uninstall", "--root", str(itools_root))
    assert proc.returncode == 0, proc.stderr
    assert tree(itools_root) == before


def test_render_never_writes_through_a_link(tmp_path: Path) -> None:
    # --out in a shared place (/tmp): links planted there must not redirect the writes.
    out, elsewhere, victim = tmp_path / "out", tmp_path / "elsewhere", tmp_path / "victim"
    (out / "scripts/panic").mkdir(parents=True)
    elsewhere.mkdir()
    victim.write_text("keep me\n")
    (out / "hooks").symlink_to(elsewhere)
    (out / "scripts/panic/rescue").symlink_to(victim)
    proc = rescue("hooks", "render", "--out", str(out))
    assert proc.returncode == 2 and "is a link; refusing" in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1
    assert list(elsewhere.iterdir()) == []
    (out / "hooks").unlink()
    proc = rescue("hooks", "render", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert victim.read_text() == "keep me\n"  # the link was replaced by the file, not followed
    assert (out / "scripts/panic/rescue").is_file() and not (out / "scripts/panic/rescue").is_symlink()


def test_json_on_every_hooks_command_and_the_token_from_a_file(tmp_path: Path, itools_root: Path) -> None:
    (tmp_path / "token").write_text("fr0m-file\n")
    out = tmp_path / "out"
    proc = rescue("hooks", "render", "--out", str(out), "--token-file", str(tmp_path / "token"), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["flavor"] == "initramfs-tools" and str(out / "rescue/collector/collect.sh") in doc["files"]
    assert "RESCUE_TOKEN=fr0m-file" in (out / "rescue/rescue.conf").read_text().splitlines()
    assert "fr0m-file" not in proc.stdout + proc.stderr

    proc = rescue("hooks", "install", "--root", str(itools_root), "--host", "h", "--json")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 0 and doc["updated"] == []
    assert str(itools_root / "etc/initramfs-tools/hooks/rescue") in doc["installed"]
    proc = rescue("hooks", "uninstall", "--root", str(itools_root), "--json")
    assert proc.returncode == 0 and set(json.loads(proc.stdout)["removed"]) == set(doc["installed"])
    proc = rescue("hooks", "uninstall", "--root", str(itools_root), "--json")  # nothing left to remove
    assert proc.returncode == 2 and "not installed" in json.loads(proc.stdout)["error"]

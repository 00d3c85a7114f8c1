"""Every shell file of hooks/, scripts/ and rescue/ (the guest scripts) is clean under `shellcheck -s sh`
(POSIX: it runs under busybox ash in the initramfs) and at least parses under busybox ash itself."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require

REPO = Path(__file__).resolve().parent.parent.parent


def shell_files() -> list[Path]:
    files = []
    for top in ("hooks", "scripts", "rescue"):
        for path in sorted((REPO / top).rglob("*")):
            if not path.is_file() or path.suffix in (".py", ".pyc"):
                continue
            head = path.read_bytes()[:64]
            if path.suffix == ".sh" or head.startswith(b"#!/bin/sh"):
                files.append(path)
    return files


def test_there_are_shell_files() -> None:
    names = {p.relative_to(REPO).as_posix() for p in shell_files()}
    assert {"hooks/collector/collect.sh", "hooks/collector/net.sh"} <= names
    assert "hooks/initramfs-tools/scripts/panic/rescue" in names
    assert "hooks/dracut/90rescue-send/module-setup.sh" in names
    assert "rescue/harness/guest/test-init.sh" in names


@pytest.mark.parametrize("path", shell_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_shellcheck_posix(path: Path) -> None:
    require(shutil.which("shellcheck") is not None, "shellcheck is not installed")
    # -x: follow what a script sources (collect.sh sources net.sh)
    proc = subprocess.run(["shellcheck", "-x", "-s", "sh", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("path", shell_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_parses_under_busybox_ash(busybox: str, path: Path) -> None:
    proc = subprocess.run([busybox, "ash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr

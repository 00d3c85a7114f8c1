"""Broken variants of a generator's image (rescue.harness.variants): the module is gone, the image's own
modules.dep no longer names it (as when the generator left it out), and everything else is byte for byte
what the generator wrote, hard links included (busybox's applets are hard links in a mkinitramfs image)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rescue.harness.matrix import IMAGES, Matrix
from rescue.harness.variants import without_modules
from rescue.image.initrd import module_dirs, read_initrd
from tests.vm.test_matrix import need

pytestmark = [pytest.mark.vm, pytest.mark.image]


def _files(path: Path) -> dict[str, bytes]:
    image = read_initrd(path)
    return {n: image.read(n) for n in image.names() if image.is_file(n)}


@pytest.mark.parametrize("name", ["initramfs-tools-sid", "dracut-host"])
def test_variant_lacks_the_module_and_only_what_depmod_rewrites_changed(matrix: Matrix, name: str) -> None:
    kind = next(i for i in IMAGES if i.name == name)
    need(kind)
    base = matrix.base_image(kind)
    out = without_modules(base, matrix.workdir / f"{name}-variant.img", ["xfs"])
    before, after = _files(base), _files(out)
    gone = {n for n in before if n not in after}
    assert [Path(n).name.split(".ko")[0] for n in gone] == ["xfs"], gone
    changed = {n for n in after if before.get(n) != after[n]}
    assert changed and all(Path(n).name.startswith("modules.") for n in changed), changed
    moddir = next(iter(module_dirs(read_initrd(out)).values()))
    dep = after[f"{moddir}/modules.dep"].decode()
    assert "xfs.ko" not in dep and "xfs.ko" in before[f"{moddir}/modules.dep"].decode()
    # Hard-linked members keep their data (the reader above sees each link's own record only): unpacked by
    # a real cpio, no file that had bytes is empty now.
    assert _empty_files(base, matrix.workdir / f"{name}-before") == _empty_files(
        out, matrix.workdir / f"{name}-after"
    )


def _empty_files(image: Path, target: Path) -> set[str]:
    subprocess.run(["unmkinitramfs", image, target], check=True, capture_output=True)
    return {str(p.relative_to(target)) for p in target.rglob("*") if p.is_file() and p.stat().st_size == 0}

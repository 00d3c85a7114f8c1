"""rescue analyze on real boots: serial console logs recorded under qemu, and captures the listener stored.

tests/data/analyze/*.console.log come from tests/data/analyze/record.py (this host's Debian cloud kernel,
real mkinitramfs images, real btrfs disks). Captures under tests/captures/ are picked up as they are
added: a capture directory's expected root cause is the first line of its EXPECTED file if it has one,
else the finding id its name starts with ("btrfs-crc32c-missing-dracut/"), and names starting with
"normal" or "ok" must raise no error.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rescue.diagnose.analyze import analyze_path
from rescue.diagnose.rules import RULE_IDS
from tests.data import ANALYZE as RECORDED
from tests.data import kernel_of

REPO = Path(__file__).resolve().parents[2]
CAPTURES = REPO / "tests" / "captures"

# log -> (root cause, consequences)
EXPECTED: dict[str, tuple[str | None, set[str]]] = {
    "btrfs-crc32c-missing.console.log": (
        "btrfs-crc32c-missing",
        {"root-mount-failed", "module-unknown-symbol"},
    ),
    "btrfs-xxhash-csum.console.log": ("btrfs-csum-unsupported", {"root-mount-failed"}),
    "root-device-missing.console.log": ("root-device-missing", set()),
    # dracut 059 with systemd: the btrfs device never becomes ready, so systemd times out waiting for it.
    "dracut-btrfs-crc32c-missing.console.log": ("btrfs-crc32c-missing", {"root-device-missing"}),
    # rootfstype=nilfs2, a driver the image lacks: systemd's console says only that sysroot.mount failed.
    "dracut-unknown-fstype.console.log": ("root-mount-failed", set()),
    "initramfs-truncated.console.log": ("initramfs-unpack-failed", set()),
    "normal-btrfs-boot.console.log": (None, set()),
    # The root mounted, but it has no /dev, /run, /sys or /proc: init-bottom's mount moves fail and init dies.
    # No module or device is missing; the boot still failed, and the report says so with those lines.
    "btrfs-root-without-dev-dirs.console.log": ("boot-failed-unexplained", set()),
    # A hand-built busybox initramfs: insmod by hand, then `dmesg -r` (raw <N> levels) as the collector does.
    "busybox-insmod-btrfs.console.log": ("btrfs-crc32c-missing", set()),
    "busybox-insmod-btrfs.dmesg-r.txt": ("btrfs-crc32c-missing", set()),
}
# Logs with several root causes: log -> [(finding id, module, the id it was caused by)] in report order.
SEVERAL: dict[str, list[tuple[str, str, str | None]]] = {
    # Real modules edited where the kernel checks them (record.py): xor's CRC for ktime_get, libcrc32c's
    # vermagic. Each failure is its own root cause; xor's unknown symbol follows from its own mismatch.
    "busybox-insmod-version-mismatch.console.log": [
        ("module-version-mismatch", "libcrc32c", None),
        ("module-version-mismatch", "xor", None),
        ("module-unknown-symbol", "xor", "module-version-mismatch"),
    ],
    "busybox-insmod-version-mismatch.dmesg-r.txt": [
        ("module-version-mismatch", "xor", None),
        ("module-unknown-symbol", "xor", "module-version-mismatch"),
        ("module-version-mismatch", "libcrc32c", None),
    ],
}


def test_every_recorded_log_has_an_expectation() -> None:
    logs = {p.name for p in RECORDED.iterdir() if p.suffix in (".log", ".txt")}
    assert logs == set(EXPECTED) | set(SEVERAL)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_boot(name: str) -> None:
    root, consequences = EXPECTED[name]
    report = analyze_path(RECORDED / name)
    kver = kernel_of(RECORDED / name)
    assert report.kernel == kver
    if root is None:
        assert report.findings == [], report.render()
        return
    # Nothing tells the generator when the kernel failed before /init, or when /init was made by hand.
    generator: str | None = "dracut" if name.startswith("dracut") else "initramfs-tools"
    if root == "initramfs-unpack-failed" or name.startswith("busybox"):
        generator = None
    assert report.generator == generator
    roots = report.root_causes
    assert [f.id for f in roots] == [root], report.render()
    assert report.findings[0].id == root
    assert {f.id for f in report.findings[1:]} == consequences
    assert all(f.caused_by == root for f in report.findings[1:])
    assert report.has_errors
    assert kver in roots[0].fix[generator or "dracut"]


def test_recorded_crc32c_failure_names_the_module_to_add() -> None:
    log = RECORDED / "btrfs-crc32c-missing.console.log"
    report = analyze_path(log)
    fix = report.findings[0].fix["initramfs-tools"].splitlines()
    assert fix == [
        "echo libcrc32c >> /etc/initramfs-tools/modules",
        f"update-initramfs -u -k {kernel_of(log)}",
    ]
    texts = [e.text for e in report.findings[0].evidence]
    assert any(t.endswith("btrfs: Unknown symbol crc32c (err -2)") for t in texts)
    assert report.headline().startswith("error: btrfs cannot load: crc32c (libcrc32c) is missing")


@pytest.mark.parametrize("name", sorted(SEVERAL))
def test_recorded_boot_with_several_causes(name: str) -> None:
    report = analyze_path(RECORDED / name)
    got = [(f.id, f.params["module"][0], f.caused_by) for f in report.findings]
    assert got == SEVERAL[name], report.render()
    # A consequence is placed right after its own cause (xor's unknown symbol after xor's mismatch).
    for i, f in enumerate(report.findings):
        if f.cause is not None:
            assert report.findings[i - 1] is f.cause
    assert any("version magic" in e.text for f in report.findings for e in f.evidence)


def test_recorded_raw_dmesg_keeps_levels_in_evidence() -> None:
    log = RECORDED / "busybox-insmod-btrfs.dmesg-r.txt"
    report = analyze_path(log)
    first = report.findings[0].evidence[0]
    assert first.text.startswith("<4>[") and first.text.endswith("btrfs: Unknown symbol crc32c (err -2)")
    assert report.kernel == kernel_of(log)
    console = analyze_path(RECORDED / "busybox-insmod-btrfs.console.log").findings[0]
    assert any("insmod: can't insert '/lib/modules/btrfs.ko'" in e.text for e in console.evidence)


def test_recorded_systemd_root_mount_failure_knows_the_fs_type() -> None:
    report = analyze_path(RECORDED / "dracut-unknown-fstype.console.log")
    assert report.findings[0].params["fs"] == ["nilfs2"]  # from rootfstype= on the kernel command line


def test_recorded_xxhash_failure_names_the_csum_module() -> None:
    report = analyze_path(RECORDED / "btrfs-xxhash-csum.console.log")
    assert report.findings[0].params["csum"] == ["xxhash64"]
    assert "echo xxhash_generic >> /etc/initramfs-tools/modules" in report.findings[0].fix["initramfs-tools"]


def _capture_dirs() -> list[Path]:
    if not CAPTURES.is_dir():
        return []
    return sorted(p.parent for p in CAPTURES.rglob("*") if p.name in ("manifest.json", "EXPECTED"))


def _expected(capture: Path) -> str | None:
    expected = capture / "EXPECTED"
    if expected.is_file():
        first = expected.read_text().split()
        return None if not first or first[0] in ("none", "ok") else first[0]
    name = capture.name if capture.name not in ("", ".") else capture.parent.name
    for path_part in (capture.name, capture.parent.name):
        for rule_id in sorted(RULE_IDS, key=len, reverse=True):
            if path_part.startswith(rule_id):
                return rule_id
    if name.startswith(("normal", "ok")):
        return None
    pytest.fail(f"{capture}: no EXPECTED file and no finding id in its name: say what it must find")


@pytest.mark.parametrize("capture", _capture_dirs(), ids=lambda p: str(p.relative_to(CAPTURES)))
def test_recorded_capture(capture: Path) -> None:
    want = _expected(capture)
    report = analyze_path(capture)
    if want is None:
        assert not report.has_errors, report.render()
    else:
        assert [f.id for f in report.root_causes][:1] == [want], report.render()

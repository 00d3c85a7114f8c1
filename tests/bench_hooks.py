"""Benchmarks for the hooks (run by `make bench`; prints, asserts nothing about speed):

- what the hooks add to an initramfs-tools image that already has busybox (goal: <= 100 KB);
- how long the collector takes for collect + module check on a real module tree (busybox ash).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from rescue.harness.imagebuild import build_initramfs_tools_image
from tests.collector_root import build, run_collector
from tests.host_kernel import KVER

BUSYBOX = "/bin/busybox"


def _files(image: Path, dest: Path) -> dict[str, int]:
    subprocess.run(["unmkinitramfs", str(image), str(dest)], check=True, capture_output=True)
    sizes = {}
    for dirpath, _dirs, names in os.walk(dest):
        for name in names:
            p = Path(dirpath) / name
            if not p.is_symlink():
                sizes[str(p.relative_to(dest))] = p.stat().st_size
    return sizes


def image_size() -> None:
    with tempfile.TemporaryDirectory(prefix="rescue-bench-") as tmp:
        t = Path(tmp)
        # One build at a time: the machine is shared.
        start = time.monotonic()
        plain = build_initramfs_tools_image(t / "plain.img", KVER, host="10.0.2.2", port=3333, hooks=False)
        mid = time.monotonic()
        hooked = build_initramfs_tools_image(t / "hooked.img", KVER, host="10.0.2.2", port=3333)
        end = time.monotonic()
        a, b = _files(plain, t / "a"), _files(hooked, t / "b")
        added = {k: v for k, v in b.items() if k not in a or a[k] != v}
        print(f"mkinitramfs MODULES=most: {mid - start:.1f}s without hooks, {end - mid:.1f}s with")
        print(f"image (compressed): {plain.stat().st_size} -> {hooked.stat().st_size} bytes "
              f"({hooked.stat().st_size - plain.stat().st_size:+d})")  # fmt: skip
        total = sum(added.values())
        print(f"files the hooks add or change (uncompressed): {total} bytes, goal <= 102400")
        for name, size in sorted(added.items(), key=lambda kv: -kv[1]):
            print(f"  {size:>9}  {name}")


def collector_time(runs: int = 5) -> None:
    with tempfile.TemporaryDirectory(prefix="rescue-bench-") as tmp:
        times = []
        for i in range(runs):
            fake = build(Path(tmp) / str(i), drop=["libcrc32c"])
            start = time.monotonic()
            run_collector(BUSYBOX, fake, "bench")
            times.append(time.monotonic() - start)
        times.sort()
        median = times[len(times) // 2]
        print(f"collector (collect + modcheck, no network), {runs} runs: median {median:.2f}s, "
              f"min {times[0]:.2f}s, max {times[-1]:.2f}s")  # fmt: skip


def main() -> None:
    collector_time()
    image_size()


if __name__ == "__main__":
    main()

"""Benchmarks for check-image and analyze (printed, never asserted): python -m tests.bench_analysis

- check-image on this host's mkinitramfs image (zstd, ~15-20 MB) against lsinitramfs on the same image,
  in the same run: best of 5 wall-clock times each, as a command and (for check-image) in-process.
- analyze on a 100,000-line dmesg made of a recorded real boot and its failure lines; goal <= 1 s.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rescue.diagnose.analyze import analyze_path
from rescue.image.check import check_image
from rescue.run import run
from tests.host_kernel import KVER

IMAGE = Path(f"/boot/initrd.img-{KVER}")
RECORDED = Path(__file__).resolve().parent / "data" / "analyze"


def best(fn: Callable[[], object], rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_check_image(image: Path = IMAGE) -> dict[str, float] | None:
    if not image.is_file() or shutil.which("lsinitramfs") is None:
        print(f"check-image: skipped ({image} or lsinitramfs missing)")
        return None
    size = image.stat().st_size / 2**20
    results = {
        "lsinitramfs": best(lambda: run(["lsinitramfs", image])),
        "check-image command": best(
            lambda: run(
                [sys.executable, "-m", "rescue", "check-image", image, "--require", "btrfs"], check=False
            )
        ),
        "check-image in-process": best(lambda: check_image(image, require=["btrfs"])),
    }
    ref = results["lsinitramfs"]
    print(f"check-image on {image} ({size:.1f} MiB), best of 5:")
    for name, secs in results.items():
        verdict = "" if name == "lsinitramfs" else f"  ({ref / secs:.2f}x lsinitramfs)"
        print(f"  {name:24s} {secs:6.3f} s{verdict}")
    return results


def bench_analyze(lines: int = 100_000) -> float:
    base = (RECORDED / "btrfs-crc32c-missing.console.log").read_text().splitlines()
    body = (base * (lines // len(base) + 1))[:lines]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dmesg.txt"
        path.write_text("\n".join(body) + "\n")
        secs = best(lambda: analyze_path(path), rounds=3)
        report = analyze_path(path)
    verdict = "ok" if secs <= 1.0 else "SLOWER THAN THE 1 s GOAL"
    print(f"analyze of a {lines:,}-line log: {secs:.3f} s ({verdict}); headline: {report.headline()}")
    return secs


def main() -> int:
    bench_check_image()
    bench_analyze()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

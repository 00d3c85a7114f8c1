"""Benchmarks for check-image and analyze (printed, never asserted): python -m tests.bench_analysis

- check-image on this host's mkinitramfs image (zstd, ~15-20 MB) against lsinitramfs on the same image,
  in the same run: best of 5 wall-clock times each, as a command and (for check-image) in-process.
- analyze on a 100,000-line dmesg made of a recorded real boot and its failure lines, with the whole
  taxonomy; goal <= 0.3 s.
- analyze of a typical capture (the listener's recorded captures under tests/captures), in-process, as the
  listener runs it on every capture that arrives; goal <= 5 ms.
Wall-clock best of N, and the process CPU time of that run: on a machine shared with other work the CPU
time says what the analysis itself costs.
"""

from __future__ import annotations

import os
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
CAPTURES = Path(__file__).resolve().parent / "captures"
LOG_GOAL = 0.3  # s, a 100,000-line log
CAPTURE_GOAL = 0.005  # s, one capture in-process


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


def best_of(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    """(wall, cpu) seconds of the fastest of rounds runs."""
    runs = []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    return min(runs)


def _verdict(secs: float, goal: float) -> str:
    if secs <= goal:
        return f"ok, goal <= {goal * 1000:g} ms"
    return f"MISSED the {goal * 1000:g} ms goal by {(secs - goal) * 1000:.0f} ms"


def bench_analyze(lines: int = 100_000) -> float:
    base = (RECORDED / "btrfs-crc32c-missing.console.log").read_text().splitlines()
    body = (base * (lines // len(base) + 1))[:lines]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dmesg.txt"
        path.write_text("\n".join(body) + "\n")
        analyze_path(path)  # warm: the rules' patterns are compiled at import, caches filled
        wall, cpu = best_of(lambda: analyze_path(path), rounds=5)
        report = analyze_path(path)
    print(
        f"analyze of a {lines:,}-line log: {wall:.3f} s wall, {cpu:.3f} s CPU ({_verdict(wall, LOG_GOAL)}); "
        f"headline: {report.headline()}"
    )
    return wall


def bench_capture() -> float | None:
    captures = sorted(d for d in CAPTURES.iterdir() if d.is_dir()) if CAPTURES.is_dir() else []
    if not captures:
        print("analyze of a capture: skipped (no recorded captures)")
        return None
    times = {}
    for d in captures:
        analyze_path(d)
        times[d.name] = best_of(lambda d=d: analyze_path(d), rounds=20)
    worst = max(times, key=lambda n: times[n][0])
    wall, cpu = times[worst]
    print(
        f"analyze of a capture in-process (slowest of {len(captures)} recorded, {worst}): "
        f"{wall * 1000:.2f} ms wall, {cpu * 1000:.2f} ms CPU ({_verdict(wall, CAPTURE_GOAL)})"
    )
    return wall


def main() -> int:
    load, cores = os.getloadavg()[0], os.cpu_count()
    print(f"(load average {load:.1f} on {cores} cores: wall-clock times stretch with it, CPU times less)")
    bench_check_image()
    bench_analyze()
    bench_capture()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

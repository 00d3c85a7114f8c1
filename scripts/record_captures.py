"""Record real captures into tests/captures/ by running scenarios 1, 2, 4 and 5 under qemu.

    .venv/bin/python scripts/record_captures.py [--only NAME]...

Each capture directory (the received files and the listener's manifest.json) is copied as it was stored.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rescue.harness.listener_process import ListenerProcess  # noqa: E402
from rescue.harness.scenarios import BootResult, Harness  # noqa: E402

OUT = REPO / "tests" / "captures"


# Capture name -> (scenario, the root cause the analysis must find: written to its EXPECTED file).
Scenario = tuple[Callable[[int], BootResult], str]


def scenarios(h: Harness) -> dict[str, Scenario]:
    found: dict[str, Scenario] = {
        "manual-dmesg": (h.manual_recipe, "none"),
        "btrfs-crc32c-missing": (h.broken_btrfs, "btrfs-crc32c-missing"),
        "root-device-missing": (h.missing_root, "root-device-missing"),
        "mkinitramfs-btrfs-crc32c-missing": (h.mkinitramfs_broken_btrfs, "btrfs-crc32c-missing"),
        "mkinitramfs-root-device-missing": (h.mkinitramfs_missing_root, "root-device-missing"),
    }
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], help="record only this capture (repeatable)")
    parser.add_argument("--collector", type=Path, help="another collector directory than hooks/collector")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rescue-record-") as tmp:
        harness = Harness(Path(tmp) / "work", collector_dir=args.collector)
        with ListenerProcess(Path(tmp) / "captures") as listener:
            for name, (run, expected) in scenarios(harness).items():
                if args.only and name not in args.only:
                    continue
                result = run(listener.port)
                event = listener.wait_for("capture", 60)
                target = OUT / name
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(event["path"], target)
                (target / "EXPECTED").write_text(f"{expected}\n")
                size = sum(p.stat().st_size for p in target.iterdir())
                print(f"{name}: {event['status']} {size} bytes, findings {event.get('findings')}, "
                      f"boot {result.seconds:.1f}s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`make bench`: every benchmark, printed as measured in this run. Speed goals live here, not in tests."""

from __future__ import annotations

import importlib
import sys

# Each module has main() -> list of (name, measured, goal, met) rows, or prints its own.
BENCH_MODULES = [
    "tests.bench_listener",
    "tests.bench_burst",
    "tests.bench_analysis",
    "tests.bench_hooks",
    "tests.bench_watchdog",
    "tests.bench_vm",
    "tests.bench_netconsole",
]


def main() -> int:
    failed = False
    for name in BENCH_MODULES:
        print(f"== {name}", flush=True)
        try:
            importlib.import_module(name).main()
        except Exception as e:  # one broken benchmark must not hide the others
            print(f"   {name} failed: {e}", flush=True)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

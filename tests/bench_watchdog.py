"""What the watchdog costs a good boot (printed, never asserted; goal <= 50 ms, nothing on the network).

    .venv/bin/python -m tests.bench_watchdog

A real mkinitramfs image with the hooks boots a good btrfs root under qemu (TCG) with `break=bottom`: the
root is mounted and init-bottom has not run yet, so the watchdog is still asleep. At that prompt:
- the CPU time the watchdog has used so far (its shell and its sleep, /proc/PID/schedstat, in ns),
- the wall time of a whole start and stop as a boot runs them (scripts/init-premount/rescue, then, once the
  watchdog sleeps, scripts/init-bottom/rescue), repeated at the prompt and timed with /proc/uptime (which
  counts in 10 ms: hence the repeats); this includes the background shell's own work,
- the NIC's transmitted packets (nothing: the watchdog never touched the network).
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import replace
from pathlib import Path

from rescue.harness.qemu import boot, kernel_cmdline
from rescue.harness.scenarios import Harness

GOAL_MS = 50.0
CYCLES = 10
# busybox date has no %N: /proc/uptime around CYCLES start-and-stop cycles.
_CYCLES = (
    "read a _ </proc/uptime; i=0; while [ $i -lt {n} ]; do rm -f /run/rescue/watchdog.stopped; "
    "/scripts/init-premount/rescue; "
    "while [ ! -e /run/rescue/watchdog.pid ]; do usleep 1000; done; /scripts/init-bottom/rescue; "
    "i=$((i+1)); done; read b _ </proc/uptime; echo $a $b"
)


def measure(h: Harness) -> dict[str, float]:
    img = h.generator_image("initramfs-tools", drop=())
    spec = replace(
        h.spec(img, disks=[h.btrfs_root()], kernel=h.generator_kernel()[1]),
        cmdline=kernel_cmdline("root=/dev/vda", "rootfstype=btrfs", "break=bottom", panic=False),
    )
    with boot(spec, log_path=h.workdir / "bench-watchdog.console.log") as console:
        console.setup_shell(r"\(initramfs\) ", 180)
        pids = console.run_check("cat /run/rescue/watchdog.pid").split()
        cpu_ns = 0
        for pid in pids:
            out = console.run_check(f"cat /proc/{pid}/schedstat")
            cpu_ns += int(out.split()[0])
        tx = console.run_check("cat /sys/class/net/*/statistics/tx_packets | grep -v '^0$' | wc -l").strip()
        console.run_check("/scripts/init-bottom/rescue")  # the boot's own watchdog
        a, b = (float(x) for x in console.run_check(_CYCLES.format(n=CYCLES), 120).split())
    return {
        "watchdog CPU while the boot ran (ms)": cpu_ns / 1e6,
        "start + stop, wall, per cycle (ms)": (b - a) * 1000 / CYCLES,
        "interfaces that sent packets": float(re.sub(r"\D", "", tx) or 0),
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="rescue-bench-") as tmp:
        h = Harness(Path(tmp) / "work")
        found = measure(h)
    for name, value in found.items():
        print(f"  {name:<50} {value:8.1f}")
    # The cycle's wall time already holds the background shell's work; the boot's CPU figure says how much
    # of it the real boot paid. The larger of the two is the cost.
    cost = max(found["start + stop, wall, per cycle (ms)"], found["watchdog CPU while the boot ran (ms)"])
    print(f"  {'watchdog cost on a good boot, TCG (ms)':<50} {cost:8.1f}   goal <= {GOAL_MS:.0f}")


if __name__ == "__main__":
    main()

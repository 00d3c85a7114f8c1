"""`make demo`: a listener, a VM whose btrfs root will not mount (libcrc32c left out), and the diagnosis.

Runs a real Debian kernel under qemu (TCG). The first run downloads the kernel package into the cache
(./.cache/rescue, or $RESCUE_CACHE). The last line printed names the finding.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rescue.errors import RescueError  # noqa: E402
from rescue.harness.kernel import host_kernel  # noqa: E402
from rescue.harness.listener_process import ListenerProcess  # noqa: E402
from rescue.harness.scenarios import Harness  # noqa: E402

WANTED = "btrfs-crc32c-missing"


def show(event: dict[str, Any], analysis: dict[str, Any] | None) -> None:
    print(f"capture: {event['path']} ({event['status']}, {len(event['files'])} files)")
    if event.get("headline"):
        print(f"diagnosis: {event['headline']}")
    for finding in (analysis or {}).get("findings", []):
        print(f"  [{finding.get('severity')}] {finding.get('id')}: {finding.get('title')}")
        for ev in finding.get("evidence", [])[:3]:
            print(f"      {ev.get('file')}:{ev.get('line')}: {ev.get('text')}")
        fix = (finding.get("fix") or {}).get("initramfs-tools")
        if fix:
            print("      fix: " + "\n           ".join(fix.splitlines()))


def main() -> int:
    start = time.monotonic()
    kernel = host_kernel()
    print(f"demo: kernel {kernel.version} (the newest installed; RESCUE_KERNEL picks another)", flush=True)
    with tempfile.TemporaryDirectory(prefix="rescue-demo-") as tmp:
        harness = Harness(Path(tmp) / "work", kernel=kernel)
        with ListenerProcess(Path(tmp) / "captures") as listener:
            print(f"demo: rescue listen on 127.0.0.1:{listener.port} (the guest reaches it as 10.0.2.2)")
            print("demo: booting a btrfs-root VM whose initramfs lacks libcrc32c ...", flush=True)
            result = harness.broken_btrfs(listener.port)
            print(f"demo: guest said: {'; '.join(result.markers)}")
            event = listener.wait_for("capture", 30)
            manifest = json.loads((Path(event["path"]) / "manifest.json").read_text())
            show(event, manifest.get("analysis"))
            print(f"demo: boot to diagnosis {result.seconds:.1f}s, total {time.monotonic() - start:.1f}s")
            findings = event.get("findings") or []
            if WANTED not in findings:
                print(f"demo: expected finding {WANTED}, got {findings or 'none'}")
                return 1
            print(f"finding: {WANTED}")
            return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except RescueError as e:
        print(f"demo: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None

"""Record what a real kernel's netconsole sends (run by hand; the recording is committed).

    python -m tests.data.netconsole.record [OUT]

Boots the harness's kernel under qemu (TCG) with the netconsole test initramfs (rescue.netconsole=1: the
hooks' netconsole.sh arms dynamic netconsole through configfs, extended format) and a btrfs root whose init
writes one message longer than a datagram, then crashes the kernel with sysrq c. A plain UDP socket on the
host receives what qemu's user network forwards from the guest's 10.0.2.2, and every datagram is saved as
one JSON line: {"t": seconds since the first datagram, "data": base64 of the payload}, in arrival order.
"""

from __future__ import annotations

import base64
import json
import socket
import sys
import threading
import time
from pathlib import Path

from rescue.harness.scenarios import Harness

HERE = Path(__file__).resolve().parent


def record(out: Path, work: Path) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    port = sock.getsockname()[1]
    datagrams: list[tuple[float, bytes]] = []
    done = threading.Event()

    def receive() -> None:
        # Until qemu has exited and the socket's queue is empty.
        while True:
            try:
                datagrams.append((time.monotonic(), sock.recv(65536)))
            except TimeoutError:
                if done.is_set():
                    return

    thread = threading.Thread(target=receive)
    thread.start()
    try:
        result = Harness(work).netconsole_crash(port)
    finally:
        done.set()
        thread.join()
        sock.close()
    first = datagrams[0][0] if datagrams else 0.0
    with out.open("w") as f:
        for t, data in datagrams:
            line = {"t": round(t - first, 6), "data": base64.b64encode(data).decode()}
            f.write(json.dumps(line) + "\n")
    print(f"{len(datagrams)} datagrams -> {out} ({result.log_path})")
    return 0 if datagrams else 1


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "crash.jsonl"
    sys.exit(record(target, Path("/tmp/rescue-netconsole-record")))

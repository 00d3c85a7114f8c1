"""Which directory a capture goes to: DIR/<machine>/<UTC yyyymmddThhmmssZ>-<unique>/.

<machine> is the `machine=` value of the sender's RESCUE/1 header (chosen in the initramfs: the image's
machine-id, else the DMI product_uuid, else the MAC of the NIC used), so one machine's captures stay together
behind NAT and across DHCP addresses. Without a usable machine= it is the peer address, the layout of older
captures, which stays readable (both are two levels below DIR). The peer address always goes into the
manifest. The one place that names capture directories.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

_MACHINE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def machine_dir(header: Mapping[str, str] | None, peer: str) -> str:
    """The first path component for a capture: the sanitised machine= value, else the peer address."""
    machine = (header or {}).get("machine", "")
    if _MACHINE.fullmatch(machine) and machine not in (".", ".."):
        return machine
    return peer.replace("/", "_").replace("\x00", "_") or "unknown"


def capture_name(started: float, unique: str) -> str:
    """The second path component: the UTC time the arrival started, then something unique to it."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(started))}-{unique}"

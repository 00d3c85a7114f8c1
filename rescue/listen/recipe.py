"""The lines `rescue listen` prints for machines without the hooks: typed verbatim at a rescue shell.

Two shells are common at a failed boot: busybox ash (initramfs-tools' `(initramfs)` prompt, which has nc,
ip and klibc ipconfig) and, in dracut images built with bash, bash (no nc, but `/dev/tcp/HOST/PORT`, and no
DHCP client, so the address is set by hand). Neither may assume the NIC is eth0: udev names it ens3 or
enp1s0, so the first line finds it (the first interface with a device behind it, which leaves out lo and
virtual ones). Lines stay short enough to type; the token itself is never printed (TOKEN stands for it).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

# Only shell builtins, so it works in ash, bash and dash alike. "NIC: *" means no interface has a driver.
FIND_NIC = 'for d in /sys/class/net/*/device; do d=${d%/*}; i=${d##*/}; break; done; echo "NIC: $i"'

# /proc files report a size of 0, so tar would store them empty: copy them into files first.
_BUNDLE_FILES = "cmdline modules crypto filesystems partitions mounts"


@dataclass(frozen=True)
class Recipe:
    busybox: list[str]  # busybox ash: nc, ip, ipconfig (initramfs-tools, busybox-based images)
    bash: list[str]  # bash without nc: /dev/tcp, the address set by hand (dracut --add bash)
    notes: list[str]  # what the image needs when neither can work

    def lines(self, host: str) -> list[str]:
        """The whole text for people, one line per entry, commands indented by two spaces."""
        out = [f"On a busybox rescue shell (the '(initramfs)' prompt), type (host {host}):"]
        out += ["  " + c for c in self.busybox]
        out.append("No nc there, but bash (dracut built with --add bash)? Type instead:")
        out += ["  " + c for c in self.bash]
        return out + self.notes


def spare_address(host: str, prefixlen: int) -> str:
    """An address for the broken machine in the host's network, to set by hand: the last usable one
    (a guess the admin may have to change; routers and DHCP pools tend to start at the bottom)."""
    try:
        net = ipaddress.ip_interface(f"{host}/{prefixlen}").network
    except ValueError:
        return "ADDRESS/24"
    if net.version != 4 or net.prefixlen >= 31:
        return "ADDRESS/24"
    last = net.broadcast_address - 1
    if str(last) == host:
        last -= 1
    return f"{last}/{net.prefixlen}"


def recipe(host: str, port: int, *, token: bool = False, prefixlen: int = 24) -> Recipe:
    """The recipe for a listener reachable at host:port (the token, if any, shown as TOKEN)."""
    addr = spare_address(host, prefixlen)

    def header(name: str) -> str:
        return f'echo "RESCUE/1 token=TOKEN name={name}"; ' if token else ""

    to_nc = f"nc {host} {port}"
    dmesg_nc = f"{{ {header('dmesg.txt')}dmesg; }} | {to_nc}" if token else f"dmesg | {to_nc}"
    tar_nc = f"{{ {header('bundle')}tar -c -f - .; }} | {to_nc}" if token else f"tar -c -f - . | {to_nc}"
    busybox = [
        FIND_NIC,
        f"ip link set $i up; sleep 2; ipconfig -t 10 $i || ip addr add {addr} dev $i",
        dmesg_nc,
        "# more evidence at once (proc files, blkid) as one tar stream:",
        "mkdir -p /tmp/r && cd /tmp/r && dmesg > dmesg.txt && for f in "
        + _BUNDLE_FILES
        + "; do cat /proc/$f > $f.txt; done; blkid > blkid.txt; "
        + tar_nc,
    ]
    bash = [
        FIND_NIC,
        f"ip link set $i up; ip addr add {addr} dev $i",
        f"{{ {header('dmesg.txt')}dmesg; }} > /dev/tcp/{host}/{port}"
        if token
        else f"dmesg > /dev/tcp/{host}/{port}",
    ]
    notes = [
        f"  ({addr} is a guess: any free address of that network; from another network add"
        " 'ip route add default via GATEWAY')",
        "If it says 'NIC: *', no network driver is loaded: modprobe it (virtio_net, e1000e, ...); an image"
        " without the driver, or without a shell that can open a socket (busybox nc or bash; dash cannot),"
        " cannot send: rebuild it with them (dracut: --add bash --add-drivers DRIVER --install ip).",
        "Or install the hooks (rescue hooks install --update): then the machine sends by itself, no typing.",
    ]
    if token:
        notes.insert(0, "  (replace TOKEN with the listener's token)")
    return Recipe(busybox, bash, notes)


def announce(
    best: str, prefixlen: int, advertise: tuple[str, int] | None, port: int, *, token: bool
) -> tuple[str, Recipe]:
    """(the host the recipe names, the recipe): --advertise, when given, wins over our own best address."""
    host, plen = advertise or (best, prefixlen)
    return host, recipe(host, port, token=token, prefixlen=plen)

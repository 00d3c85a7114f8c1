"""hooks/collector/netconsole.sh under busybox-static's ash, against a fake root (RESCUE_PREFIX): when it
runs, what it says when the kernel or the image cannot, and the configfs target it writes. The attributes
land in a plain directory standing in for configfs (the kernel's own is armed in tests/vm/test_netconsole.py);
the route is the host's real `ip route get 127.0.0.1` (dev lo), the neighbour table a fixture."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import REPO

SCRIPT = REPO / "hooks" / "collector" / "netconsole.sh"
BOOT = "5c3b1f0e-8d7a-4f5e-9c2b-1a0d9e8f7c6b"


def fake_root(tmp_path: Path, cmdline: str, conf: str = "RESCUE_HOST=127.0.0.1\nRESCUE_PORT=4444\n") -> Path:
    root = tmp_path / "root"
    for d in ("proc/sys/kernel/random", "proc/net", "etc", "dev", "sys/class/net/lo", "config"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "proc/cmdline").write_text(cmdline + "\n")
    (root / "proc/uptime").write_text("12.34 10.00\n")
    (root / "proc/mounts").write_text("configfs /sys/kernel/config configfs rw 0 0\n")
    (root / "proc/sys/kernel/random/boot_id").write_text(BOOT + "\n")
    (root / "proc/sys/kernel/printk").write_text("4 4 1 7\n")
    (root / "proc/net/arp").write_text(
        "IP address       HW type     Flags       HW address            Mask     Device\n"
        "127.0.0.1        0x1         0x2         52:55:0a:00:02:02     *        lo\n"
    )
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "etc/rescue.conf").write_text(conf)
    (root / "dev/kmsg").write_text("")
    return root


def run(busybox: str, root: Path, netconsole_dir: bool = True) -> subprocess.CompletedProcess[str]:
    if netconsole_dir:
        (root / "config/netconsole").mkdir(exist_ok=True)
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "RESCUE_PREFIX": str(root),
        "RESCUE_CONFIGFS": str(root / "config"),
        "RESCUE_WORKDIR": str(root / "run/rescue"),
        "RESCUE_MODPROBE": "false",  # never load anything into this host's kernel
        "RESCUE_IP": "none",
    }
    return subprocess.run(
        [busybox, "sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=True
    )


def state(root: Path) -> str:
    return (root / "run/rescue/netconsole.txt").read_text()


def test_nothing_happens_unless_asked(busybox: str, tmp_path: Path) -> None:
    root = fake_root(tmp_path, "root=/dev/vda ro")
    assert run(busybox, root).stdout == ""
    assert (
        not (root / "run/rescue/netconsole.txt").exists() and not (root / "config/netconsole/rescue").exists()
    )
    # Baked in, but turned off on the command line.
    root = fake_root(
        tmp_path, "root=/dev/vda rescue.netconsole=0", conf="RESCUE_HOST=127.0.0.1\nRESCUE_NETCONSOLE=1\n"
    )
    assert run(busybox, root).stdout == "" and not (root / "run/rescue").exists()


def test_arms_the_target_in_configfs_raises_the_loglevel_and_names_the_boot(
    busybox: str, tmp_path: Path
) -> None:
    root = fake_root(
        tmp_path, "root=/dev/vda", conf="RESCUE_HOST=127.0.0.1\nRESCUE_PORT=4444\nRESCUE_NETCONSOLE=1\n"
    )
    out = run(busybox, root).stdout
    target = root / "config/netconsole/rescue"
    attrs = {name: (target / name).read_text().strip() for name in (
        "dev_name", "local_ip", "remote_ip", "remote_mac", "remote_port", "extended", "enabled")}  # fmt: skip
    assert attrs == {
        "dev_name": "lo",
        "local_ip": "127.0.0.1",
        "remote_ip": "127.0.0.1",
        "remote_mac": "52:55:0a:00:02:02",
        "remote_port": "4444",
        "extended": "1",
        "enabled": "1",
    }
    assert (root / "proc/sys/kernel/printk").read_text().strip() == "8"
    kmsg = (root / "dev/kmsg").read_text()
    assert kmsg == f"<5>rescue: boot={BOOT} machine=0123456789abcdef0123456789abcdef\n"  # <5>: the level
    assert (
        "rescue: netconsole: armed in " in out
        and "lo 127.0.0.1 -> 127.0.0.1:4444 via 52:55:0a:00:02:02" in out
    )
    assert "armed in" in state(root)
    # Once per boot: a second call (dracut runs the hook at settled and at pre-mount) does nothing.
    (target / "enabled").write_text("untouched\n")
    assert run(busybox, root).stdout == "" and (target / "enabled").read_text() == "untouched\n"


def test_says_so_when_the_module_or_configfs_is_missing(busybox: str, tmp_path: Path) -> None:
    root = fake_root(tmp_path, "rescue.netconsole=1")
    out = run(busybox, root, netconsole_dir=False).stdout
    line = "rescue: netconsole: unavailable: the netconsole module is not in this image"
    assert out.startswith(line) and state(root).startswith(line.removeprefix("rescue: netconsole: "))
    root = fake_root(tmp_path / "b", "rescue.netconsole=1")
    (root / "proc/mounts").write_text("proc /proc proc rw 0 0\n")
    out = run(busybox, root, netconsole_dir=False).stdout
    assert "unavailable: configfs is not mounted and cannot be" in out


def test_a_host_name_is_refused_with_a_reason(busybox: str, tmp_path: Path) -> None:
    root = fake_root(tmp_path, "rescue.netconsole=1 rescue.host=listener.example")
    out = run(busybox, root).stdout
    assert "not armed: rescue.host=listener.example is not an IPv4 address" in out
    assert not (root / "config/netconsole/rescue").exists()

from __future__ import annotations

import pytest

from rescue.errors import RescueError
from rescue.listen.config import parse_advertise
from rescue.listen.netinfo import host_addresses
from rescue.listen.recipe import FIND_NIC, announce, recipe, spare_address


def test_recipe_finds_the_nic_instead_of_naming_eth0() -> None:
    r = recipe("192.0.2.2", 3333, prefixlen=24)
    assert r.busybox[0] == FIND_NIC and r.bash[0] == FIND_NIC
    assert not any("eth0" in line for line in r.busybox + r.bash)
    assert (
        r.busybox[1] == "ip link set $i up; sleep 2; ipconfig -t 10 $i || ip addr add 192.0.2.254/24 dev $i"
    )
    assert r.busybox[2] == "dmesg | nc 192.0.2.2 3333"
    assert r.busybox[-1].endswith("tar -c -f - . | nc 192.0.2.2 3333")
    assert r.bash[1:] == [
        "ip link set $i up; ip addr add 192.0.2.254/24 dev $i",
        "dmesg > /dev/tcp/192.0.2.2/3333",
    ]
    assert not any("RESCUE/1" in line for line in r.busybox + r.bash)
    # Short enough to type (the optional all-at-once line aside).
    assert all(len(line) <= 100 for line in r.busybox[:3] + r.bash), r


def test_recipe_says_what_the_image_needs_and_that_the_hooks_make_it_moot() -> None:
    text = "\n".join(recipe("192.0.2.2", 3333).lines("192.0.2.2"))
    assert "NIC: *" in text and "--add bash --add-drivers" in text and "dash cannot" in text
    assert "rescue hooks install" in text


def test_recipe_with_a_token_never_shows_it() -> None:
    r = recipe("10.0.0.1", 4000, token=True, prefixlen=8)
    assert r.busybox[2] == '{ echo "RESCUE/1 token=TOKEN name=dmesg.txt"; dmesg; } | nc 10.0.0.1 4000'
    assert r.bash[2] == '{ echo "RESCUE/1 token=TOKEN name=dmesg.txt"; dmesg; } > /dev/tcp/10.0.0.1/4000'
    assert r.busybox[-1].endswith(
        '{ echo "RESCUE/1 token=TOKEN name=bundle"; tar -c -f - .; } | nc 10.0.0.1 4000'
    )
    assert "replace TOKEN" in "\n".join(r.notes)


@pytest.mark.parametrize(
    ("host", "prefix", "want"),
    [("10.0.2.2", 24, "10.0.2.254/24"), ("10.0.2.254", 24, "10.0.2.253/24"), ("10.1.2.3", 32, "ADDRESS/24"),
     ("fe80::1", 64, "ADDRESS/24"), ("not-an-address", 24, "ADDRESS/24")],
)  # fmt: skip
def test_spare_address(host: str, prefix: int, want: str) -> None:
    assert spare_address(host, prefix) == want


def test_advertise_values() -> None:
    assert parse_advertise("10.0.2.2") == ("10.0.2.2", 24)
    assert parse_advertise("203.0.113.7/28") == ("203.0.113.7", 28)
    for bad in ("10.0.2.2/33", "a b", "x/y"):
        with pytest.raises(RescueError, match="bad --advertise"):
            parse_advertise(bad)


def test_host_addresses_reads_this_host_through_netlink() -> None:
    found = host_addresses()
    assert found, "every host has at least loopback"
    assert not any(a.address.startswith("169.254.") for a in found)
    bound = host_addresses("127.0.0.1")
    assert [(a.address, a.prefixlen) for a in bound] == [("127.0.0.1", 8)]


def test_announce_prefers_the_advertised_address() -> None:
    host, r = announce("192.0.2.2", 24, ("10.0.2.2", 24), 3333, token=False)
    assert host == "10.0.2.2" and r.busybox[2] == "dmesg | nc 10.0.2.2 3333"
    host, r = announce("192.0.2.2", 24, None, 3333, token=False)
    assert host == "192.0.2.2" and r.bash[2] == "dmesg > /dev/tcp/192.0.2.2/3333"

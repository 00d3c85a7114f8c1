from __future__ import annotations

from rescue.listen.netinfo import host_addresses, shell_instructions


def test_instructions_without_a_token() -> None:
    lines = shell_instructions("192.0.2.2", 3333, prefixlen=24)
    assert "nc 192.0.2.2 3333 < /tmp/dmesg.txt" in lines
    assert any("ip addr add <a free address in 192.0.2.0/24> dev eth0" in line for line in lines)
    assert lines[-1].endswith("tar -c -f - . | nc 192.0.2.2 3333")
    assert not any("RESCUE/1" in line for line in lines)


def test_instructions_with_a_token_never_show_it() -> None:
    lines = shell_instructions("10.0.0.1", 4000, token=True, prefixlen=8)
    assert '{ echo "RESCUE/1 token=TOKEN name=dmesg.txt"; cat /tmp/dmesg.txt; } | nc 10.0.0.1 4000' in lines
    assert lines[-1].endswith(
        '{ echo "RESCUE/1 token=TOKEN name=bundle"; tar -c -f - .; } | nc 10.0.0.1 4000'
    )


def test_host_addresses_reads_this_host_through_netlink() -> None:
    found = host_addresses()
    assert found, "every host has at least loopback"
    assert not any(a.address.startswith("169.254.") for a in found)
    bound = host_addresses("127.0.0.1")
    assert [(a.address, a.prefixlen) for a in bound] == [("127.0.0.1", 8)]

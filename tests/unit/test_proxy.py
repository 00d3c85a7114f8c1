"""PROXY protocol headers (v1 text, v2 binary) as HAProxy writes them, and the ones to refuse."""

from __future__ import annotations

import struct

import pytest

from rescue.listen.proxy import V2_SIGNATURE, ProxyHeader, ProxyHeaderError, parse, v1_header, v2_header


def test_v1_tcp4_and_tcp6() -> None:
    head = v1_header("192.0.2.7", "198.51.100.1", 40000, 3333)
    assert parse(head + b"RESCUE/1 machine=x\n") == ProxyHeader(len(head), "192.0.2.7", 1)
    head6 = b"PROXY TCP6 2001:db8::5 2001:db8::1 40000 3333\r\n"
    assert parse(head6) == ProxyHeader(len(head6), "2001:db8::5", 1)


def test_v1_unknown_keeps_the_proxy_as_peer() -> None:
    assert parse(b"PROXY UNKNOWN\r\nrest") == ProxyHeader(15, None, 1)


@pytest.mark.parametrize("cut", [0, 1, 5, 6, 20])
def test_a_header_still_arriving_needs_more(cut: int) -> None:
    assert parse(v1_header("192.0.2.7", "198.51.100.1", 1, 2)[:cut]) is None
    assert parse(v2_header("192.0.2.7", "198.51.100.1", 1, 2)[:cut]) is None


def test_v2_inet_inet6_local_and_tlvs() -> None:
    head = v2_header("203.0.113.9", "198.51.100.1", 5555, 3333)
    assert parse(head + b"\x1f\x8b") == ProxyHeader(len(head), "203.0.113.9", 2)
    head6 = v2_header("2001:db8::9", "2001:db8::1", 5555, 3333)
    assert parse(head6) == ProxyHeader(len(head6), "2001:db8::9", 2)
    mapped = v2_header("::ffff:10.1.2.3", "::ffff:10.0.0.1", 5555, 3333)
    assert parse(mapped) == ProxyHeader(len(mapped), "10.1.2.3", 2)
    local = V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    assert parse(local) == ProxyHeader(16, None, 2)
    # A TLV after the addresses (HAProxy's unique-id, say) is skipped with them.
    tlv = b"\x05\x00\x03abc"
    body = bytes([203, 0, 113, 9, 198, 51, 100, 1]) + struct.pack("!HH", 1, 2) + tlv
    with_tlv = V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body
    assert parse(with_tlv + b"data") == ProxyHeader(len(with_tlv), "203.0.113.9", 2)


@pytest.mark.parametrize(
    "data",
    [
        b"RESCUE/1 machine=x\n",  # a sender that bypassed the proxy
        b"PROXY TCP4 300.1.1.1 1.1.1.1 1 2\r\n",
        b"PROXY TCP4 2001:db8::1 1.1.1.1 1 2\r\n",
        b"PROXY TCP4 1.1.1.1 1.1.1.1 1\r\n",
        b"PROXY TCP4 1.1.1.1 1.1.1.1 1 99999\r\n",
        b"PROXY " + b"x" * 120,
        V2_SIGNATURE + bytes([0x22, 0x11]) + struct.pack("!H", 12) + bytes(12),
        V2_SIGNATURE + bytes([0x21, 0x12]) + struct.pack("!H", 12) + bytes(12),  # datagram
        V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 60000),
    ],
)
def test_bad_headers_are_refused(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse(data)

"""The PROXY protocol (HAProxy's, versions 1 and 2): the real sender's address, told by a load balancer.

A load balancer in TCP mode (HAProxy `send-proxy` / `send-proxy-v2`) opens its own connection to the
listener and starts it with one header naming the peer it accepted. The listener reads that header only
when `--proxy-protocol` is on and the connection comes from a `--trusted-proxy` address: anyone else could
write such a header to pass for another machine.

v1: `PROXY TCP4|TCP6|UNKNOWN SRC DST SPORT DPORT\\r\\n`, at most 107 bytes.
v2: a 12-byte signature, version/command, family/protocol, a 16-bit length, the addresses, TLVs (ignored).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX = 107
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16
V2_MAX_BODY = 4096  # what HAProxy sends is well below; more is not a proxy talking
_V2_CMD_LOCAL, _V2_CMD_PROXY = 0x20, 0x21
_V2_INET, _V2_INET6 = 0x1, 0x2
_V2_STREAM = 0x1


class ProxyHeaderError(ValueError):
    """The connection came from a trusted proxy but does not start with a usable PROXY header."""


@dataclass(frozen=True)
class ProxyHeader:
    length: int  # bytes of the header, to drop from the stream
    source: str | None  # the real peer; None for the proxy's own connections (v2 LOCAL, v1 UNKNOWN)
    version: int


def parse(data: bytes) -> ProxyHeader | None:
    """The PROXY header at the start of data; None while more bytes are needed; ProxyHeaderError if bad."""
    if V2_SIGNATURE.startswith(data[: len(V2_SIGNATURE)]) and data[:1] == V2_SIGNATURE[:1]:
        return _parse_v2(data)
    if V1_PREFIX.startswith(data[: len(V1_PREFIX)]):
        return _parse_v1(data)
    raise ProxyHeaderError("no PROXY protocol header from a --trusted-proxy address")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError("PROXY v1 header longer than 107 bytes")
        return None
    words = data[:end].decode("ascii", errors="replace").split(" ")
    if len(words) >= 2 and words[1] == "UNKNOWN":
        return ProxyHeader(end + 2, None, 1)
    if len(words) != 6 or words[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"bad PROXY v1 header {data[:end][:60]!r}")
    try:
        source = ipaddress.ip_address(words[2])
        ipaddress.ip_address(words[3])
        ports = [int(p) for p in words[4:6]]
    except ValueError:
        raise ProxyHeaderError(f"bad PROXY v1 header {data[:end][:60]!r}") from None
    if source.version != (4 if words[1] == "TCP4" else 6) or not all(0 <= p <= 65535 for p in ports):
        raise ProxyHeaderError(f"bad PROXY v1 header {data[:end][:60]!r}")
    return ProxyHeader(end + 2, str(source), 1)


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < V2_FIXED:
        return None
    if data[:12] != V2_SIGNATURE:
        raise ProxyHeaderError("bad PROXY v2 signature")
    cmd, fam, length = data[12], data[13], struct.unpack("!H", data[14:16])[0]
    if length > V2_MAX_BODY:
        raise ProxyHeaderError(f"PROXY v2 header of {length} bytes")
    if len(data) < V2_FIXED + length:
        return None
    total = V2_FIXED + length
    if cmd == _V2_CMD_LOCAL:
        return ProxyHeader(total, None, 2)
    if cmd != _V2_CMD_PROXY:
        raise ProxyHeaderError(f"PROXY v2: unknown version/command 0x{cmd:02x}")
    family, proto = fam >> 4, fam & 0xF
    body = data[V2_FIXED:total]
    if proto != _V2_STREAM and family in (_V2_INET, _V2_INET6):
        raise ProxyHeaderError("PROXY v2: not a stream connection")
    if family == _V2_INET and length >= 12:
        return ProxyHeader(total, str(ipaddress.IPv4Address(body[:4])), 2)
    if family == _V2_INET6 and length >= 36:
        ip = ipaddress.IPv6Address(body[:16])
        return ProxyHeader(total, str(ip.ipv4_mapped or ip), 2)
    return ProxyHeader(total, None, 2)  # AF_UNSPEC or AF_UNIX: no address to keep


def v1_header(source: str, dest: str, sport: int, dport: int) -> bytes:
    """A v1 header, as a proxy writes it (for tests and tools)."""
    family = "TCP6" if ":" in source else "TCP4"
    return f"PROXY {family} {source} {dest} {sport} {dport}\r\n".encode()


def v2_header(source: str, dest: str, sport: int, dport: int) -> bytes:
    """A v2 PROXY header for a TCP connection (for tests and tools)."""
    src, dst = ipaddress.ip_address(source), ipaddress.ip_address(dest)
    family = _V2_INET if src.version == 4 else _V2_INET6
    body = src.packed + dst.packed + struct.pack("!HH", sport, dport)
    return (
        V2_SIGNATURE + bytes([_V2_CMD_PROXY, family << 4 | _V2_STREAM]) + struct.pack("!H", len(body)) + body
    )

"""netconsole's wire format, pure: one datagram -> a kernel message, a fragment of one, or plain console text.

Extended netconsole (`+` on the command line, `extended=1` in configfs) sends each kernel message as
`<level>,<seq>,<timestamp usec>,<flags>[,caller=...];<text>\\n[ KEY=VALUE\\n]...`, non-printable bytes of the
text escaped as `\\xNN` (drivers/net/netconsole.c, kernel/printk). A message over 1000 bytes is split, each
piece carrying `,ncfrag=<offset>/<total>` at the end of its header; the pieces of one message share its
sequence number. With `release` set the header starts with the kernel release. Plain netconsole sends the
console's text as it is written, in chunks of up to 1000 bytes that need not end at a line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_PRINT_CHUNK = 1000  # netconsole's datagram payload limit
MAX_MESSAGE = 64 * 1024  # a reassembled body larger than this is not a kernel message (printk: ~1 KiB + dict)

# [release,]level,seq,usec,flags[,more fields];  The release is a word without ',' or ';'.
_HEADER = re.compile(
    rb"^(?:(?P<release>[^,;\s]{1,64}),)?(?P<level>\d{1,4}),(?P<seq>\d{1,20}),(?P<usec>\d{1,20}),"
    rb"(?P<flags>[-c+])(?P<extra>(?:,[^;\n]{0,200})?);"
)
_FRAG = re.compile(rb",ncfrag=(\d{1,6})/(\d{1,6})")
_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")


@dataclass(frozen=True)
class Message:
    """One kernel message (extended format)."""

    level: int  # (facility << 3) | level, as the kernel sends it
    seq: int
    usec: int
    text: str  # may hold newlines (a multi-line message)
    fields: tuple[str, ...] = ()  # the dictionary: "KEY=VALUE" lines (SUBSYSTEM=, DEVICE=)
    cont: bool = False

    @property
    def severity(self) -> int:
        return self.level & 7


@dataclass(frozen=True)
class Fragment:
    """One piece of a message over MAX_PRINT_CHUNK bytes."""

    header: bytes  # the message's own header, ncfrag removed (the same in every piece)
    seq: int
    offset: int
    total: int
    chunk: bytes


@dataclass(frozen=True)
class Plain:
    """Console text from plain (non-extended) netconsole: any bytes, lines cut anywhere."""

    data: bytes


def unescape(raw: bytes) -> str:
    """The kernel's `\\xNN` escapes back to bytes, then UTF-8 (a broken sequence shows as U+FFFD)."""
    if b"\\x" in raw:
        raw = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), raw)
    return raw.decode("utf-8", errors="replace")


def parse(data: bytes) -> Message | Fragment | Plain:
    """Classify and parse one datagram's payload."""
    m = _HEADER.match(data)
    if m is None:
        return Plain(data)
    seq = int(m["seq"])
    extra = m["extra"]
    frag = _FRAG.search(extra)
    if frag is not None:
        offset, total = int(frag.group(1)), int(frag.group(2))
        if 0 < total <= MAX_MESSAGE and offset < total:
            header = data[: m.start("extra")] + extra[: frag.start()] + extra[frag.end() :]
            return Fragment(header, seq, offset, total, data[m.end() :][: total - offset])
        return Plain(data)  # an impossible fragment: keep the bytes as text rather than drop them
    return message_from(m, data[m.end() :])


def message_from(m: re.Match[bytes], body: bytes) -> Message:
    text, _, rest = body.partition(b"\n")
    fields = tuple(unescape(line[1:]) for line in rest.split(b"\n") if line.startswith(b" "))
    return Message(int(m["level"]), int(m["seq"]), int(m["usec"]), unescape(text), fields, m["flags"] == b"c")


def whole(header: bytes, body: bytes) -> Message | Plain:
    """The message a completed set of fragments makes."""
    m = _HEADER.match(header + b";")
    return message_from(m, body) if m else Plain(header + b";" + body)


class Reassembly:
    """The pieces of one fragmented message, by offset; complete when they cover 0..total."""

    def __init__(self, first: Fragment, now: float) -> None:
        self.header = first.header
        self.total = first.total
        self.pieces: dict[int, bytes] = {}
        self.started = now
        self.bytes = 0

    def add(self, frag: Fragment) -> Message | Plain | None:
        if frag.total != self.total or frag.offset in self.pieces:
            return None  # a duplicate piece, or one that does not belong here
        self.pieces[frag.offset] = frag.chunk
        self.bytes += len(frag.chunk)
        body = bytearray()
        for offset in sorted(self.pieces):
            if offset != len(body):
                return None  # a hole: more pieces to come (or lost)
            body += self.pieces[offset]
        if len(body) < self.total:
            return None
        return whole(self.header, bytes(body[: self.total]))


def timestamp(usec: int) -> str:
    """The kernel's own `[    1.234567]` form (printk's "[%5lu.%06lu]")."""
    return f"[{usec // 1_000_000:5d}.{usec % 1_000_000:06d}]"


def log_lines(msg: Message) -> list[str]:
    """A message in dmesg form: the text's lines each with the time, then the dictionary indented."""
    stamp = timestamp(msg.usec)
    lines = [f"{stamp} {line}" for line in msg.text.split("\n")]
    lines += [f" {field}" for field in msg.fields]
    return lines


_IDENTITY = re.compile(r"rescue: boot=([0-9a-fA-F-]{8,64}) machine=([A-Za-z0-9._:-]{1,64})")


def identity(text: str) -> tuple[str, str] | None:
    """(boot id, machine) from the hooks' `rescue: boot=... machine=...` line, else None."""
    m = _IDENTITY.search(text)
    return (m.group(1).lower(), m.group(2)) if m else None


PANIC_START = "Kernel panic - not syncing"
PANIC_END = "---[ end Kernel panic"

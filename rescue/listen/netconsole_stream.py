"""One sender's netconsole stream, pure (time is passed in): fragments reassembled, messages put in sequence
order, duplicates dropped, gaps noted, a new boot of the same sender told apart, the hooks' identity line and
a panic noticed. Lines come out in netconsole.log's form (rescue.listen.netconsole_format.log_lines).

Every buffer is bounded, so that a sender (or a flood of spoofed ones) costs a bounded amount of memory.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from enum import Enum

from rescue.listen.netconsole_format import (
    PANIC_END,
    PANIC_START,
    Fragment,
    Message,
    Plain,
    Reassembly,
    identity,
    log_lines,
    parse,
)

REORDER_WAIT = 0.5  # seconds a hole in the sequence may stay open before its messages count as lost
MAX_PENDING = 64  # messages held behind a hole
MAX_REASSEMBLIES = 4  # fragmented messages in progress at once
MAX_PLAIN_LINE = 4096  # plain text without a line end is cut here
RECENT = 1024  # sequence numbers remembered to drop duplicates
BOOT_SLACK_USEC = 2_000_000  # the kernel's clock going back by more than this: the sender booted again


class Fed(Enum):
    OK = "ok"
    NEW_BOOT = "new boot"  # the datagram belongs to a new boot: close this stream, feed it to a fresh one


def lost_line(count: int, first: int, last: int) -> str:
    return f"rescue: netconsole: {count} messages lost (seq {first}-{last})"


class Stream:
    def __init__(self, address: str, now: float) -> None:
        self.address = address
        self.started = now
        self.last_seen = now
        self.out: list[str] = []  # lines ready for the log, taken by the caller
        self.out_bytes = 0
        self.identity: tuple[str, str] | None = None  # (boot id, machine) once the hooks' line was seen
        self.panic_at: float | None = None  # when a panic started
        self.panic_ended = False
        self.extended = False
        self.next_seq: int | None = None
        self.max_usec = 0
        self.pending: dict[int, Message] = {}
        self.pending_bytes = 0
        self.waiting_since: float | None = None
        self.recent: OrderedDict[int, int] = OrderedDict()  # seq -> crc32 of its time and text
        self.reassembly: OrderedDict[int, Reassembly] = OrderedDict()
        self.plain = bytearray()
        self.messages = self.duplicates = self.lost = self.late = 0
        self.datagrams = self.bytes = 0

    # input --------------------------------------------------------------------------------------

    def feed(self, data: bytes, now: float) -> Fed:
        """One datagram. NEW_BOOT: nothing of it was taken; close this stream and start another with it."""
        item = parse(data)
        if isinstance(item, Fragment):
            done = self._piece(item, now)
            if done is None:
                self._count(data, now)
                return Fed.OK
            item = done
        if isinstance(item, Plain):
            self._count(data, now)
            self._plain(item.data)
            return Fed.OK
        # A duplicate repeats the time and the text; a new boot reuses the number with another.
        text_crc = zlib.crc32(f"{item.usec};{item.text}".encode())
        if self._is_new_boot(item.seq, item.usec, text_crc) or self._other_boot(item.text):
            return Fed.NEW_BOOT
        self._count(data, now)
        self.extended = True
        self._message(item, text_crc, now)
        return Fed.OK

    def _count(self, data: bytes, now: float) -> None:
        self.last_seen = now
        self.datagrams += 1
        self.bytes += len(data)

    def _is_new_boot(self, seq: int, usec: int, text_crc: int) -> bool:
        if self.recent.get(seq, text_crc) != text_crc:
            return True  # the same number for another text: numbering started again
        return usec + BOOT_SLACK_USEC < self.max_usec

    def _other_boot(self, text: str) -> bool:
        ident = identity(text)
        return ident is not None and self.identity is not None and ident[0] != self.identity[0]

    def _piece(self, frag: Fragment, now: float) -> Message | Plain | None:
        r = self.reassembly.get(frag.seq)
        if r is None:
            if frag.seq in self.recent or (self.next_seq is not None and frag.seq < self.next_seq):
                self.duplicates += 1  # a piece of a message already written
                return None
            while len(self.reassembly) >= MAX_REASSEMBLIES:
                self.reassembly.popitem(last=False)  # its message will show as lost
            r = self.reassembly[frag.seq] = Reassembly(frag, now)
        done = r.add(frag)
        if done is not None:
            del self.reassembly[frag.seq]
        return done

    def _message(self, msg: Message, text_crc: int, now: float) -> None:
        if msg.seq in self.recent:
            self.duplicates += 1
            return
        self.recent[msg.seq] = text_crc
        while len(self.recent) > RECENT:
            self.recent.popitem(last=False)
        self.max_usec = max(self.max_usec, msg.usec)
        if self.next_seq is None:
            self.next_seq = msg.seq  # the stream starts where the sender was armed: no gap before it
        if msg.seq < self.next_seq:
            self.late += 1  # its hole was already written as lost: keep it anyway, marked
            self._emit(msg, late=True)
        elif msg.seq == self.next_seq:
            self._emit(msg)
            self.next_seq += 1
            self._drain()
        else:
            self.pending[msg.seq] = msg
            self.pending_bytes += len(msg.text) + 64
            if self.waiting_since is None:
                self.waiting_since = now
            if len(self.pending) > MAX_PENDING:
                self._skip_hole()

    def _drain(self) -> None:
        assert self.next_seq is not None
        while self.next_seq in self.pending:
            msg = self.pending.pop(self.next_seq)
            self.pending_bytes -= len(msg.text) + 64
            self._emit(msg)
            self.next_seq += 1
        self.waiting_since = None if not self.pending else self.waiting_since

    def _skip_hole(self) -> None:
        """Give up on the hole before the first held message: note it lost, go on from there."""
        assert self.next_seq is not None
        first = min(self.pending)
        count = first - self.next_seq
        self.lost += count
        self._line(lost_line(count, self.next_seq, first - 1))
        self.next_seq = first
        self._drain()

    def _plain(self, data: bytes) -> None:
        self.plain += data
        while b"\n" in self.plain or len(self.plain) > MAX_PLAIN_LINE:
            line, nl, rest = bytes(self.plain).partition(b"\n")
            if not nl:
                line, rest = bytes(self.plain[:MAX_PLAIN_LINE]), bytes(self.plain[MAX_PLAIN_LINE:])
            self.plain = bytearray(rest)
            self._text_line(line.decode("utf-8", errors="replace").rstrip("\r"))

    # output -------------------------------------------------------------------------------------

    def _emit(self, msg: Message, late: bool = False) -> None:
        self.messages += 1
        lines = log_lines(msg)
        if late:
            lines[0] += "  (rescue: arrived late, after its gap was noted)"
        for line in lines:
            self._text_line(line)

    def _text_line(self, line: str) -> None:
        if self.identity is None:
            self.identity = identity(line)
        if PANIC_START in line and self.panic_at is None:
            self.panic_at = self.last_seen
        if PANIC_END in line:
            self.panic_ended = True
        self._line(line)

    def _line(self, line: str) -> None:
        self.out.append(line)
        self.out_bytes += len(line) + 1

    def take(self) -> list[str]:
        lines, self.out, self.out_bytes = self.out, [], 0
        return lines

    # time ---------------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Holes open longer than REORDER_WAIT are lost; reassemblies older than that are dropped."""
        while self.pending and self.waiting_since is not None and now - self.waiting_since >= REORDER_WAIT:
            self._skip_hole()
            if self.pending:
                self.waiting_since = now  # the next hole gets its own wait
        for seq in [s for s, r in self.reassembly.items() if now - r.started >= 4 * REORDER_WAIT]:
            del self.reassembly[seq]

    def close(self) -> None:
        """The stream ends: what waits behind holes is written, a partial plain line too."""
        while self.pending:
            self._skip_hole()
        if self.reassembly and self.next_seq is not None:
            self._line(f"rescue: netconsole: {len(self.reassembly)} fragmented messages incomplete")
            self.reassembly.clear()
        if self.plain:
            self._text_line(self.plain.decode("utf-8", errors="replace"))
            self.plain.clear()

    def held_bytes(self) -> int:
        pieces = sum(r.bytes for r in self.reassembly.values()) if self.reassembly else 0
        return self.out_bytes + self.pending_bytes + pieces + len(self.plain)

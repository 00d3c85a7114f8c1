"""netconsole's format and one sender's stream, on datagrams recorded from a real kernel
(tests/data/netconsole/README.md says how), and on edits of them: lost, repeated, reordered, a second boot."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

from rescue.harness.testinitrd import LONG_MESSAGE
from rescue.listen.netconsole_format import Fragment, Message, Plain, log_lines, parse, timestamp
from rescue.listen.netconsole_stream import MAX_PENDING, MAX_PLAIN_LINE, REORDER_WAIT, Fed, Stream

RECORDED = Path(__file__).resolve().parent.parent / "data" / "netconsole" / "crash.jsonl"
BOOT = "3d04cc7a-96fb-4b16-b541-9db1a20efbeb"


def recorded() -> list[bytes]:
    return [base64.b64decode(json.loads(line)["data"]) for line in RECORDED.read_text().splitlines()]


def run(datagrams: list[bytes], stream: Stream | None = None) -> tuple[Stream, list[str]]:
    stream = stream or Stream("10.0.2.15", 0.0)
    for i, data in enumerate(datagrams):
        assert stream.feed(data, i * 0.01) is Fed.OK
    stream.tick(1e6)
    stream.close()
    return stream, stream.take()


# the format ---------------------------------------------------------------------------------------------


def test_extended_message_with_dictionary_and_escapes() -> None:
    msg = parse(
        b"6,1234,5678901,-;virtio_net virtio0 eth0: caf\\xc3\\xa9\\x09x\n SUBSYSTEM=virtio\n DEVICE=+v:0\n"
    )
    assert msg == Message(
        6, 1234, 5678901, "virtio_net virtio0 eth0: caf\u00e9\tx", ("SUBSYSTEM=virtio", "DEVICE=+v:0")
    )
    assert log_lines(msg) == [
        "[    5.678901] virtio_net virtio0 eth0: caf\u00e9\tx",
        " SUBSYSTEM=virtio",
        " DEVICE=+v:0",
    ]


def test_a_newline_inside_a_message_makes_further_lines_and_the_release_prefix_is_skipped() -> None:
    msg = parse(b"6.1.0-57-cloud-amd64,4,7,1000000,c,caller=T1;first\\x0asecond\n")
    assert isinstance(msg, Message) and msg.cont and msg.severity == 4
    assert log_lines(msg) == ["[    1.000000] first", "[    1.000000] second"]


def test_plain_console_text_and_odd_headers_are_plain() -> None:
    for data in (b"[    1.234567] plain netconsole\n", b"1,2;no", b"6,1,2,-,ncfrag=5/3;offset past the end"):
        assert isinstance(parse(data), Plain), data
    assert timestamp(123_456_789_012) == "[123456.789012]"


def test_recorded_fragments_reassemble_to_the_message_the_guest_wrote() -> None:
    data = recorded()
    pieces = [parse(d) for d in data if b"ncfrag=" in d]
    assert [(p.offset, p.total) for p in pieces if isinstance(p, Fragment)] == [(0, 1102), (969, 1102)]
    assert all(len(d) <= 1000 for d in data)
    for order in (data, [*data[:16], data[17], data[16], *data[18:]], [*data[:17], data[16], *data[17:]]):
        _, lines = run(order)  # in order, the pieces swapped, a piece repeated
        long = [line for line in lines if "rescue-test: long" in line]
        assert long == [f"[    8.468910] {LONG_MESSAGE}"]


# the stream -----------------------------------------------------------------------------------------------


def test_recorded_crash_in_dmesg_form() -> None:
    stream, lines = run(recorded())
    assert stream.identity == (BOOT, "525400123456")
    assert (stream.messages, stream.lost, stream.duplicates, stream.late) == (64, 0, 0, 0)
    assert lines[0] == f"[    6.378317] rescue: boot={BOOT} machine=525400123456"
    assert "[    8.483882] Kernel panic - not syncing: sysrq triggered crash" in lines
    assert stream.panic_at is not None and not stream.panic_ended
    assert lines[-1].startswith("[    8.517585] Kernel Offset:")


def test_lost_datagrams_become_gap_lines_and_the_rest_is_kept() -> None:
    data = recorded()
    kept = [d for i, d in enumerate(data) if i not in (5, 6, 30, 50)]
    stream, lines = run(kept)
    gaps = [line for line in lines if line.startswith("rescue: netconsole:")]
    assert gaps == [
        "rescue: netconsole: 2 messages lost (seq 376-377)",
        "rescue: netconsole: 1 messages lost (seq 400-400)",
        "rescue: netconsole: 1 messages lost (seq 420-420)",
    ]
    assert stream.lost == 4 and stream.messages == 60
    # A lost piece loses its message, and only that one.
    stream, lines = run([d for i, d in enumerate(data) if i != 17])
    assert "rescue: netconsole: 1 messages lost (seq 387-387)" in lines and stream.messages == 63


def test_duplicates_are_dropped_and_reordering_within_the_wait_is_undone() -> None:
    data = recorded()
    _, clean = run(data)
    stream, lines = run([d for d in data for _ in (0, 1)])
    assert lines == clean and stream.duplicates == 64
    shuffled = data[:]
    rng = random.Random(12)
    for i in range(0, len(shuffled) - 4, 4):  # each block of four arrives in another order
        block = shuffled[i : i + 4]
        rng.shuffle(block)
        shuffled[i : i + 4] = block
    stream = Stream("10.0.2.15", 0.0)
    for data_ in shuffled:
        stream.feed(data_, 0.0)  # all within REORDER_WAIT
    stream.close()
    assert stream.take() == clean and stream.lost == 0


def test_a_hole_left_open_longer_than_the_wait_is_lost_and_a_late_message_still_kept() -> None:
    data = recorded()
    stream = Stream("10.0.2.15", 0.0)
    for d in data[:10] + data[11:20]:
        stream.feed(d, 0.0)
    stream.tick(REORDER_WAIT / 2)
    assert "rescue: netconsole" not in " ".join(stream.out)
    stream.tick(REORDER_WAIT)
    assert "rescue: netconsole: 1 messages lost (seq 381-381)" in stream.out
    stream.feed(data[10], REORDER_WAIT * 2)
    assert stream.late == 1 and stream.out[-1].endswith("(rescue: arrived late, after its gap was noted)")


def test_pending_messages_are_bounded() -> None:
    stream = Stream("10.0.2.15", 0.0)
    stream.feed(b"6,0,1,-;first\n", 0.0)
    for seq in range(2, 2 + MAX_PENDING + 10):
        stream.feed(f"6,{seq},{seq},-;m{seq}\n".encode(), 0.0)
    assert len(stream.pending) <= MAX_PENDING
    assert stream.out[1] == "rescue: netconsole: 1 messages lost (seq 1-1)"


def test_a_second_boot_of_the_same_sender_is_told_apart() -> None:
    data = recorded()
    again = Stream("10.0.2.15", 0.0)
    run(data[:40], again)
    # The kernel starts again: the same numbers with other times (and its clock goes back).
    reboot = b"12,371,3000000,-;rescue: boot=11111111-2222-3333-4444-555555555555 machine=525400123456\n"
    assert again.feed(reboot, 1.0) is Fed.NEW_BOOT
    assert again.feed(b"6,500,9000000,-;later in the same boot\n", 1.0) is Fed.OK


def test_plain_netconsole_lines_cut_anywhere() -> None:
    stream = Stream("10.0.2.15", 0.0)
    for piece in (
        b"[    1.000000] rescue: boot=",
        BOOT.encode(),
        b" machine=m1\n[    1.1",
        b"00000] Kernel panic - not",
    ):
        stream.feed(piece, 0.0)
    stream.feed(b" syncing: VFS\r\n" + b"x" * (MAX_PLAIN_LINE + 5), 0.0)
    lines = stream.take()
    assert lines[:2] == [
        f"[    1.000000] rescue: boot={BOOT} machine=m1",
        "[    1.100000] Kernel panic - not syncing: VFS",
    ]
    assert len(lines[2]) == MAX_PLAIN_LINE and stream.identity == (BOOT, "m1") and stream.panic_at == 0.0
    stream.close()
    assert stream.take() == ["xxxxx"]

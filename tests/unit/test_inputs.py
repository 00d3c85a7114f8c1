"""Pasted logs back to what the machine printed: quoting, markup, entities, prompts, quoted-printable.
The first cases are lines as they stand in tests/data/public (real pastes); the others are small made-up
inputs for forms the corpus holds few of, and say so."""

from __future__ import annotations

import pytest

from rescue.diagnose.analyze import analyze_text
from rescue.diagnose.inputs import messages, normalize, unquote_printable


@pytest.mark.parametrize(
    ("pasted", "printed"),
    [
        # a-044 (mail, quoted once, indented by the poster)
        (">   :: mounting '/dev/vda2' on real root", ":: mounting '/dev/vda2' on real root"),
        # b-001 (mail, quoted twice)
        (
            "> > insmod: error inserting '../lib/libcrc32c.ko': -1 Unknown symbol in module",
            "insmod: error inserting '../lib/libcrc32c.ko': -1 Unknown symbol in module",
        ),
        # initramfs-tools' prompt in front of what it printed (several corpus logs)
        (
            "(initramfs) Gave up waiting for root file system device.  Common problems:",
            "Gave up waiting for root file system device.  Common problems:",
        ),
        ("[rootfs ]# ", ""),
        # made up: forum markup and entities around a kernel line
        (
            "[code][    2.1] btrfs: Unknown symbol crc32c (err -2)[/code]",
            "[    2.1] btrfs: Unknown symbol crc32c (err -2)",
        ),
        (
            "mount: mounting /dev/sda1 on /root failed: No such device&gt;",
            "mount: mounting /dev/sda1 on /root failed: No such device>",
        ),
        # b-076: typed into a forum, the quotes turned typographic
        ("Mount unknown filesystem type \u2018ext4\u2019", "Mount unknown filesystem type 'ext4'"),
        # a kernel line is left as it is
        (
            "[    0.000000] Linux version 6.1.0-57-cloud-amd64",
            "[    0.000000] Linux version 6.1.0-57-cloud-amd64",
        ),
    ],
)
def test_normalize(pasted: str, printed: str) -> None:
    assert normalize(pasted) == printed


def test_quoted_printable_is_decoded_only_when_it_is_that() -> None:
    # made up: a mail body with a soft break inside a kernel line and =3D for '='
    mail = "[    2.1] btrfs: Unknown symbol crc32c (er=\nr -2)\nKernel command line: root=3D/dev/vda ro\n"
    assert (
        unquote_printable(mail)
        == "[    2.1] btrfs: Unknown symbol crc32c (err -2)\nKernel command line: root=/dev/vda ro\n"
    )
    plain = "Btrfs loaded, crc32c=crc32c-intel\nroot=/dev/vda\n"  # '=' as kernels print it: untouched
    assert unquote_printable(plain) == plain


def test_a_quoted_failure_is_diagnosed_like_a_plain_one() -> None:
    plain = "[    2.1] btrfs: Unknown symbol crc32c (err -2)\n"
    quoted = "".join(f"> > {line}\n" for line in plain.splitlines())
    assert [f.id for f in analyze_text(quoted).findings] == [f.id for f in analyze_text(plain).findings]
    assert analyze_text(quoted).findings[0].id == "btrfs-crc32c-missing"


def test_newlines_escaped_in_a_dumped_buffer_separate_messages() -> None:
    # a-041: the console's xmit buffer printed by gdb
    line = (
        "ripts/local-block ... done.\\r\\ndone.\\r\\n"
        "Gave up waiting for suspend/resume device\\r\\ndone.\\r\\n"
        "No root device specified. Boot arguments must include a root= parameter.\\r\\n\\r\\n"
    )
    assert [m for _, m in messages(line)] == [
        "ripts/local-block ... done.",
        "done.",
        "Gave up waiting for suspend/resume device",
        "done.",
        "No root device specified. Boot arguments must include a root= parameter.",
    ]


def test_a_message_hard_wrapped_by_a_mail_is_read_whole() -> None:
    # a-085 (LKML 2006, quoted): the panic's block device is on the next quoted line
    text = "> Kernel panic - not syncing : VFS:Unable to mount root fs on\n> unknown-block(8,4)\n"
    found = {f.id: f for f in analyze_text(text).findings}
    assert list(found) == ["root-mount-failed"]
    assert found["root-mount-failed"].params["block"] == ["unknown-block(8,4)"]
    assert found["root-mount-failed"].evidence[0].line == 1
    # a next line that is a message of its own is not taken as the rest
    apart = "Kernel panic - not syncing: VFS: Unable to mount root fs on\n[    1.0] unknown-block(8,4)\n"
    assert [f.id for f in analyze_text(apart).findings] == ["boot-failed-unexplained"]

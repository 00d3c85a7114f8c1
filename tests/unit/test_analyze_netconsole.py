"""A capture's netconsole.log (the kernel messages the listener received over netconsole, in dmesg form:
`[    S.UUUUUU] text` per line of a message, its dictionary indented, and `rescue: netconsole: N messages
lost (seq A-B)` for a gap) is read like dmesg: its lines are evidence, an oops in it is found.

The oops lines are from tests/data/public/b-026 (an early i386 NULL dereference; one trailing space
dropped); the header lines, the dictionary and the gap line are written here in the listener's format."""

from __future__ import annotations

from pathlib import Path

from rescue.diagnose.analyze import analyze_path

NETCONSOLE = """\
[    0.000000] Linux version 6.6.0-rc3 (builder@host) #1 SMP PREEMPT_DYNAMIC
[    0.050000] rescue: boot=0f6c3e9e-5d0b-4b5e-9f0a-0d8a3c5b7e21 machine=52540012345
rescue: netconsole: 3 messages lost (seq 41-43)
[    0.106881] BUG: kernel NULL pointer dereference, address: 00000020
 SUBSYSTEM=cpu
[    0.107329] #PF: supervisor write access in kernel mode
[    0.107516] #PF: error_code(0x0002) - not-present page
[    0.107719] *pde = 00000000
[    0.107952] Oops: 0002 [#1] PREEMPT SMP
[    0.108325] CPU: 0 PID: 0 Comm: swapper Not tainted 6.6.0-rc3 #1
[    0.108657] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS Arch Linux 1.16.2-2-2 04/01/2014
[    0.109104] EIP: __ring_buffer_alloc+0x32/0x170
"""


def _capture(tmp_path: Path, files: dict[str, str]) -> Path:
    capture = tmp_path / "52540012345" / "20261207T220000Z-1"
    capture.mkdir(parents=True)
    for name, text in files.items():
        (capture / name).write_text(text)
    return capture


def test_an_oops_in_a_captures_netconsole_log_is_found(tmp_path: Path) -> None:
    report = analyze_path(_capture(tmp_path, {"netconsole.log": NETCONSOLE}))
    assert "netconsole.log" in report.files
    assert [f.id for f in report.findings] == ["kernel-oops"]
    oops = report.findings[0]
    assert {e.file for e in oops.evidence} == {"netconsole.log"}
    assert oops.evidence[0].line == 4  # the BUG line, its timestamp kept in what is shown
    assert oops.evidence[0].text.startswith("[    0.106881] BUG: kernel NULL pointer dereference")
    assert report.kernel == "6.6.0-rc3"  # the dmesg-form header tells the kernel, as dmesg does
    assert any("3 kernel messages were lost" in n for n in report.notes)


def test_netconsole_log_beside_the_bundles_dmesg_is_read_too(tmp_path: Path) -> None:
    # the TCP bundle came (its dmesg ends before the crash), the oops only reached us over netconsole
    dmesg = "[    0.000000] Linux version 6.6.0-rc3 (builder@host) #1 SMP PREEMPT_DYNAMIC\n"
    report = analyze_path(_capture(tmp_path, {"dmesg.txt": dmesg, "netconsole.log": NETCONSOLE}))
    assert set(report.files) == {"dmesg.txt", "netconsole.log"}
    assert [f.id for f in report.findings] == ["kernel-oops"]


def test_a_clean_netconsole_log_raises_nothing(tmp_path: Path) -> None:
    quiet = "\n".join(line for line in NETCONSOLE.splitlines()[:3]) + "\n"
    report = analyze_path(_capture(tmp_path, {"netconsole.log": quiet}))
    assert report.findings == []
    assert any("3 kernel messages were lost" in n for n in report.notes)


def test_a_netconsole_log_given_alone_is_a_dmesg_file(tmp_path: Path) -> None:
    path = tmp_path / "netconsole.log"
    path.write_text(NETCONSOLE)
    assert [f.id for f in analyze_path(path).findings] == ["kernel-oops"]

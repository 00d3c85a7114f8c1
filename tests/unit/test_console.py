"""The console driver against a real busybox shell on a pty (the same ash the initramfs runs)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rescue.harness.console import Console, ConsoleError


@pytest.fixture
def console(busybox: str, tmp_path: Path) -> Console:
    # An "(initramfs)" prompt like initramfs-tools' panic shell, with echo still on: setup_shell turns it off.
    con = Console.spawn([busybox, "sh", "-c", "PS1='(initramfs) ' exec " + busybox + " sh -i"],
                        log_path=tmp_path / "console.log")  # fmt: skip
    con.setup_shell(r"\(initramfs\) ", timeout=10)
    yield con  # type: ignore[misc]
    con.close()


def test_run_returns_output_and_status(console: Console) -> None:
    assert console.run("echo hello; echo world") == ("hello\nworld\n", 0)
    output, status = console.run("ls /no/such/dir")
    assert status != 0 and "no/such/dir" in output
    assert console.run("(exit 7)") == ("", 7)


def test_the_echo_of_the_command_never_matches_the_markers(console: Console) -> None:
    # A command whose text contains the marker words: only the printed markers may frame the output.
    output, status = console.run("echo RSC-BEGIN RSC-END")
    assert (output, status) == ("RSC-BEGIN RSC-END\n", 0)


def test_prompt_is_unique_and_set(console: Console) -> None:
    assert console.prompt is not None and console.prompt.startswith("RSC-PS1-")
    assert console.run('echo "$PS1"')[0] == console.prompt + "\n"


def test_run_check_raises_with_the_log_attached(console: Console) -> None:
    with pytest.raises(ConsoleError) as err:
        console.run_check("echo out-before-failure; false")
    assert "exited 1" in str(err.value)
    assert "out-before-failure" in err.value.log


def test_one_deadline_for_the_whole_wait(console: Console) -> None:
    # Output keeps arriving (so no single read times out), but the pattern never comes: the wait must still
    # end at its deadline, not be extended by each new line.
    console.sendline("while :; do echo tick; sleep 0.2; done")
    start = time.monotonic()
    with pytest.raises(ConsoleError, match=r"timed out after 1\.5s"):
        console.wait_for("never-printed", timeout=1.5)
    assert time.monotonic() - start < 5


def test_eof_is_an_error_unless_expected(busybox: str) -> None:
    con = Console.spawn([busybox, "sh", "-c", "echo bye; exit 4"])
    try:
        assert con.wait_exit(timeout=10) == 4
        assert "bye" in con.log
    finally:
        con.close()
    con = Console.spawn([busybox, "sh", "-c", "exit 0"])
    try:
        with pytest.raises(ConsoleError, match="console closed"):
            con.wait_for("something", timeout=10)
    finally:
        con.close()


def test_log_file_has_everything_read(console: Console) -> None:
    console.run("echo in-the-file")
    assert console.log_path is not None
    console.close()
    assert "in-the-file" in console.log_path.read_text()


def test_a_quiet_console_is_nudged_with_a_newline(busybox: str) -> None:
    # The program waits for a line before it says anything, like a prompt printed before we listened.
    argv = [busybox, "sh", "-c", "read line; echo nudged"]
    nudged, left_alone = Console.spawn(argv), Console.spawn(argv)
    try:
        nudged.wait_for("nudged", timeout=10, nudge_idle=0.3)
        with pytest.raises(ConsoleError, match="timed out"):
            left_alone.wait_for("nudged", timeout=1)
    finally:
        nudged.close()
        left_alone.close()

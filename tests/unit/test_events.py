from __future__ import annotations

import io
import json

import pytest

from rescue.listen.events import Events
from rescue.units import human_size


def test_progress_off_a_terminal_is_one_line_now_and_then(capsys: pytest.CaptureFixture[str]) -> None:
    r = Events(json_events=False, log=None)
    r.human = io.StringIO()  # not a terminal, as under systemd or with output redirected
    r.progress("receiving: 10.0.2.15 1.0 MiB 1.0 MiB/s")
    r.progress("receiving: 10.0.2.15 2.0 MiB 1.0 MiB/s")  # within the interval: not repeated
    assert r.human.getvalue() == "receiving: 10.0.2.15 1.0 MiB 1.0 MiB/s\n"


def test_json_events_go_to_stdout_and_words_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    r = Events(json_events=True, log=None)
    r.event("capture", "a capture arrived", path="/x", status="complete")
    out, err = capsys.readouterr()
    assert json.loads(out) == {"event": "capture", "path": "/x", "status": "complete"}
    assert err == "a capture arrived\n"


@pytest.mark.parametrize(
    ("n", "text"), [(0, "0 B"), (1536, "1.5 KiB"), (5 << 20, "5.0 MiB"), (3 << 40, "3072.0 GiB")]
)
def test_human_size(n: int, text: str) -> None:
    assert human_size(n) == text

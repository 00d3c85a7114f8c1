"""netconsole over a lossy link: 5% of the datagrams dropped on their way out of a network namespace
(netem; where this kernel has no netem qdisc, nftables' random numbers drop them the same way). The
listener must note exactly the messages the link dropped as gaps, and nothing else must go wrong."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rescue.listen.netconsole_format import Message, parse
from tests.conftest import Listener, manifest
from tests.integration.test_listener_netns import HOST_IP, netns  # noqa: F401  (the fixture)
from tests.unit.test_netconsole import recorded

pytestmark = pytest.mark.netns
COUNT = 2000
SEND = """
import base64, socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for line in open(sys.argv[1]):
    try:
        sock.sendto(base64.b64decode(line), (sys.argv[2], int(sys.argv[3])))
    except PermissionError:
        pass  # nftables dropped it (netem drops silently); netconsole never learns of a loss either
"""


def stream(count: int) -> list[bytes]:
    """count messages in the recorded crash's words, numbered on from its first (fragments left out)."""
    texts = [m.text for m in map(parse, recorded()) if isinstance(m, Message)]
    return [f"6,{1000 + i},{1_000_000 + 50 * i},-;{texts[i % len(texts)]}\n".encode() for i in range(count)]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


class Loss:
    """5% random loss on the namespace's way out: netem if the kernel has it, else an nftables rule."""

    def __init__(self, ns: str, port: int) -> None:
        self.ns, self.port = ns, port
        add = run(
            "ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "loss", "5%"
        )
        self.netem = add.returncode == 0
        if not self.netem:
            assert "unknown" in add.stderr, add.stderr
            rule = f"add rule inet loss out udp dport {port} numgen random mod 100 < 5 counter drop"
            for cmd in (
                "add table inet loss",
                "add chain inet loss out { type filter hook output priority 0 ; }",
                rule,
            ):
                done = run("ip", "netns", "exec", ns, "nft", cmd)
                assert done.returncode == 0, done.stderr

    def dropped(self) -> int:
        if self.netem:
            out = run("ip", "netns", "exec", self.ns, "tc", "-s", "-j", "qdisc", "show", "dev", "eth0").stdout
            return sum(int(q.get("drops", 0)) for q in json.loads(out) if q.get("kind") == "netem")
        out = run("ip", "netns", "exec", self.ns, "nft", "list", "table", "inet", "loss").stdout
        return int(re.search(r"counter packets (\d+)", out).group(1))  # type: ignore[union-attr]

    def remove(self) -> None:
        if self.netem:
            run("ip", "netns", "exec", self.ns, "tc", "qdisc", "del", "dev", "eth0", "root")
        else:
            run("ip", "netns", "exec", self.ns, "nft", "delete", "table", "inet", "loss")


def test_five_percent_loss_gives_gaps_not_errors(netns: str, tmp_path: Path) -> None:  # noqa: F811
    lst = Listener(tmp_path / "captures", "--netconsole-quiet", "1", bind=HOST_IP)
    data = stream(COUNT)

    def send(datagrams: list[bytes]) -> None:
        path = tmp_path / "datagrams"
        path.write_text("".join(base64.b64encode(d).decode() + "\n" for d in datagrams))
        done = run(
            "ip", "netns", "exec", netns, sys.executable, "-c", SEND, str(path), HOST_IP, str(lst.port)
        )
        assert done.returncode == 0, done.stderr

    # The first and the last message cross a clean link, so that every loss lies between two that arrived.
    send(data[:1])
    loss = Loss(netns, lst.port)
    send(data[1:-1])
    dropped = loss.dropped()
    loss.remove()
    send(data[-1:])
    event = lst.wait_for("capture")
    assert 40 <= dropped <= 180, dropped  # 5% of 1998, with room for chance
    assert event["status"] == "complete" and event["lost"] == dropped, (event, dropped)
    assert event["messages"] == COUNT - dropped
    text = (Path(event["path"]) / "netconsole.log").read_text()
    gaps = [
        int(n) for n in re.findall(r"^rescue: netconsole: (\d+) messages lost \(seq \d+-\d+\)$", text, re.M)
    ]
    assert sum(gaps) == dropped and gaps
    assert manifest(event)["status"] == "complete"
    assert not [e for e in lst.events if e["event"] == "error"]

"""The inputs of a diagnosis, normalised: a capture's files or one log, cleaned line by line.

Carriage returns, colours, syslog levels, timestamps and kernel lines inside shell output are cleaned away
before any rule looks at a line. What is read is bounded (MAX_READ for a whole capture).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from rescue.capture.manifest import MANIFEST, Manifest, Status, read_manifest
from rescue.errors import RescueError
from rescue.reading import read_bytes

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][A-Z0-9]|\x1b[@-Z\\^_`a-z78=>]")
# <N> (dmesg -r, /dev/kmsg writers), [ 1.234567] (printk time), [T123] (printk caller), syslog/journal
# prefixes ("Nov 25 16:00:00 host kernel: "), dmesg -T ("[Wed Nov 25 16:00:00 2026] ").
_PREFIX = re.compile(
    r"^(?:<\d{1,3}>)?"
    r"(?:\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ [\w.\-/]+(?:\[\d+\])?: )?"
    r"(?:\[\s*\d+\.\d+\]\s?|\[\w{3} \w{3} [ \d]\d [\d:]{8} \d{4}\]\s?)?"
    r"(?:\[\s*[TC]\d+\]\s?)?"
)
# Console output interleaves kernel lines with shell output mid-line: split before each printk time.
# (each branch starts with its bracket: re then skips to '<' or '[' instead of trying every position)
_TIME = re.compile(r"<\d{1,3}>\[\s*\d+\.\d{6}\]|\[\s*\d+\.\d{6}\]")


def clean(raw: str) -> str:
    # A carriage return inside a line redraws it: the terminal shows the last non-empty part.
    if "\r" in raw:
        parts = [p for p in raw.split("\r") if p.strip()]
        raw = " ".join(parts)
    if "\x1b" in raw:
        raw = _ANSI.sub("", raw)
    return raw.strip()


# How logs reach us pasted: mail quoting ("> ", "> > "), BBCode and HTML entities from forums, a shell
# prompt in front of what was typed at the rescue shell.
_QUOTED = re.compile(r"^(?:[ \t]*>)+[ \t]?")
_MARKUP = re.compile(
    r"\[/?(?:code|quote|b|i|u|s|pre|tt|color|size|font|spoiler|list|img|url)(?:=[^\]]*)?\]", re.I
)
# an editor or a forum turns quotes typographic: mount's 'ext4' and the kernel's "root=" are ASCII
_TYPOGRAPHIC = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
_ENTITIES = {"&gt;": ">", "&lt;": "<", "&quot;": '"', "&#39;": "'", "&nbsp;": " ", "&amp;": "&"}
_PROMPT = re.compile(
    r"^(?:\(initramfs\)|dracut:/[#$]|\[rootfs [^\]]*\][#$]|rootfs:/[#$]|(?:ba)?sh-\d+\.\d+[#$]|grub>)[ \t]*"
)


def normalize(raw: str) -> str:
    """One line as the machine printed it: redraws and colours resolved, then the quoting, markup and
    prompt a paste added around it removed."""
    line = clean(raw)
    if line[:1] == ">":
        line = _QUOTED.sub("", line, count=1)
    if "[" in line:
        line = _MARKUP.sub("", line)
    if "&" in line:
        for entity, char in _ENTITIES.items():
            line = line.replace(entity, char)
    if not line.isascii():
        line = line.translate(_TYPOGRAPHIC)
    return _PROMPT.sub("", line, count=1).strip()


_SOFT_BREAK = re.compile(r"=\r?\n")
_QP_BYTE = re.compile(r"=([0-9A-F]{2})")


def unquote_printable(text: str) -> str:
    """Mail archives keep quoted-printable bodies: '=' at a line end joins it to the next, =3D is '='.
    Decoded only when the text looks like it ('=3D', or several soft breaks): kernel lines are full of '='."""
    if "=3D" not in text and text.count("=\n") + text.count("=\r\n") < 3:
        return text
    text = _SOFT_BREAK.sub("", text)
    return _QP_BYTE.sub(
        lambda m: chr(int(m.group(1), 16)) if int(m.group(1), 16) < 0x80 else m.group(0), text
    )


_ESCAPED_NEWLINE = re.compile(r"(?:\\r)*\\n")


def messages(text: str) -> list[tuple[str, str]]:
    """The messages in one cleaned line (console output may carry several): (as shown, without prefixes).
    Output dumped as a C or JSON string (a debugger's look at the console buffer) has its newlines escaped."""
    if "\\n" in text:
        return [m for part in _ESCAPED_NEWLINE.split(text) for m in _messages(part)]
    return _messages(text)


def _messages(text: str) -> list[tuple[str, str]]:
    cuts = [0]
    if "[" in text:
        first = _TIME.match(text)  # a line's own level and time are not a second message
        start = first.end() if first else 1
        cuts += [m.start() for m in _TIME.finditer(text, start)]
    pieces = [text[a:b].strip() for a, b in zip(cuts, [*cuts[1:], len(text)], strict=True)]
    # _PREFIX is all optional parts: it always matches, possibly empty
    return [(p, p[_PREFIX.match(p).end() :]) for p in pieces if p]  # type: ignore[union-attr]


def is_text(data: bytes) -> bool:
    head = data[:65536]
    if not head:
        return True
    if head.count(0) > len(head) // 100:
        return False
    bad = head.decode("utf-8", errors="replace").count("\ufffd")
    return bad <= len(head) // 20


# Collector bundle files that are not logs; anything else that is text is read as a log.
_NOT_LOGS = {
    "cmdline.txt",
    "modules.txt",
    "crypto.txt",
    "filesystems.txt",
    "partitions.txt",
    "mounts.txt",
    "blkid.txt",
    "disks.txt",
    "info.txt",
    "initramfs-modules.txt",
    "modules-dep.txt",
    "network.txt",
    "modcheck.txt",
    "netconsole.txt",  # what netconsole.sh did (armed or why not), not a log
    "SHA256SUMS",
    "manifest.json",
}


_UNREAD = _NOT_LOGS - {"modcheck.txt", "info.txt", "cmdline.txt"}


@dataclass
class Inputs:
    source: str
    logs: dict[str, str] = field(default_factory=dict)  # file name -> text
    modcheck: dict[str, str] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)
    header: dict[str, str] = field(default_factory=dict)
    cmdline: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[str]:
        return sorted({*self.logs, *self.modcheck})


# A boot log is megabytes. 32 MiB of text costs the analysis ~110 MiB as lines: the listener analyses in its
# own process and stays under 256 MiB whatever one sender sends (a 1 GiB log took it to 427 MiB at 128 MiB).
MAX_READ = 32 << 20


def _read(path: Path, notes: list[str], limit: int | None = None) -> bytes:
    limit = MAX_READ if limit is None else limit
    data, more = read_bytes(path, limit)
    if more:
        notes.append(f"{path.name}: only the first {limit:,} bytes were read")
    return data


def load_inputs(path: Path, manifest: Manifest | None = None) -> Inputs:
    """What to analyse in a capture directory (its manifest read, unless given), or a log file."""
    if path.is_dir():
        return _load_capture(path, manifest)
    notes: list[str] = []
    data = _read(path, notes)
    if not data:
        raise RescueError(f"{path}: empty file, nothing to analyse")
    if not is_text(data):
        raise RescueError(
            f"{path}: not a text log (binary data)",
            hint="give a dmesg file, a console log or a capture directory",
        )
    text = unquote_printable(data.decode("utf-8", errors="replace"))
    inputs = Inputs(source=str(path), notes=notes)
    if path.name == "modcheck.txt" or text.startswith("# rescue modcheck"):
        inputs.modcheck[path.name] = text
    else:
        inputs.logs[path.name] = text
    return inputs


def _load_capture(path: Path, manifest: Manifest | None) -> Inputs:
    inputs = Inputs(source=str(path))
    if manifest is None and (path / MANIFEST).is_file():
        manifest = read_manifest(path)[1]
    if manifest is not None:
        inputs.header = dict(manifest.header)
        if manifest.status is not Status.COMPLETE:
            reason = manifest.reason or "no reason given"
            inputs.notes.append(f"capture status: {manifest.status} ({reason})")
    # The listener writes regular files only: a link could lead out of the capture, a FIFO could block.
    # Collector files nobody reads here are not read at all (thousands of captures can arrive at once).
    names = [
        f
        for f in path.iterdir()
        if f.name not in _UNREAD and not f.name.startswith(".") and not f.is_symlink() and f.is_file()
    ]
    # The limit holds for the whole capture. Small files first: one huge console log must not crowd out
    # dmesg.txt and modcheck.txt.
    budget = MAX_READ
    contents: dict[Path, bytes] = {}
    for f in sorted((f for f in names if f.name != MANIFEST), key=lambda f: f.stat().st_size):
        if budget <= 0:
            inputs.notes.append(f"{f.name}: not read, the capture's first {MAX_READ:,} bytes were")
            continue
        contents[f] = _read(f, inputs.notes, budget)
        budget -= len(contents[f])
    for f, data in sorted(contents.items()):
        if not is_text(data):
            inputs.notes.append(f"{f.name}: skipped, binary data")
            continue
        text = unquote_printable(data.decode("utf-8", errors="replace"))
        if f.name in ("modcheck.txt", "devices.txt"):  # the collector's own verdicts, not log lines
            inputs.modcheck[f.name] = text
        elif f.name == "info.txt":
            inputs.info = _keyvalues(text)
        elif f.name == "cmdline.txt":
            inputs.cmdline = text.strip()
        elif f.name not in _NOT_LOGS:
            inputs.logs[f.name] = text
            inputs.notes += _gaps(f.name, text)
    if not inputs.logs and not inputs.modcheck:
        raise RescueError(f"{path}: no dmesg, console log or modcheck.txt to analyse")
    return inputs


# The listener's netconsole.log (dmesg form) marks messages that never arrived over UDP.
_LOST = re.compile(r"^rescue: netconsole: (\d+) messages lost", re.MULTILINE)


def _gaps(name: str, text: str) -> list[str]:
    """A note when a log is known to miss messages: the cause may be among them."""
    lost = sum(int(n) for n in _LOST.findall(text)) if "messages lost" in text else 0
    return [f"{name}: {lost} kernel messages were lost on the way (netconsole over UDP)"] if lost else []


def _keyvalues(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if eq and key.strip().isidentifier():
            out[key.strip()] = value.strip()
    return out

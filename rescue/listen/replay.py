"""`rescue replay CAPTURE --to HOST:PORT`: send a stored capture again, as the stream kind it arrived in.

The stream is rebuilt from manifest.json: a raw body, a `RESCUE/1` header line with the stored header
fields, a tar of the stored files (gzip'd when it arrived gzip'd). Each file is checked against the
manifest's sha256 first: a capture that changed since it was stored is not replayed as if it were evidence.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import socket
import tarfile
from dataclasses import dataclass
from pathlib import Path

from rescue.capture.manifest import PARTIAL, Kind, Manifest, Status, read_manifest
from rescue.capture.store import SPOOL
from rescue.errors import RescueError
from rescue.listen.config import build_settings
from rescue.listen.wire import GZIP_MAGIC, header_line
from rescue.tokens import warn_visible_token


@dataclass(frozen=True)
class Replay:
    kind: str  # as in the manifest: raw, tar, gzip, header+raw, ...
    files: list[tuple[str, bytes]]
    stream: bytes


def parse_target(text: str) -> tuple[str, int]:
    """'HOST:PORT' or '[v6]:PORT' -> (host, port)."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RescueError(f"bad target {text!r}", hint="use HOST:PORT, e.g. 127.0.0.1:3333")
    return host, int(port)


def read_files(directory: Path, manifest: Manifest) -> list[tuple[str, bytes]]:
    files = []
    for entry in manifest.files:
        name = entry.name
        path = directory / name
        if not name or ".." in Path(name).parts or not path.is_file():
            raise RescueError(f"{directory}: file {name!r} of the manifest is missing")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise RescueError(f"{path}: sha256 differs from the manifest; the capture was changed since")
        files.append((name, data))
    if not files:
        raise RescueError(f"{directory}: the capture holds no files to replay")
    return files


def tar_bytes(files: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_replay(capture: Path, token: str | None = None) -> Replay:
    """The bytes to send for a stored capture, in the stream kind it arrived in.

    An incomplete capture stays incomplete: its header says so (`incomplete=1`), and a tar that was not
    extracted whole is sent as the spool that kept its wire bytes, cut where it was cut.
    """
    directory, manifest = read_manifest(capture)
    files = read_files(directory, manifest)
    kind = manifest.kind or Kind.RAW
    incomplete = manifest.status is not Status.COMPLETE
    spool = [data for name, data in files if name in (SPOOL + PARTIAL, SPOOL + ".gz" + PARTIAL)]
    header = dict(manifest.header)
    if incomplete:
        header["incomplete"] = "1"
    if incomplete and spool:
        body = spool[0]
    elif kind.body == "raw":
        if len(files) != 1:
            raise RescueError(f"{directory}: a raw capture with {len(files)} files")
        body = files[0][1]
    elif kind.body == "gzip" and len(files) == 1 and files[0][1].startswith(GZIP_MAGIC):
        body = files[0][1]  # a gzip'd file that held no tar was stored as it came
    elif kind.body in ("gzip", "tar.gz"):
        body = gzip.compress(tar_bytes(files), mtime=0)
    elif kind.body == "tar":
        body = tar_bytes(files)
    else:
        raise RescueError(f"{directory}: a {kind} capture has no body to replay")
    with_header = kind.value.startswith("header+") or token or incomplete
    head = header_line(header, token) if with_header else b""
    return Replay(str(kind), files, head + body)


REFUSED = b"rescue: refused: "


def send(stream: bytes, host: str, port: int, timeout: float = 30) -> None:
    """Send stream, then half-close and wait for the listener to close: it does so once it has it all.

    A listener that refuses says why in one line before it resets the connection: that line is the error.
    """
    answer = b""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            try:
                sock.sendall(stream)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # refused mid-way: the line it sent first says why
            while chunk := sock.recv(4096):
                answer = (answer + chunk)[-4096:]
    except OSError as e:
        if REFUSED not in answer:
            raise RescueError(f"cannot send to {host}:{port}: {e.strerror or e}") from None
    if REFUSED in answer:
        why = answer.split(REFUSED, 1)[1].split(b"\n", 1)[0].decode("utf-8", errors="replace")
        raise RescueError(f"{host}:{port} refused the capture: {why}")


def command(args: argparse.Namespace) -> int:
    host, port = parse_target(args.to)
    if args.token:
        warn_visible_token()
    token = build_settings({"token": args.token, "token_file": args.token_file}).token
    replay = build_replay(Path(args.capture), token=token)
    send(replay.stream, host, port, timeout=args.timeout)
    if args.json:
        doc = {"capture": args.capture, "kind": replay.kind, "files": len(replay.files)}
        print(json.dumps({**doc, "bytes": len(replay.stream), "to": f"{host}:{port}"}))
    else:
        print(f"replayed {args.capture} ({replay.kind}, {len(replay.files)} files, "
              f"{len(replay.stream)} bytes) to {host}:{port}")  # fmt: skip
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay",
        help="send a stored capture again",
        description="Send a stored capture again, in its original stream kind.",
    )
    p.add_argument("capture", help="a capture directory (or its manifest.json)")
    p.add_argument("--to", required=True, metavar="HOST:PORT", help="where to send it")
    p.add_argument(
        "--token-file", metavar="FILE", help="add the token in FILE (or $RESCUE_TOKEN) to the header"
    )
    p.add_argument("--token", help="the same, given on the command line (visible in ps: prefer --token-file)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON document")
    p.add_argument("--timeout", type=float, default=30, help="seconds to connect and deliver (default 30)")
    p.set_defaults(func=command)

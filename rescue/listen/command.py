"""`rescue listen` on the command line: its flags, and the server started with them (listen.server)."""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import fields

from rescue.errors import RescueError
from rescue.listen.config import Settings, build_settings
from rescue.listen.events import Events
from rescue.listen.server import ListenServer
from rescue.tokens import warn_visible_token


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("listen", help="receive files from a rescue shell (busybox nc) and analyse them")
    p.add_argument("--bind", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="TCP port (default 3333; 0 picks a free one)")
    p.add_argument(
        "--udp-port", type=int, help="UDP port for netconsole (default: the TCP port's number; 0: off)"
    )
    p.add_argument(
        "--netconsole-quiet",
        type=float,
        metavar="SECONDS",
        help="diagnose a netconsole stream silent this long (default 10)",
    )
    p.add_argument(
        "--advertise", metavar="ADDR[/PREFIX]", help="the address machines reach us at (NAT, a VM)"
    )
    p.add_argument("--dir", help="where captures are stored (default ./captures)")
    p.add_argument(
        "--token-file",
        metavar="FILE",
        help="require the token in FILE in a 'RESCUE/1 token=...' header line (re-read on SIGHUP; "
        "or set RESCUE_TOKEN)",
    )
    p.add_argument("--token", help="the same, given on the command line (visible in ps: prefer --token-file)")
    p.add_argument(
        "--allow", action="append", default=[], metavar="CIDR", help="accept only these peers (repeatable)"
    )
    proxy_help = "connections from --trusted-proxy peers start with a PROXY v1/v2 header (HAProxy send-proxy)"
    p.add_argument("--proxy-protocol", action="store_true", default=None, help=proxy_help)
    trusted_help = "load balancers whose PROXY headers are believed (repeatable)"
    p.add_argument("--trusted-proxy", action="append", default=[], metavar="CIDR", help=trusted_help)
    p.add_argument("--max-bytes", help="most bytes kept per connection (default 4G)")
    p.add_argument("--max-connections", type=int, help="most simultaneous senders (default 4096)")
    p.add_argument("--max-per-peer", type=int, help="most simultaneous senders of one address (default 128)")
    p.add_argument(
        "--min-free", help="refuse new captures while the capture disk has less free than this (default 256M)"
    )
    p.add_argument(
        "--first-block-timeout",
        type=float,
        help="seconds a sender has for its header or first block before it is the first to go when the "
        "listener is full (default 2)",
    )
    p.add_argument(
        "--min-rate", help="bytes/s under which a sender goes next when the listener is full (default 1K)"
    )
    p.add_argument(
        "--ipv6-only", action="store_true", default=None, help="with --bind ::, do not also take IPv4"
    )
    p.add_argument("--idle-timeout", type=float, help="close a sender silent this many seconds (default 60)")
    p.add_argument(
        "--drain-timeout", type=float, help="on TERM/INT, wait this long for transfers (default 10)"
    )
    p.add_argument("--json", action="store_true", default=None, help="one JSON event per line on stdout")
    p.add_argument("--log", help="also append human-readable lines to this file (reopened on SIGHUP)")
    p.add_argument("--config", help="TOML file with token, allow, max_bytes, ... (re-read on SIGHUP)")
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    cli = {f.name: getattr(args, f.name, None) for f in fields(Settings)}  # None: not given
    if args.token:
        warn_visible_token()
    settings = build_settings(cli)
    if not 0 <= settings.port <= 65535:
        raise RescueError(f"bad --port {settings.port}")
    if settings.udp_port is not None and not 0 <= settings.udp_port <= 65535:
        raise RescueError(f"bad --udp-port {settings.udp_port}")
    events = Events(json_events=settings.json, log=settings.log)

    async def main() -> None:
        await ListenServer(settings, events, cli).serve()

    asyncio.run(main())
    return 0

"""Listener settings: defaults, then the config file (re-read on SIGHUP), then command-line flags."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from rescue.errors import RescueError
from rescue.tokens import TOKEN, TOKEN_ENV, read_token_file
from rescue.units import parse_size

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: str, option: str = "--allow") -> Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise RescueError(
            f"bad {option} network {text!r}", hint="use CIDR notation such as 192.168.1.0/24"
        ) from None


_ADVERTISE = re.compile(r"([A-Za-z0-9.:-]{1,253})(?:/(\d{1,2}))?")


def parse_advertise(value: Any) -> tuple[str, int]:
    """--advertise ADDR[/PREFIX]: what the printed recipe names as the listener (prefix 24 when not given)."""
    if isinstance(value, tuple):
        return value  # already parsed (a SIGHUP re-read keeps the command line's value)
    m = _ADVERTISE.fullmatch(str(value))
    if not m or int(m.group(2) or 24) > 32:
        raise RescueError(f"bad --advertise {str(value)[:60]!r}", hint="an address, optionally /PREFIX")
    return m.group(1), int(m.group(2) or 24)


@dataclass(frozen=True)
class Settings:
    bind: str = "0.0.0.0"
    port: int = 3333
    udp_port: int | None = None  # netconsole (listen.netconsole); None: the TCP port's number, 0: off
    netconsole_quiet: float = 10.0  # seconds of silence after which a netconsole stream is diagnosed
    advertise: tuple[str, int] | None = None  # (address, prefix length) the recipe names instead of ours
    dir: Path = Path("captures")
    token: str | None = None
    token_file: Path | None = None  # read at start and on SIGHUP; never shown (unlike --token in ps)
    allow: tuple[Network, ...] = ()  # empty: every peer may send
    ipv6_only: bool = False  # --bind :: also takes IPv4 (mapped) unless this is set
    proxy_protocol: bool = False  # read a PROXY v1/v2 header from --trusted-proxy peers (listen.proxy)
    trusted_proxy: tuple[Network, ...] = ()
    max_bytes: int = 4 << 30  # per connection: the stream, and again the files extracted from it
    max_connections: int = 4096  # two descriptors each: the listener raises its open-file limit
    max_per_peer: int = 128  # simultaneous connections from one address (a trusted proxy excepted)
    min_free: int = 256 << 20  # refuse new captures while the capture file system has less free
    first_block_timeout: float = 2.0  # seconds to the first block: past it, first to go when full
    min_rate: int = 1024  # bytes/s: a sender slower than this (after first_block_timeout) goes next
    max_members: int = 10_000  # tar members per connection
    idle_timeout: float = 60.0  # seconds a sender may stay silent
    drain_timeout: float = 10.0  # on TERM/INT: how long in-flight transfers may take to finish
    legacy_encoding: str = "gbk"  # for file names that are not UTF-8
    json: bool = False
    debug: bool = False  # rescue --debug: tracebacks of internal errors
    log: Path | None = None
    config: Path | None = None

    def allows(self, peer: str) -> bool:
        if not self.allow:
            return True
        ip = ipaddress.ip_address(peer)
        return any(ip in net for net in self.allow)

    def trusts_proxy(self, peer: str) -> bool:
        """Whether this peer's connections start with a PROXY header naming the real sender."""
        if not self.proxy_protocol:
            return False
        ip = ipaddress.ip_address(peer)
        return any(ip in net for net in self.trusted_proxy)


# Given on the command line only; every other setting may also come from the config file.
_CLI_ONLY = frozenset({"json", "debug", "config"})
_FILE_KEYS = frozenset(f.name for f in fields(Settings)) - _CLI_ONLY


_SIZES = frozenset({"max_bytes", "min_free", "min_rate"})
_PATHS = frozenset({"dir", "log", "config", "token_file"})
_COUNTS = frozenset({"port", "udp_port", "max_connections", "max_members", "max_per_peer"})
_SECONDS = frozenset({"idle_timeout", "drain_timeout", "first_block_timeout", "netconsole_quiet"})
_FLAGS = frozenset({"json", "debug", "ipv6_only", "proxy_protocol"})
_TEXTS = frozenset({"bind", "token", "legacy_encoding"})


def _expect(key: str, value: Any, ok: bool, what: str) -> None:
    if not ok:
        # The value itself is not shown: under `token` it may be the secret.
        raise RescueError(f"{key} must be {what}, not a TOML {type(value).__name__}")


def coerce(key: str, value: Any) -> Any:
    """Turn a value from the config file or the command line into the field's type, or refuse it.

    Every key is checked for its type: a number where the token belongs must stop the listener (or
    keep the old settings on SIGHUP), never leave it running without a token check.
    """
    if value is None:
        return None
    if key in ("allow", "trusted_proxy"):
        option = "--" + key.replace("_", "-")
        items = value if isinstance(value, list | tuple) else [value]
        _expect(key, value, all(isinstance(v, str) for v in items), "a list of CIDR strings")
        return tuple(parse_network(v, option) for v in items)
    if key == "advertise":
        _expect(key, value, isinstance(value, str | tuple), "an address, optionally /PREFIX")
        return parse_advertise(value)
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if key in _SIZES:
        _expect(key, value, is_int or isinstance(value, str), "a whole number of bytes or a size like '4G'")
        size = parse_size(value)
        _expect(key, value, size >= 0, "zero or more")
        return size
    if key in _PATHS:
        _expect(key, value, isinstance(value, str | Path) and str(value) != "", "a path")
        return Path(value)
    if key in _COUNTS:
        _expect(key, value, is_int and value >= 0, "a whole number")
        return value
    if key in _SECONDS:
        number = is_int or isinstance(value, float)
        _expect(key, value, number and value > 0, "a number of seconds above 0")
        return float(value)
    if key in _FLAGS:
        _expect(key, value, isinstance(value, bool), "true or false")
        return value
    if key in _TEXTS:
        _expect(key, value, isinstance(value, str), "a string")
        return value
    raise RescueError(f"unknown setting {key!r}")


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise RescueError(f"cannot read config file {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RescueError(f"config file {path} is not valid TOML: {e}") from None
    unknown = sorted(set(data) - _FILE_KEYS)
    if unknown:
        raise RescueError(
            f"config file {path}: unknown key {unknown[0]!r}", hint=f"known: {', '.join(sorted(_FILE_KEYS))}"
        )
    try:
        return {k: coerce(k, v) for k, v in data.items()}
    except RescueError as e:
        raise RescueError(f"config file {path}: {e.message}", hint=e.hint) from None


_TOKEN_KEYS = ("token", "token_file")


def build_settings(cli: dict[str, Any], env: dict[str, str] | None = None) -> Settings:
    """Defaults < config file < $RESCUE_TOKEN < flags given on the command line (None means not given).

    The token is one setting whichever way it is given: the highest layer that names a token or a token
    file decides, and a token file is read here (so SIGHUP, which calls this again, re-reads it).
    """
    given = {k: coerce(k, v) for k, v in cli.items() if v is not None and v != []}
    settings = Settings()
    from_file: dict[str, Any] = {}
    config = given.get("config")
    if config is not None:
        from_file = read_config_file(config)
        settings = replace(settings, **from_file)
    names = {f.name for f in fields(Settings)}
    settings = replace(settings, **{k: v for k, v in given.items() if k in names})
    env_token = (os.environ if env is None else env).get(TOKEN_ENV) or None
    layers: tuple[dict[str, Any], ...] = (given, {"token": env_token} if env_token else {}, from_file)
    for layer in layers:
        if any(layer.get(k) is not None for k in _TOKEN_KEYS):
            token_file = layer.get("token_file")
            token = layer.get("token") or (read_token_file(token_file) if token_file else None)
            if token is not None and not TOKEN.fullmatch(token):
                raise RescueError("the token must be one word of printable characters (no spaces)")
            return _checked(replace(settings, token=token, token_file=token_file))
    return _checked(settings)


def _checked(settings: Settings) -> Settings:
    if settings.proxy_protocol and not settings.trusted_proxy:
        raise RescueError(
            "--proxy-protocol needs --trusted-proxy CIDR",
            hint="the load balancers' addresses: from anyone else a PROXY header would be a forged address",
        )
    return settings

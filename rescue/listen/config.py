"""Listener settings: defaults, then the config file (re-read on SIGHUP), then command-line flags."""

from __future__ import annotations

import ipaddress
import os
import re
import sys
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from rescue.errors import RescueError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_SIZE = re.compile(r"(\d+)\s*([kmgt]?)(i?b)?", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """'512M', '4G', '64KiB', '1000' -> bytes (binary units)."""
    if isinstance(text, int):
        return text
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise RescueError(f"bad size {text!r}", hint="use a number with an optional K, M, G or T suffix")
    return int(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " ")  # type: ignore[no-any-return]


def parse_network(text: str) -> Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise RescueError(
            f"bad --allow network {text!r}", hint="use CIDR notation such as 192.168.1.0/24"
        ) from None


@dataclass(frozen=True)
class Settings:
    bind: str = "0.0.0.0"
    port: int = 3333
    dir: Path = Path("captures")
    token: str | None = None
    token_file: Path | None = None  # read at start and on SIGHUP; never shown (unlike --token in ps)
    allow: tuple[Network, ...] = ()  # empty: every peer may send
    max_bytes: int = 4 << 30  # per connection
    max_connections: int = 256
    max_members: int = 10_000  # tar members per connection
    idle_timeout: float = 60.0  # seconds a sender may stay silent
    drain_timeout: float = 10.0  # on TERM/INT: how long in-flight transfers may take to finish
    legacy_encoding: str = "gbk"  # for file names that are not UTF-8
    json: bool = False
    log: Path | None = None
    config: Path | None = None

    def allows(self, peer: str) -> bool:
        if not self.allow:
            return True
        ip = ipaddress.ip_address(peer)
        return any(ip in net for net in self.allow)


_FILE_KEYS = {
    "bind",
    "port",
    "dir",
    "token",
    "token_file",
    "allow",
    "max_bytes",
    "max_connections",
    "max_members",
    "idle_timeout",
    "drain_timeout",
    "legacy_encoding",
    "log",
}


def coerce(key: str, value: Any) -> Any:
    """Turn a value from the config file or the command line into the field's type."""
    if value is None:
        return None
    if key == "allow":
        return tuple(parse_network(str(v)) for v in (value if isinstance(value, list | tuple) else [value]))
    if key == "max_bytes":
        return parse_size(value)
    if key in ("dir", "log", "config", "token_file"):
        return Path(value)
    if key in ("port", "max_connections", "max_members"):
        return int(value)
    if key in ("idle_timeout", "drain_timeout"):
        return float(value)
    return value


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
    except (TypeError, ValueError) as e:
        raise RescueError(f"config file {path}: {e}") from None


TOKEN_ENV = "RESCUE_TOKEN"
_TOKEN = re.compile(r"[!-~]{1,256}")  # printable, no spaces: it travels as one header word
_TOKEN_KEYS = ("token", "token_file")


def warn_visible_token() -> None:
    print(
        "rescue: warning: --token shows the token to every user of this machine (ps, /proc);"
        f" use --token-file FILE or {TOKEN_ENV}",
        file=sys.stderr,
    )


def read_token_file(path: Path) -> str | None:
    """The token in a file (surrounding white space ignored); None when the file is empty."""
    try:
        with path.open("rb") as f:
            data = f.read(4097)
    except OSError as e:
        raise RescueError(f"cannot read token file {path}: {e.strerror}") from None
    text = data.decode("utf-8", errors="replace").strip()
    if len(data) > 4096 or (text and not _TOKEN.fullmatch(text)):
        raise RescueError(f"token file {path}: not a token", hint="one word of printable characters")
    return text or None


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
            return replace(settings, token=token, token_file=token_file)
    return settings

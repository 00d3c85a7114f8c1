"""Listener settings: defaults, then the config file (re-read on SIGHUP), then command-line flags."""

from __future__ import annotations

import ipaddress
import re
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
    "token",
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
    if key in ("dir", "log", "config"):
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


def build_settings(cli: dict[str, Any]) -> Settings:
    """Defaults < config file < flags given on the command line (None means not given)."""
    given = {k: coerce(k, v) for k, v in cli.items() if v is not None and v != []}
    settings = Settings()
    config = given.get("config")
    if config is not None:
        settings = replace(settings, **read_config_file(config))
    names = {f.name for f in fields(Settings)}
    return replace(settings, **{k: v for k, v in given.items() if k in names})

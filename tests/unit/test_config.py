from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from rescue.errors import RescueError
from rescue.listen.config import build_settings
from rescue.units import parse_size


@pytest.mark.parametrize(
    ("text", "n"), [("1024", 1024), ("1K", 1024), ("512M", 512 << 20), ("4GiB", 4 << 30)]
)
def test_parse_size(text: str, n: int) -> None:
    assert parse_size(text) == n


def test_bad_size() -> None:
    with pytest.raises(RescueError, match="bad size 'lots'"):
        parse_size("lots")


def test_flags_win_over_the_config_file_which_wins_over_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('token = "file"\nallow = ["10.0.0.0/8"]\nmax_bytes = "1M"\n')
    s = build_settings({"config": str(cfg), "token": "flag", "allow": [], "port": None})
    assert s.token == "flag"  # given on the command line
    assert s.allow == (ipaddress.ip_network("10.0.0.0/8"),)  # from the file: no --allow given
    assert s.max_bytes == 1 << 20 and s.port == 3333  # file, default
    assert s.allows("10.1.2.3") and not s.allows("127.0.0.1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("allow = [", "is not valid TOML"),
        ('colour = "red"', "unknown key 'colour'"),
        ('allow = ["x"]', "bad --allow"),
    ],
)
def test_bad_config_files(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(RescueError, match=message):
        build_settings({"config": str(cfg)})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("token = 123456", "token must be a string, not a TOML int"),
        ("max_bytes = 4.5", "max_bytes must be a whole number of bytes"),
        ("max_connections = true", "max_connections must be a whole number"),
        ("idle_timeout = -1", "idle_timeout must be a number of seconds above 0"),
        ("allow = [10]", "allow must be a list of CIDR strings"),
        ('token = "two words"', "the token must be one word"),
        ("ipv6_only = 1", "ipv6_only must be true or false"),
        ("proxy_protocol = 1", "proxy_protocol must be true or false"),
        ("trusted_proxy = [1]", "trusted_proxy must be a list of CIDR strings"),
        ("advertise = 123456", "advertise must be an address"),
    ],
)
def test_config_values_of_the_wrong_type_are_refused_without_echoing_them(
    tmp_path: Path, text: str, message: str
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text + "\n")
    with pytest.raises(RescueError, match=message) as err:
        build_settings({"config": str(cfg)})
    assert "123456" not in str(err.value) and "two words" not in str(err.value)


def test_new_limits_have_defaults_and_take_sizes(tmp_path: Path) -> None:
    s = build_settings({})
    assert s.min_free == 256 << 20 and s.max_per_peer == 128 and s.first_block_timeout == 2.0
    cfg = tmp_path / "c.toml"
    cfg.write_text('min_free = "1G"\nmin_rate = 512\nmax_per_peer = 4\n')
    s = build_settings({"config": str(cfg)})
    assert (s.min_free, s.min_rate, s.max_per_peer) == (1 << 30, 512, 4)

"""The private apt configuration for another Debian suite: the mirror read from the host's sources (both
formats), and options that point apt at the cache only."""

from __future__ import annotations

from pathlib import Path

from rescue.harness.apt import DEFAULT_MIRROR, SuiteApt, mirror_from_sources

DEB822 = """Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: http://mirror.example.org/debian/
Suites: bookworm bookworm-updates
Components: main
"""


def test_mirror_from_deb822_sources_skips_the_security_archive(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    assert mirror_from_sources(tmp_path) == "http://mirror.example.org/debian"


def test_mirror_from_one_line_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb https://packages.example.com/apt stable main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://ftp.example.de/debian bookworm main\n"
    )
    assert mirror_from_sources(tmp_path) == "http://ftp.example.de/debian"


def test_no_debian_source_means_the_default_mirror(tmp_path: Path) -> None:
    assert mirror_from_sources(tmp_path) == DEFAULT_MIRROR


def test_suite_options_name_only_the_cache(tmp_path: Path) -> None:
    apt = SuiteApt.for_suite("sid", tmp_path, mirror="http://m.example/debian")
    options = apt.options()
    values = [o for o in options if o != "-o"]
    assert "Dir::Etc::sourceparts=-" in values and "Acquire::Check-Valid-Until=false" in values
    paths = [v for v in values if v.startswith("Dir::") and v != "Dir::Etc::sourceparts=-"]
    assert len(paths) == 3 and all(v.split("=", 1)[1].startswith(str(tmp_path)) for v in paths)
    assert not any("/etc/apt" in v for v in values)

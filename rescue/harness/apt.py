"""apt for another Debian suite than the host's, with a private configuration (/etc/apt is only read).

A suite gets its own directory under the cache: `sources.list` (the mirror the host's apt already uses, that
suite, main), the package lists and apt's cache. Every apt command runs with `-o Dir::Etc::sourcelist=F
-o Dir::Etc::sourceparts=- -o Dir::State::Lists=D -o Dir::Cache=C`, so nothing the host's apt knows changes.
The lists are fetched again when a day old. Several processes share a suite's directory under a file lock.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rescue.errors import RescueError
from rescue.run import run

DEFAULT_MIRROR = "http://deb.debian.org/debian"
APT_ETC = Path("/etc/apt")
_LISTS_MAX_AGE = 24 * 3600.0
_SUITE = re.compile(r"^[a-z][a-z0-9-]*$")


def mirror_from_sources(etc: Path = APT_ETC) -> str:
    """The Debian archive URI the host's apt uses (deb822 `.sources` or one-line `.list`), not -security."""
    texts = []
    for path in [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*"))]:
        try:
            texts.append((path.suffix, path.read_text(errors="replace")))
        except OSError:
            continue
    for suffix, text in texts:
        for uri, suites in _entries(suffix, text):
            if uri.rstrip("/").endswith("/debian") and not all(s.endswith("-security") for s in suites):
                return uri.rstrip("/")
    return DEFAULT_MIRROR


def _entries(suffix: str, text: str) -> Iterator[tuple[str, list[str]]]:
    if suffix == ".sources":
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, re.MULTILINE))
            if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes") != "no":
                for uri in fields.get("URIs", "").split():
                    yield uri, fields.get("Suites", "").split()
        return
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb":
            yield words[1], [words[2]]


def validity_options() -> list[str]:
    """Accept a Release file past its Valid-Until (its signature is still checked).

    sid's Release is valid for a week; a frozen or snapshot mirror (as machines of ours use, with their apt
    told so) serves an older one. The harness only fetches a kernel and generators to boot in qemu, so
    stale metadata costs nothing, while refusing it would fail every sid cell on a new machine whose apt
    was never told (seen in a debootstrap chroot: "Release file ... is expired").
    """
    return ["-o", "Acquire::Check-Valid-Until=false"]


@dataclass(frozen=True)
class SuiteApt:
    """apt-get and apt-cache for one suite, with its private state under `directory`."""

    suite: str
    directory: Path
    mirror: str

    @classmethod
    def for_suite(cls, suite: str, cache_dir: Path, mirror: str | None = None) -> SuiteApt:
        if not _SUITE.match(suite):
            raise RescueError(f"bad Debian suite name {suite!r}")
        return cls(suite, cache_dir / "apt" / suite, mirror or mirror_from_sources())

    def options(self) -> list[str]:
        d = self.directory
        return ["-o", f"Dir::Etc::sourcelist={d / 'sources.list'}", "-o", "Dir::Etc::sourceparts=-",
                "-o", f"Dir::State::Lists={d / 'lists'}", "-o", f"Dir::Cache={d / 'cache'}",
                *validity_options()]  # fmt: skip

    def update(self, *, max_age: float = _LISTS_MAX_AGE) -> None:
        """`apt-get update` into the private lists, unless they were fetched less than max_age ago."""
        stamp = self.directory / "updated"
        with locked(self.directory / ".lock"):
            if stamp.is_file() and time.time() - stamp.stat().st_mtime < max_age:
                return
            for sub in ("lists/partial", "cache/archives/partial"):
                (self.directory / sub).mkdir(parents=True, exist_ok=True)
            (self.directory / "sources.list").write_text(f"deb {self.mirror} {self.suite} main\n")
            run(["apt-get", *self.options(), "-q", "update"], timeout=600)
            stamp.write_text(f"{self.mirror} {self.suite}\n")

    def cache_query(self, *args: str) -> str:
        out = run(["apt-cache", *self.options(), *args], check=False)
        return out.stdout.decode(errors="replace") if out.returncode == 0 else ""

    def download(self, packages: Sequence[str], cwd: Path) -> list[Path]:
        """`apt-get download` of exact `name=version` items into cwd; the .deb files it wrote."""
        run(["apt-get", *self.options(), "-q", "download", *packages], cwd=cwd, timeout=900)
        return sorted(cwd.glob("*.deb"))


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on path (created), held for the block: one process builds, the others wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


class HostApt:
    """The host's own apt configuration, as it is (for packages of the host's suites)."""

    def options(self) -> list[str]:
        return []

    def update(self) -> None:
        """The host's lists are the host's business: never fetched from here."""

    def cache_query(self, *args: str) -> str:
        out = run(["apt-cache", *args], check=False)
        return out.stdout.decode(errors="replace") if out.returncode == 0 else ""

    def download(self, packages: Sequence[str], cwd: Path) -> list[Path]:
        run(["apt-get", "-q", "download", *packages], cwd=cwd, timeout=900)
        return sorted(cwd.glob("*.deb"))


Apt = SuiteApt | HostApt

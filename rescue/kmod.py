"""Kernel module metadata (modules.dep, .softdep, .alias, .builtin): what a module needs, and its closure.

Used on the host (check-image, the test initramfs builder) with the same rules the collector applies
in shell inside the initramfs: hard deps from modules.dep, soft "pre:"/"post:" deps from
modules.softdep, and names such as `crypto-crc32c` resolved through the aliases.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeGuard

_KO_SUFFIX = re.compile(r"\.ko(\.(xz|zst|gz))?$")


def module_name(path_or_name: str) -> str:
    """'kernel/fs/btrfs/btrfs.ko.xz' -> 'btrfs'; 'crc32c-generic' -> 'crc32c_generic' (as the kernel does)."""
    base = path_or_name.rsplit("/", 1)[-1]
    return _KO_SUFFIX.sub("", base).replace("-", "_")


_GLOB_CHARS = re.compile(r"[*?[]")


@functools.lru_cache(maxsize=65536)
def _literal_prefix(pattern: str) -> str:
    return _GLOB_CHARS.split(pattern, maxsplit=1)[0]


def _glob(pattern: str) -> Callable[[str], bool]:
    return lambda name: fnmatch.fnmatchcase(name, pattern)


@dataclass
class Need:
    """One module the roots need, and whether (and how) it is satisfied."""

    name: str  # as asked for: a module name or an alias such as crypto-crc32c
    kind: str  # "root", "dep" or "softdep"
    parent: str | None  # the module that asked for it (None for a root)
    providers: tuple[str, ...] = ()  # module names that satisfy it (several for an alias)
    status: str = "missing"  # in-image | builtin | missing
    provider: str | None = None  # the provider present, else the one module it would be
    witnesses: list[str] = field(default_factory=list)  # which metadata said the parent needs it

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "parent": self.parent,
            "status": self.status,
            "provider": self.provider,
            "witnesses": self.witnesses,
        }


class ModuleSource(Protocol):
    """What a closure walk asks of a kernel's module metadata (ModuleDB, or check-image's image+host)."""

    def resolve(self, name: str) -> tuple[str, ...]: ...

    def where(self, module: str) -> str | None: ...  # "in-image", "builtin", or None when absent

    def deps(self, module: str) -> dict[str, list[str]]: ...  # hard deps -> the witnesses naming them

    def softdeps(self, module: str) -> dict[str, list[str]]: ...


def closure(source: ModuleSource, roots: Iterable[str], *, softdeps: bool = True) -> list[Need]:
    """Every module the roots need, roots first, breadth-first, each name once (its witnesses merged)."""
    needs: dict[str, Need] = {}
    queue: list[tuple[str, str, str | None, list[str]]] = [(r, "root", None, []) for r in roots]
    while queue:
        name, kind, parent, witnesses = queue.pop(0)
        if name in needs:
            seen = needs[name].witnesses
            seen.extend(w for w in witnesses if w not in seen)
            continue
        providers = source.resolve(name) or (module_name(name),)
        need = Need(name, kind, parent, providers, witnesses=list(witnesses))
        present = [(p, where) for p in providers if (where := source.where(p))]
        if present:
            need.provider, need.status = present[0]
        elif len(providers) == 1:
            need.provider = providers[0]
        needs[name] = need
        # Follow what the present providers need (of a missing module, its own needs: to name them all).
        for mod in [p for p, _ in present] or list(providers[:1]):
            queue.extend((dep, "dep", mod, ws) for dep, ws in source.deps(mod).items())
            if softdeps:
                queue.extend((soft, "softdep", mod, ws) for soft, ws in source.softdeps(mod).items())
    return list(needs.values())


# ModuleDB.parse's arguments -> the files of a modules directory they come from.
METADATA = {
    "dep": "modules.dep",
    "softdep": "modules.softdep",
    "alias": "modules.alias",
    "builtin": "modules.builtin",
    "builtin_modinfo": "modules.builtin.modinfo",
}


@dataclass
class ModuleDB:
    paths: dict[str, str] = field(default_factory=dict)  # module -> path relative to the modules dir
    deps_of: dict[str, list[str]] = field(default_factory=dict)  # module -> hard deps (module names)
    softdeps_of: dict[str, list[str]] = field(default_factory=dict)  # module -> pre and post (names/aliases)
    aliases: list[tuple[str, str]] = field(default_factory=list)  # (pattern, module)
    builtin: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, moddir: Path) -> ModuleDB:
        """Read the text metadata of /lib/modules/KVER (missing files count as empty)."""

        def text(name: str) -> str:
            p = moddir / name
            return p.read_text(errors="replace") if p.is_file() else ""

        return cls.read(text)

    @classmethod
    def read(cls, text: Callable[[str], str]) -> ModuleDB:
        """From a reader of the metadata files by name (a directory's, or an image's)."""
        return cls.parse(**{key: text(name) for key, name in METADATA.items()})

    @classmethod
    def parse(
        cls,
        *,
        dep: str = "",
        softdep: str = "",
        alias: str = "",
        builtin: str = "",
        builtin_modinfo: str = "",
    ) -> ModuleDB:
        db = cls()
        for line in dep.splitlines():
            path, sep, rest = line.partition(":")
            if not sep:
                continue
            name = module_name(path.strip())
            db.paths[name] = path.strip()
            db.deps_of[name] = [module_name(d) for d in rest.split()]
        for line in softdep.splitlines():
            words = line.split()
            if len(words) >= 3 and words[0] == "softdep":
                db.softdeps_of.setdefault(module_name(words[1]), []).extend(
                    w for w in words[2:] if w not in ("pre:", "post:")
                )
        for line in alias.splitlines():
            words = line.split()
            if len(words) == 3 and words[0] == "alias":
                db.aliases.append((words[1], module_name(words[2])))
        db.builtin.update(module_name(line.strip()) for line in builtin.splitlines() if line.strip())
        # modules.builtin.modinfo: NUL-separated "module.key=value"; built-in aliases live only here.
        for record in builtin_modinfo.split("\0"):
            mod, dot, rest = record.partition(".")
            key, eq, value = rest.partition("=")
            if dot and eq and key == "alias":
                db.aliases.append((value, module_name(mod)))
        return db

    def resolve(self, name: str) -> tuple[str, ...]:
        """The modules a name stands for: itself when known, else every module whose alias matches."""
        mod = module_name(name)
        if mod in self.paths or mod in self.builtin:
            return (mod,)
        found: list[str] = []
        for pattern, target in self.aliases:
            # Most of the ~20,000 aliases are device globs (pci:v...); compiling each costs far more than
            # ruling it out by its literal prefix.
            if pattern != name and not (name.startswith(_literal_prefix(pattern)) and _glob(pattern)(name)):
                continue
            if target not in found:
                found.append(target)
        return tuple(found)

    def where(self, module: str) -> str | None:
        return "in-image" if module in self.paths else "builtin" if module in self.builtin else None

    def deps(self, module: str) -> dict[str, list[str]]:
        return {d: ["modules.dep"] for d in self.deps_of.get(module, [])}

    def softdeps(self, module: str) -> dict[str, list[str]]:
        return {s: ["modules.softdep"] for s in self.softdeps_of.get(module, [])}

    def closure_paths(self, roots: Iterable[str], leave_out: Iterable[str] = ()) -> list[str]:
        """Paths (relative to the modules dir) of the roots' closure, without the left-out modules."""
        drop = {module_name(m) for m in leave_out}
        paths: list[str] = []
        for need in closure(self, roots):
            for mod in need.providers:
                if mod in self.paths and mod not in drop and self.paths[mod] not in paths:
                    paths.append(self.paths[mod])
        return paths


def load_symbols(moddir: Path) -> dict[str, str]:
    """modules.symbols of a modules directory: exported symbol -> module (empty when absent)."""
    path = moddir / "modules.symbols"
    table: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            words = line.split()
            if len(words) == 3 and words[0] == "alias" and words[1].startswith("symbol:"):
                table.setdefault(words[1][7:], module_name(words[2]))
    return table


def is_kernel_version(kver: str | None) -> TypeGuard[str]:
    """A version that names a directory under /lib/modules, not a path (it may come from foreign input)."""
    return kver is not None and kver not in ("", ".", "..") and "/" not in kver


# --- installed kernels ----------------------------------------------------------------------------------

_VERSION_PART = re.compile(r"(\d+)")


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key for kernel versions by their numbers: 6.1.0-10 after 6.1.0-9, 6.12.57 after 6.1.0-57."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in _VERSION_PART.split(version) if p)


@dataclass(frozen=True)
class InstalledKernel:
    version: str  # uname -r, e.g. 6.1.0-57-cloud-amd64 (Debian moves the ABI number with security updates)
    moddir: Path  # ROOT/lib/modules/VERSION, with a modules.dep
    vmlinuz: Path | None  # /boot/vmlinuz-VERSION, or the 7.x packaging's /usr/lib/modules/VERSION/vmlinuz


def installed_kernels(root: Path = Path("/")) -> list[InstalledKernel]:
    """The kernels whose modules are installed under root (modules.dep present), oldest first."""
    found: dict[str, InstalledKernel] = {}
    for base in ("lib/modules", "usr/lib/modules"):  # the same directory on a merged-/usr system
        for moddir in sorted((root / base).glob("*")):
            version = moddir.name
            if version in found or not (moddir / "modules.dep").is_file():
                continue
            candidates = (root / "boot" / f"vmlinuz-{version}", moddir / "vmlinuz")
            vmlinuz = next((p for p in candidates if p.is_file()), None)
            found[version] = InstalledKernel(version, moddir, vmlinuz)
    return sorted(found.values(), key=lambda k: version_key(k.version))


KERNEL_ENV = "RESCUE_KERNEL"  # names the installed kernel the harness and the tests use (default: newest)


def chosen_kernel(root: Path = Path("/"), *, bootable: bool = False) -> InstalledKernel | None:
    """$RESCUE_KERNEL when set (it must be installed), else the newest installed kernel (with a vmlinuz
    when bootable); None when there is none."""
    kernels = [k for k in installed_kernels(root) if k.vmlinuz or not bootable]
    wanted = os.environ.get(KERNEL_ENV)
    if wanted:
        kernels = [k for k in kernels if k.version == wanted]
    return kernels[-1] if kernels else None

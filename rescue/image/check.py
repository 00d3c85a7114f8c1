"""`rescue check-image`: will this initramfs be able to load what the root file system needs?

The image's own metadata is not enough: mkinitramfs re-runs depmod inside the image after its hooks, so an
image whose libcrc32c.ko went missing has a modules.dep that no longer mentions it. So the closure of the
required modules is computed from every witness available, and each module it names must be in the image
or built into the kernel:
  - the image's modules.dep / modules.softdep / modules.alias / modules.builtin(.modinfo);
  - the host's /lib/modules/KVER metadata, when that kernel is installed here (what depmod said before);
  - each module's own .modinfo `depends=` and `softdep=` (written when the kernel was built);
  - symbols: what each module leaves undefined, against what modules export (modules.symbols).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rescue.diagnose import rules
from rescue.diagnose.findings import Draft, Evidence, Finding, build_findings
from rescue.diagnose.report import Report, emit
from rescue.diagnose.rules import Context
from rescue.errors import RescueError
from rescue.image.elf import KernelModule, read_module, unpack_ko
from rescue.image.initrd import MAX_UNPACKED, Initrd, module_dirs, read_initrd
from rescue.kmod import ModuleDB, Need, closure, is_kernel_version, load_symbols, module_name
from rescue.units import human_size, parse_size

HOST_MODULES = Path("/lib/modules")
MAX_METADATA = 32 << 20  # per modules.* file in the image; a whole Debian kernel's modules.alias is 1.4 MB
# Root file system types that say nothing about the disk (containers, live systems).
_PSEUDO_ROOTS = {
    "overlay",
    "tmpfs",
    "rootfs",
    "ramfs",
    "squashfs",
    "fuse",
    "9p",
    "virtiofs",
    "zfs",
    "nfs",
    "nfs4",
}
_CRC32C = {
    "libcrc32c",
    "crc32c",
    "crc32c_generic",
    "crc32c_intel",
    "crypto-crc32c",
    "crc32c-generic",
    "crc32c-intel",
}


@dataclass
class _Knowledge:
    """Everything known about one kernel's modules, from the image and (when installed) the host."""

    image: Initrd
    moddir: str | None
    image_db: ModuleDB
    host_db: ModuleDB | None
    host_symbols: dict[str, str]
    image_files: dict[str, str] = field(default_factory=dict)  # module -> path inside the image
    _elf: dict[str, KernelModule | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what could not be read, for the report

    @property
    def builtin(self) -> set[str]:
        return self.image_db.builtin | (self.host_db.builtin if self.host_db else set())

    def in_image(self, module: str) -> bool:
        return module in self.image_files

    def where(self, module: str) -> str | None:
        return "in-image" if self.in_image(module) else "builtin" if module in self.builtin else None

    def resolve(self, name: str) -> tuple[str, ...]:
        found = list(self.image_db.resolve(name))
        if self.host_db:
            found += [m for m in self.host_db.resolve(name) if m not in found]
        mod = module_name(name)
        if not found and self.in_image(mod):
            found = [mod]
        return tuple(found)

    def elf(self, module: str) -> KernelModule | None:
        if module not in self._elf:
            path = self.image_files.get(module)
            km = None
            if path:
                try:
                    km = read_module(unpack_ko(path, self.image.read(path)))
                except RescueError as e:
                    # Its .modinfo and symbols cannot witness anything: say so rather than check less quietly.
                    self.notes.append(f"{path}: unreadable module ({e}); its own dependencies were not read")
            self._elf[module] = km
        return self._elf[module]

    def deps(self, module: str) -> dict[str, list[str]]:
        """Hard dependencies of a module -> which witnesses name them."""
        out: dict[str, list[str]] = {}
        for witness, names in (
            ("image modules.dep", self.image_db.deps_of.get(module, [])),
            ("host modules.dep", self.host_db.deps_of.get(module, []) if self.host_db else []),
            (f"{module}.ko modinfo", [module_name(d) for d in (self.elf(module) or KernelModule()).depends]),
        ):
            for n in names:
                out.setdefault(n, []).append(witness)
        for sym in sorted((self.elf(module) or KernelModule()).undefined):
            owner = self.symbol_owner(sym)
            if owner and owner != module:
                out.setdefault(owner, [])
                tag = f"symbol {sym}"
                if not any(w.startswith("symbol ") for w in out[owner]):
                    out[owner].append(tag)
        return out

    def softdeps(self, module: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        modinfo = (self.elf(module) or KernelModule()).modinfo.get("softdep", [])
        from_modinfo = [w for v in modinfo for w in v.split() if w not in ("pre:", "post:")]
        for witness, names in (
            ("image modules.softdep", self.image_db.softdeps_of.get(module, [])),
            ("host modules.softdep", self.host_db.softdeps_of.get(module, []) if self.host_db else []),
            (f"{module}.ko modinfo", from_modinfo),
        ):
            for n in names:
                out.setdefault(n, []).append(witness)
        return out

    def symbol_owner(self, symbol: str) -> str | None:
        return self.host_symbols.get(symbol)


def _host_db(kver: str) -> tuple[ModuleDB | None, dict[str, str]]:
    moddir = HOST_MODULES / kver
    if not is_kernel_version(kver) or not (moddir / "modules.dep").is_file():
        return None, {}
    return ModuleDB.load(moddir), load_symbols(moddir)


def _image_db(image: Initrd, moddir: str | None) -> tuple[ModuleDB, dict[str, str]]:
    if moddir is None:
        return ModuleDB(), {}

    def text(name: str) -> str:
        path = f"{moddir}/{name}"
        # Parsed, a text file takes ~15 times its size in memory: a forged 300 MB modules.dep cost 4 GB.
        size = image.size_of(path)
        if size > MAX_METADATA:
            raise RescueError(f"{image.path}: {path} holds {size:,} bytes; refusing (real ones: a few MB)")
        return image.read_text(path)

    db = ModuleDB.read(text)
    prefix = moddir + "/"
    files = {
        module_name(n): n for n in image.names() if n.startswith(prefix) and re.search(r"\.ko(\.\w+)?$", n)
    }
    # A modules.dep line whose .ko is not in the image does not make the module present.
    db.paths = {m: p for m, p in db.paths.items() if m in files}
    return db, files


def default_roots(mounts: Path = Path("/proc/mounts"), fstab: Path = Path("/etc/fstab")) -> list[str]:
    """The running system's root file system type (from /proc/mounts, else /etc/fstab), else btrfs."""
    for source, field_no in ((mounts, 2), (fstab, 2)):
        try:
            lines = source.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split()
            if len(words) > field_no and not line.lstrip().startswith("#") and words[1] == "/":
                fstype = words[field_no]
                if fstype not in _PSEUDO_ROOTS and fstype != "auto":
                    return [fstype]
    return ["btrfs"]


def _root_name(k: _Knowledge, name: str) -> str:
    """A file system type (ext4) or module name as asked for: fs-ext4 when that alias exists."""
    if not k.resolve(name) and k.resolve(f"fs-{name}"):
        return f"fs-{name}"
    return name


def _evidence(image_path: str, need: Need) -> Evidence:
    if need.kind == "root":
        text = f"{need.name}: needed for the root file system, not in the image and not built in"
    else:
        said = "; ".join(need.witnesses) or "metadata"
        text = f"{need.parent} needs {need.name} ({need.kind}; {said}): not in the image, not built in"
    return Evidence(image_path, 0, text)


def findings_for(image_path: str, needs: list[Need], ctx: Context) -> list[Finding]:
    """Missing needs -> the same finding ids the boot-time analysis uses, with the same fixes."""
    drafts: dict[tuple[str, str], Draft] = {}
    by_id = rules.RULES_BY_ID
    in_btrfs = any(n.provider == "btrfs" and n.status != "missing" for n in needs)
    missing = {n.provider or n.name for n in needs if n.status == "missing"}
    for need in needs:
        # What a missing module needs comes with it when it is added: its own finding says enough.
        if need.status != "missing" or need.parent in missing:
            continue
        mod = need.provider or need.name
        if in_btrfs and (need.name in _CRC32C or mod in _CRC32C) and need.kind != "root":
            rule_id, params = "btrfs-crc32c-missing", {"missing": need.name, "module": "btrfs", "fs": "btrfs"}
        elif need.kind == "root":
            fs = need.name.removeprefix("fs-")
            rule_id, params = "fs-module-missing", {"fs": fs}
        elif need.kind == "softdep":
            rule_id, params = "module-softdep-missing", {"module": mod, "parent": need.parent or ""}
        else:
            rule_id, params = "module-missing", {"module": mod, "parent": need.parent or ""}
        rule = by_id[rule_id]
        key = (rule_id, params.get("module", params.get("fs", "")) if rule.group_by else "")
        drafts.setdefault(key, Draft(rule)).add(_evidence(image_path, need), dict(params), False)
    return build_findings(drafts.values(), ctx)


def _generator(image: Initrd) -> str | None:
    if image.exists("conf/initramfs.conf") or image.exists("scripts/local"):
        return "initramfs-tools"
    if image.exists("usr/lib/dracut") or image.exists("lib/dracut"):
        return "dracut"
    return None


def check_image(
    path: Path,
    *,
    require: Iterable[str] = (),
    kernel_version: str | None = None,
    max_unpacked: int = MAX_UNPACKED,
) -> Report:
    image = read_initrd(Path(path), max_unpacked)
    dirs = module_dirs(image)
    if kernel_version:
        kver = kernel_version
        if dirs and kver not in dirs:
            raise RescueError(
                f"{path}: no modules for kernel {kver} in the image (it has: {', '.join(dirs)})"
            )
    elif len(dirs) == 1:
        kver = next(iter(dirs))
    elif dirs:
        raise RescueError(
            f"{path}: modules for several kernels ({', '.join(sorted(dirs))})",
            hint="pick one with --kernel-version",
        )
    elif image.problems:  # the damage is what to report, not what it hides
        raise RescueError(f"{path}: damaged before its lib/modules directory ({image.problems[0]})")
    else:
        raise RescueError(
            f"{path}: the image has no lib/modules directory",
            hint="give --kernel-version to check against that kernel's built-in modules",
        )
    moddir = dirs.get(kver)
    image_db, files = _image_db(image, moddir)
    host_db, host_symbols = _host_db(kver)
    k = _Knowledge(image, moddir, image_db, host_db, host_symbols, files)
    roots = list(require) or default_roots()
    if host_db:
        unknown = [r for r in roots if not k.resolve(r) and not k.resolve(f"fs-{r}")]
        if unknown:
            raise RescueError(f"no module or file system called {', '.join(unknown)} in kernel {kver}")
    needs = closure(k, [_root_name(k, r) for r in roots])
    generator = _generator(image)
    ctx = Context(kver=kver, generator=generator, symbol_owner=k.symbol_owner)
    findings = findings_for(str(path), needs, ctx)
    for problem in image.problems:
        drafts = Draft(rules.RULES_BY_ID["initramfs-unpack-failed"])
        drafts.add(Evidence(str(path), 0, problem), {"reason": problem}, False)
        findings = build_findings([drafts], ctx) + findings
    witnesses = (
        ["image metadata"]
        + (["host " + str(HOST_MODULES / kver)] if host_db else [])
        + ["module .modinfo", "symbols" if host_symbols else "symbols (no modules.symbols)"]
    )
    segs = ", ".join(
        f"{s.compression} {human_size(s.size)}"
        + (f" -> {human_size(s.unpacked)}" if s.compression != "cpio" else "")
        for s in image.segments
    )
    counts = {st: sum(n.status == st for n in needs) for st in ("in-image", "builtin", "missing")}
    summary = {
        "image": f"{len(image.segments)} segment(s): {segs}; {sum(1 for _ in image.names())} members",
        "required": f"{', '.join(roots)}: {len(needs)} modules needed, {counts['in-image']} in the image, "
        f"{counts['builtin']} built in, {counts['missing']} missing",
        "checked with": ", ".join(witnesses),
    }
    extra = {
        "summary": summary,
        "image": {
            "path": str(path),
            "size": image.size,
            "segments": [
                {
                    "offset": s.offset,
                    "size": s.size,
                    "compression": str(s.compression),
                    "unpacked": s.unpacked,
                    "members": s.members,
                }
                for s in image.segments
            ],
            "problems": list(image.problems),
            "module_dir": moddir,
        },
        "required": roots,
        "host_metadata": bool(host_db),
        "closure": [n.to_json() for n in needs],
    }
    return Report(
        source=str(path),
        findings=findings,
        kernel=kver,
        generator=generator,
        tool="check-image",
        files=[str(path)],
        notes=k.notes,
        extra=extra,
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check-image", help="check that an initramfs holds what the root file system needs")
    p.add_argument("initrd", type=Path, help="initramfs image, e.g. /boot/initrd.img-$(uname -r)")
    p.add_argument(
        "--require",
        action="append",
        default=[],
        metavar="MODULE",
        help="module or file system type to check (repeatable; default: the root file system's type)",
    )
    p.add_argument("--kernel-version", metavar="V", help="kernel version (default: the one the image holds)")
    p.add_argument(
        "--max-unpacked",
        metavar="SIZE",
        default=MAX_UNPACKED,
        type=_size,
        help="refuse an image that unpacks to more (default 1G; it is held in memory)",
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON document")
    p.set_defaults(func=command)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except RescueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def command(args: argparse.Namespace) -> int:
    report = check_image(
        args.initrd, require=args.require, kernel_version=args.kernel_version, max_unpacked=args.max_unpacked
    )
    emit(report, as_json=args.json)
    return 1 if report.has_errors else 0

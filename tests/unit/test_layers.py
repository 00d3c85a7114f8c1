"""The tree shows the architecture: each module imports only from its own subpackage or a lower layer, there
are no import cycles, and no module is over 400 lines. Read from the source with ast, nothing imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent.parent / "rescue"

# Lower layers first. Data flows socket -> listen -> capture -> diagnose; image (check-image) reports through
# diagnose; the harness drives all of it; the CLI sits on top.
LAYERS = {
    "floor": 0,  # errors, run, reading, units, tokens, deadline, resources, kmod
    "capture": 1,
    "diagnose": 2,
    "summary": 2,  # the fleet index: the listener writes it, `rescue summary` reads it
    "image": 3,
    "listen": 3,
    "hooks": 3,
    "harness": 4,
    "cli": 5,
}


def _group(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in LAYERS:
        return parts[1]
    return "cli" if parts[-1] in ("cli", "__main__") else "floor"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        out[name] = path
    return out


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rescue"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("rescue"))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and str(arg.value).startswith("rescue."):
                found.add(str(arg.value))
    return found


MODULES = _modules()
GRAPH = {m: {i for i in _imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_stay_in_their_layer_or_below(module: str) -> None:
    if _group(module) == "cli":
        return  # the CLI imports each command's module by name, on purpose
    mine = _group(module)
    for target in GRAPH[module]:
        theirs = _group(target)
        if theirs == mine:
            continue
        assert LAYERS[theirs] < LAYERS[mine], f"{module} ({mine}) imports {target} ({theirs})"


def test_no_import_cycles() -> None:
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in GRAPH[m]:
            # a package's __init__ is not an edge of the data flow: its submodules are
            assert state.get(n) != 1, " -> ".join([*path, m, n])
            if n not in state:
                visit(n, [*path, m])
        state[m] = 2

    for m in MODULES:
        if m not in state:
            visit(m, [])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_over_400_lines(module: str) -> None:
    assert len(MODULES[module].read_text().splitlines()) <= 400

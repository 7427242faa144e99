"""The package's layering (docs/architecture.md): every import points down the data flow,
and no module imports itself back through others. Imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "moegs_bench"

# lowest first; a module may import from its own layer and the layers before it
LAYERS = [
    ["errors"],
    ["io", "progress", "device"],
    ["config"],
    ["data"],
    ["render"],
    ["eval"],
    ["optim"],
    ["experts"],
    ["train"],
    ["moe"],
    ["bench"],
    ["report"],
    ["sweep"],
    ["cli", "__main__"],
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(imported package module, line) for every import of a moegs_bench module in `path`."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                root = ".".join(base + ([node.module] if node.module else []))
            else:
                root = node.module or ""
            # `from pkg import sub` imports the submodule pkg.sub
            targets = [f"{root}.{a.name}" if f"{root}.{a.name}" in known else root for a in node.names]
        else:
            continue
        out += [(t, node.lineno) for t in targets if t.split(".")[0] == "moegs_bench"]
    return out


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def graph() -> dict[str, list[tuple[str, int]]]:
    mods = modules()
    known = set(mods)
    return {name: [(t, line) for t, line in imports(name, path, known) if t in known]
            for name, path in mods.items()}


def test_every_package_has_a_layer():
    missing = {layer(m) for m in modules()} - set(RANK) - {"__init__"}
    assert not missing, f"add {sorted(missing)} to LAYERS (and docs/architecture.md)"


def test_no_import_points_up_the_layers():
    upward = []
    for name, edges in graph().items():
        here = layer(name)
        for target, line in edges:
            there = layer(target)
            if here != "__init__" and RANK.get(there, -1) > RANK[here]:
                upward.append(f"{modules()[name].relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    edges = {name: sorted({t for t, _ in targets if t != name}) for name, targets in graph().items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in edges.get(node, []):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in edges:
        if node not in state and (cycle := visit(node)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_the_check_sees_relative_and_lazy_imports(tmp_path):
    """The checker itself: a lazy relative import from a lower layer upwards is seen."""
    src = tmp_path / "moegs_bench" / "data" / "x.py"
    src.parent.mkdir(parents=True)
    src.write_text("def f():\n    from ..bench.store import RunStore\n    from . import load\n")
    found = imports("moegs_bench.data.x", src, {"moegs_bench.bench.store", "moegs_bench.data.load"})
    assert ("moegs_bench.bench.store", 2) in found and ("moegs_bench.data.load", 3) in found

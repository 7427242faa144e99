"""What code a run's content key covers (docs/results.md, "Content key"): the files of named
package modules plus everything they import from the package, transitively, read from the
import statements (imports inside functions included), never past the layers below `bench`.

    module_closure(["experts.stg"]) -> ["config", "data.init", ..., "experts.stg", ...]
    code_fingerprint(["experts.stg", "train.loop"]) -> "<version>+src.<12 hex>"

Kernel sources compiled at run time (`*.cu`, `*.cpp`, ...) are covered with every module of the
top-level package holding them (`render/cuda/*.cu` with `render`). Package `__init__` files are
covered only when imported by name (`from .. import x` where x is
not a submodule), so an expert does not depend on its siblings through `experts/__init__.py`;
registries import their modules dynamically, which no key follows.
"""

from __future__ import annotations

import ast
import hashlib
import sys
from collections.abc import Iterable
from pathlib import Path

from .. import __version__
from ..errors import ConfigError

PACKAGE = "moegs_bench"
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# the layers below `bench` (docs/architecture.md): keys stop where the run store, harness,
# reports and command line begin, since those never change a trained run's numbers
COVERED = frozenset({"errors", "io", "progress", "device", "config", "data", "render", "eval", "optim",
                     "experts", "train", "moe"})
# sources read and compiled at run time (torch extensions), covered with their package
KERNEL_SUFFIXES = (".cu", ".cuh", ".cpp", ".c", ".h")

# run kind -> modules (below `bench`) whose code can change that kind's numbers; the expert's
# or router's own module is added by name (`run_modules`)
KEY_MODULES: dict[str, tuple[str, ...]] = {
    # training (loop, losses, views, sampling, densification), the render backends through
    # them, the one evaluation path and the efficiency measurement an expert run stores
    "expert": ("train.loop", "experts.views", "experts.segments", "eval.evaluate", "eval.efficiency",
               "eval.perf", "data.load"),
    # stage 2: the frozen pool, blending, router training, the baselines, the fused model and
    # pseudo-labels; the experts' own code enters through their run keys in the config
    "mixture": ("moe.pool", "moe.blend", "moe.baselines", "moe.train_router", "moe.responsibility",
                "moe.distill", "eval.evaluate", "eval.efficiency", "eval.perf", "data.load"),
}
KEY_MODULES["router"] = KEY_MODULES["mixture"]
# a retrained or distilled expert: an expert run plus the distillation targets
KEY_MODULES["distill"] = KEY_MODULES["expert"] + ("moe.distill",)

_parsed: dict[Path, tuple[tuple[int, int], bytes, list[tuple[int, str | None, tuple[str, ...]]]]] = {}


def _module_name(name: str) -> str:
    """`moegs_bench.experts.stg` or `experts.stg` -> `experts.stg` ("" for the package)."""
    if name == PACKAGE:
        return ""
    return name[len(PACKAGE) + 1:] if name.startswith(PACKAGE + ".") else name


def module_file(name: str, root: Path | None = None) -> Path | None:
    """The file of package module `name` (`a/b.py` or `a/b/__init__.py`), or None."""
    root = Path(root) if root is not None else _PACKAGE_ROOT
    parts = [p for p in _module_name(name).split(".") if p]
    for path in (root.joinpath(*parts).with_suffix(".py") if parts else None,
                 root.joinpath(*parts, "__init__.py")):
        if path is not None and path.is_file():
            return path
    return None


def _read(path: Path) -> tuple[bytes, list[tuple[int, str | None, tuple[str, ...]]]]:
    """(bytes, imports) of a module file; imports as (level, module, names), parsed once per
    file version (mtime and size)."""
    stat = path.stat()
    sig = (stat.st_mtime_ns, stat.st_size)
    cached = _parsed.get(path)
    if cached is not None and cached[0] == sig:
        return cached[1], cached[2]
    data = path.read_bytes()
    try:
        tree = ast.parse(data, filename=str(path))
    except SyntaxError as exc:
        raise ConfigError(f"{path}: cannot be parsed to find what a run key covers ({exc.msg}, "
                          f"line {exc.lineno})") from None
    found: list[tuple[int, str | None, tuple[str, ...]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(0, alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module, tuple(a.name for a in node.names)))
    _parsed[path] = (sig, data, found)
    return data, found


def _imports(name: str, path: Path, root: Path) -> set[str]:
    """Package modules (relative names) that module `name` at `path` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for level, module, names in _read(path)[1]:
        if level:
            base = [p for p in package.split(".") if p]
            if level - 1 > len(base):
                continue  # beyond the package: not ours
            base = base[: len(base) - (level - 1)]
            target = ".".join(base + ([module] if module else []))
        elif module == PACKAGE or (module or "").startswith(PACKAGE + "."):
            target = _module_name(module)
        else:
            continue
        if not names:  # `import moegs_bench.a.b`
            out.add(target)
            continue
        for n in names:  # `from pkg import sub` imports the submodule pkg.sub
            sub = f"{target}.{n}" if target else n
            out.add(sub if module_file(sub, root) is not None else target)
    return out


def _covered(name: str) -> bool:
    return name.split(".")[0] in COVERED


def module_closure(modules: Iterable[str], root: Path | None = None) -> list[str]:
    """The given package modules and every package module they import, transitively, that lies
    below `bench` (sorted relative names). ConfigError for a module the package lacks."""
    root = Path(root) if root is not None else _PACKAGE_ROOT
    todo = [_module_name(m) for m in modules]
    for m in todo:
        if module_file(m, root) is None:
            raise ConfigError(f"run key: no module {m!r} in {root}")
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name, root)
        if path is None:
            continue  # a name imported from a module, resolved to that module already
        todo += [m for m in _imports(name, path, root) if _covered(m) and m not in seen]
    return sorted(seen)


def code_fingerprint(modules: Iterable[str] | None = None, root: Path | None = None) -> str:
    """`<version>+src.<12 hex>`: sha256 over the relative path and bytes of each module of
    `module_closure(modules)` in path order; modules None: every .py file of the package."""
    root = Path(root) if root is not None else _PACKAGE_ROOT
    if modules is None:
        paths = [p for p in root.rglob("*.py") if "__pycache__" not in p.parts]
    else:
        names = module_closure(modules, root)
        paths = [module_file(m, root) for m in names]
        for folder in sorted({root / n.split(".")[0] for n in names}):
            if folder.is_dir():
                paths += [p for p in folder.rglob("*") if p.suffix in KERNEL_SUFFIXES and p.is_file()]
    h = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.relative_to(root).as_posix()):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update((_read(path)[0] if path.suffix == ".py" else path.read_bytes()) + b"\0")
    return f"{__version__}+src.{h.hexdigest()[:12]}"


def class_module(cls: type) -> str:
    """The module defining `cls`, relative to the package when it is in it."""
    return _module_name(cls.__module__)


def _external_hash(module: str) -> str:
    """12 hex of sha256 over the source file of a module outside the package (an expert or
    router registered from a notebook or a test), or of its name when it has no file."""
    path = getattr(sys.modules.get(module), "__file__", None)
    data = Path(path).read_bytes() if path and Path(path).is_file() else module.encode()
    return hashlib.sha256(data).hexdigest()[:12]


def run_code(kind: str, cls: type | None = None, root: Path | None = None) -> str:
    """The code fingerprint of a run of `kind` (KEY_MODULES) whose own code is class `cls`
    (an expert or router class; its module is added, and that module's imports)."""
    modules = list(KEY_MODULES[kind])
    if cls is None:
        return code_fingerprint(modules, root)
    own = class_module(cls)
    if module_file(own, root) is not None and _covered(own):
        return code_fingerprint(modules + [own], root)
    return f"{code_fingerprint(modules, root)}+{cls.__module__}.{_external_hash(cls.__module__)}"


def expert_code(name: str) -> str:
    """Code fingerprint of a run training expert `name` (its module and the shared code)."""
    from ..experts.registry import get_expert

    return run_code("expert", get_expert(name))


def distill_code(name: str) -> str:
    """Code fingerprint of a retrained or distilled run of expert `name`."""
    from ..experts.registry import get_expert

    return run_code("distill", get_expert(name))


def router_code(name: str) -> str:
    """Code fingerprint of a run training router `name` (its module and the stage-2 code)."""
    from ..moe.routers import get_router

    return run_code("router", get_router(name))


__all__ = ["COVERED", "KEY_MODULES", "class_module", "code_fingerprint", "distill_code", "expert_code",
           "module_closure", "module_file", "router_code", "run_code"]

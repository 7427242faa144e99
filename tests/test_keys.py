"""What a run's content key covers (docs/results.md, "Content key"): on a copy of the package,
editing a report table, the command line or the harness keeps every expert and router key;
editing one expert's module changes that expert's key only; editing shared render or training
code changes every expert's."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import moegs_bench
from moegs_bench.bench.code_keys import KEY_MODULES, code_fingerprint, module_closure, run_code
from moegs_bench.bench.store import RunId, RunStore, content_key, key_code
from moegs_bench.errors import ConfigError
from moegs_bench.experts.registry import EXPERTS, get_expert
from moegs_bench.moe.routers import get_router

PACKAGE = Path(moegs_bench.__file__).resolve().parent
EXPERT_NAMES = ("static", "stg", "ex4dgs", "ed3dgs")
ROUTER_NAMES = ("vapr", "pixel")


@pytest.fixture
def pkg(tmp_path) -> Path:
    """A private copy of the package's sources, to edit."""
    dst = tmp_path / "moegs_bench"
    shutil.copytree(PACKAGE, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dst


def keys(root: Path) -> dict[str, str]:
    """Code fingerprint of every expert's and router's runs in the package at `root`."""
    out = {f"expert {n}": run_code("expert", get_expert(n), root) for n in EXPERT_NAMES}
    out.update({f"router {n}": run_code("router", get_router(n), root) for n in ROUTER_NAMES})
    return out


def touch(path: Path, text: str = "\n# edited\n") -> None:
    path.write_text(path.read_text() + text)


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {k for k in before if before[k] != after[k]}


def test_the_copy_gives_the_package_keys(pkg):
    # a fingerprint over paths relative to the package root: where it lies does not matter
    assert keys(pkg) == keys(PACKAGE)
    assert run_code("expert", get_expert("stg"), pkg) == run_code("expert", get_expert("stg"))


def test_editing_tables_cli_harness_or_docs_keeps_every_key(pkg):
    """Catches a key over every file of the package (the former whole-package source hash)."""
    before = keys(pkg)
    for rel in ("report/tables/main.py", "report/format.py", "cli/run.py", "bench/harness.py",
                "bench/store.py", "report/html/pages.py"):
        touch(pkg / rel)
    (pkg / "README.md").write_text("docs")
    assert changed(before, keys(pkg)) == set()


def test_editing_an_expert_changes_its_key_only(pkg):
    """Catches a key over the whole experts/ folder, or one that follows experts/__init__ or
    the registry's dynamic imports into every sibling expert."""
    before = keys(pkg)
    touch(pkg / "experts" / "stg.py")
    assert changed(before, keys(pkg)) == {"expert stg"}
    touch(pkg / "experts" / "ex4dgs.py")
    assert changed(before, keys(pkg)) == {"expert stg", "expert ex4dgs"}


def test_editing_shared_render_or_training_code_changes_every_expert_key(pkg):
    """Catches a key over the named modules alone (render/reference.py is reached only through
    render/backend.py, imported by the training loop and the experts)."""
    before = keys(pkg)
    touch(pkg / "render" / "reference.py")
    after = keys(pkg)
    assert changed(before, after) == set(before)  # routers render their experts too
    touch(pkg / "train" / "losses.py")
    assert changed(after, keys(pkg)) >= {f"expert {n}" for n in EXPERT_NAMES}


def test_editing_a_router_changes_its_key_only(pkg):
    before = keys(pkg)
    touch(pkg / "moe" / "routers" / "pixel.py")
    assert changed(before, keys(pkg)) == {"router pixel"}
    touch(pkg / "moe" / "blend.py")  # the mixture's shared code: every router
    assert changed(before, keys(pkg)) == {f"router {n}" for n in ROUTER_NAMES}


def test_imports_inside_functions_and_kernel_sources_count(pkg):
    """Catches a closure over module-level imports only, and kernels compiled at run time left
    out of the key."""
    assert "data.fingerprints" not in module_closure(["experts.static"], pkg)
    touch(pkg / "experts" / "static.py", "\n\ndef _later():\n    from ..data import fingerprints\n"
                                        "    return fingerprints\n")
    assert "data.fingerprints" in module_closure(["experts.static"], pkg)
    before = keys(pkg)
    touch(pkg / "data" / "fingerprints.py")
    assert changed(before, keys(pkg)) == {"expert static"}
    (pkg / "render" / "cuda").mkdir(exist_ok=True)
    (pkg / "render" / "cuda" / "extra.cu").write_text("// a kernel\n")
    assert changed(before, keys(pkg)) == set(before)


def test_closure_and_fingerprint_are_deterministic():
    names = module_closure(["experts.stg", *KEY_MODULES["expert"]])
    assert names == sorted(names) and "experts.stg" in names and "render.backend" in names
    assert not any(n.split(".")[0] in {"bench", "report", "cli"} for n in names)
    assert not {"experts.ex4dgs", "experts.static"} & set(names)
    assert code_fingerprint(["train.loop", "experts.stg"]) == code_fingerprint(["moegs_bench.experts.stg",
                                                                               "train.loop"])
    with pytest.raises(ConfigError, match="experts.nothing"):
        code_fingerprint(["experts.nothing"])


def test_every_registered_expert_has_a_key_of_its_own():
    codes = {n: run_code("expert", cls) for n, cls in EXPERTS.items()}
    assert len(set(codes.values())) == len(codes)


def test_the_key_s_code_is_recorded_with_the_run(tmp_path):
    """`key_code` gives back the code a run's key covers, so that its key can be checked again
    (figures, export); a record from before falls back to its code version."""
    code = run_code("expert", get_expert("stg"))
    key = content_key({"a": 1}, "scene", code)
    run = RunStore(tmp_path).begin(RunId("d", "s", "stg"), key, {"a": 1}, code=code)
    record = run.load_config()
    assert key_code(record) == code
    assert content_key(record["config"], "scene", key_code(record)) == record["key"]
    assert key_code({"code_version": "0.1.0+src.abc.git.123"}) == "0.1.0+src.abc"

"""The package reads bottom-up: no module imports a layer above its own, and README's layout table is the tree.

Layers (STYLE.md): 0 the package's plumbing, 1 the numeric contract, 2 the
oracle and the benchmark baselines built on it, 3 the backends, 4 the
dispatching API and the validation statistics, 5 the integrations. Imports are
read from the source (``ast``), so a lazy import inside a function counts too.
"""

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "poc_kernels"

LAYERS = {
    "poc_kernels._C": 0,  # the compiled extension (csrc/), loaded by _custom_ops
    "poc_kernels._env": 0,
    "poc_kernels.constants": 0,
    "poc_kernels._checks": 0,
    "poc_kernels._cache": 0,
    "poc_kernels._custom_ops": 0,
    "poc_kernels.rng": 1,
    "poc_kernels.seeds": 1,
    "poc_kernels.vectors": 1,
    "poc_kernels.reference": 2,
    "poc_kernels.baselines": 2,
    "poc_kernels.backends": 3,
    "poc_kernels.api": 4,
    "poc_kernels.validation": 4,
    "poc_kernels.distribution": 4,  # the former name of validation.distribution
    "poc_kernels.audit": 5,  # runs a transformers model
    "poc_kernels.cli": 5,
    "poc_kernels.plots": 5,
    "poc_kernels.weights": 5,
    "poc_kernels.vllm": 5,
    "poc_kernels.ops": 5,  # the former name of backends.triton: importing it imports Triton
    "poc_kernels.__main__": 5,
    "poc_kernels": 5,  # the package itself re-exports the API
}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


MODULES = dict(_modules())
COMPILED = {"poc_kernels._C"}


def layer_of(module: str) -> int:
    """The layer of a package module: that of its longest listed prefix."""
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None)
    assert best is not None, f"{module} is in no layer of tests/test_layout.py"
    return LAYERS[best]


def imports_of(name: str, path: pathlib.Path) -> set:
    """The package modules and top-level third-party packages a module imports."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES or sub in COMPILED else target)
    return found


def _edges():
    for name, path in MODULES.items():
        for target in imports_of(name, path):
            yield name, target


EDGES = sorted(set(_edges()))


def test_every_module_has_a_layer():
    for name in MODULES:
        layer_of(name)


def test_no_module_imports_a_layer_above_it():
    bad = [
        f"{src} (layer {layer_of(src)}) imports {dst} (layer {layer_of(dst)})"
        for src, dst in EDGES
        if dst.split(".")[0] == "poc_kernels" and layer_of(dst) > layer_of(src)
    ]
    assert not bad, "\n".join(bad)


def test_the_oracle_and_the_backends_stay_apart():
    """The oracle uses no backend, and no backend but the oracle's own adapter uses the oracle or the baselines."""
    oracle = ("poc_kernels.reference", "poc_kernels.baselines")
    for src, dst in EDGES:
        if src in oracle:
            assert not dst.startswith("poc_kernels.backends"), (src, dst)
            assert dst not in ("poc_kernels.api", "poc_kernels"), (src, dst)
        if src.startswith("poc_kernels.backends") and src != "poc_kernels.backends.reference":
            assert dst not in oracle, (src, dst)


def test_only_the_vllm_layer_imports_vllm():
    for src, dst in EDGES:
        if dst == "vllm" or dst.startswith("vllm."):
            assert src == "poc_kernels.vllm" or src.startswith("poc_kernels.vllm."), (src, dst)


def test_the_contract_layers_import_no_integration_library():
    """The contract, the oracle, the backends and the API need no web, model or plotting library."""
    heavy = ("vllm", "fastapi", "pydantic", "transformers", "matplotlib", "httpx", "uvicorn")
    for src, dst in EDGES:
        if layer_of(src) <= 3 or src == "poc_kernels.api":
            assert dst.split(".")[0] not in heavy, (src, dst)


def _layout_table() -> list:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cell = line.split("|")[1]
        names = re.findall(r"`([^`]+)`", cell)
        first = pathlib.PurePosixPath(names[0])
        base = first.parent if "." in first.name else first
        rows.append([names[0]] + [str(base / n) if "/" not in n else n for n in names[1:]])
    return rows


def test_readme_layout_table_matches_the_tree():
    rows = _layout_table()
    listed = [p for row in rows for p in row]
    assert listed, "README has no layout table"
    missing = [p for p in listed if not (ROOT / p.rstrip("/")).exists()]
    assert not missing, f"README's layout table names paths that do not exist: {missing}"
    # every module of the package is listed, itself or through its folder
    covered = {p.rstrip("/") for p in listed}
    unlisted = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if path.name in ("__init__.py", "__main__.py") and str(rel.parent) in covered:
            continue
        if not any(str(rel) == c or str(rel).startswith(c + "/") for c in covered):
            unlisted.append(str(rel))
    assert not unlisted, f"README's layout table leaves out: {sorted(unlisted)}"


@pytest.mark.parametrize("name", ["poc_kernels.ops.backend", "poc_kernels.ops.compile_check"])
def test_former_triton_module_names_are_the_same_modules(name):
    import importlib

    pytest.importorskip("triton")
    old = importlib.import_module(name)
    new = importlib.import_module(name.replace("poc_kernels.ops", "poc_kernels.backends.triton"))
    assert old is new

"""The package reads bottom-up: no module imports a layer above its own, no import circles, a wall between the
engine and the node, and docs/layout.md's table is the tree.

Layers (STYLE.md): 0 the package's plumbing, 1 the numeric contract, 2 the
oracle and the benchmark baselines built on it, 3 the backends, 4 the
dispatching API and the validation statistics, 5 the integrations (the vLLM
engine side among them), 6 the HTTP node, which drives the engine. Imports are
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
    "poc_kernels._log": 0,  # the poc_kernels logger's handler (standard library only)
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
    "poc_kernels.selfcheck": 5,  # runs vLLM engines through poc_kernels.vllm's public names
    "poc_kernels.cheaper": 5,
    "poc_kernels.cli": 5,
    "poc_kernels.plots": 5,
    "poc_kernels.weights": 5,
    "poc_kernels.vllm": 5,  # the engine side: lives inside vLLM's processes
    "poc_kernels.vllm.server": 6,  # the former name of node.server (a re-export, see FORMER_NAMES)
    "poc_kernels.node": 6,  # the HTTP node: drives the engine through poc_kernels.vllm's public names
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
#: Modules kept under a former name so that old imports and commands keep working: each only re-exports its target.
FORMER_NAMES = {
    "poc_kernels.distribution": "poc_kernels.validation.distribution",
    "poc_kernels.vllm.models": "poc_kernels.weights",
    "poc_kernels.vllm.server": "poc_kernels.node.server",
}


def layer_of(module: str) -> int:
    """The layer of a package module: that of its longest listed prefix."""
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None)
    assert best is not None, f"{module} is in no layer of tests/test_layout.py"
    return LAYERS[best]


def _package_of(name: str, path: pathlib.Path) -> str:
    """The package a module's relative imports start from."""
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _source_of(node: ast.ImportFrom, package: str) -> str:
    """The module a ``from ... import`` statement of a module of ``package`` imports from."""
    if not node.level:
        return node.module
    base = package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: pathlib.Path, known=None) -> set:
    """The package modules (of ``known``, default the package's) and top-level third-party packages a module
    imports."""
    known = MODULES if known is None else known
    package = _package_of(name, path)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _source_of(node, package)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known or sub in COMPILED else target)
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


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


#: Modules outside the engine side that build an offline engine of their own (``vllm.LLM``, with ``SamplingParams``
#: for ordinary requests beside PoC ones); everything else of vLLM they reach through ``poc_kernels.vllm``.
OFFLINE_DRIVERS = {"poc_kernels.selfcheck": {"vllm"}}


def test_only_the_engine_side_imports_vllm():
    for src, dst in EDGES:
        if _in(dst, "vllm"):
            assert _in(src, "poc_kernels.vllm") or dst in OFFLINE_DRIVERS.get(src, ()), (src, dst)


def test_only_the_node_imports_the_web_stack():
    web = ("fastapi", "starlette", "uvicorn")
    for src, dst in EDGES:
        if dst.split(".")[0] in web:
            assert _in(src, "poc_kernels.node"), (src, dst)


def _names_imported(path: pathlib.Path, package: str, module: str) -> list:
    """The names a module imports ``from`` the package module ``module`` (relative or absolute), with line numbers."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if _source_of(node, package) == module:
                found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name == module]
    return found


def _public_names(path: pathlib.Path) -> set:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    raise AssertionError(f"{path} has no __all__")


def test_the_node_reaches_the_engine_only_through_its_public_names():
    """The node imports poc_kernels.vllm itself (no submodule) and only names of its __all__; vLLM never."""
    public = _public_names(MODULES["poc_kernels.vllm"])
    for name, path in MODULES.items():
        if not _in(name, "poc_kernels.node"):
            continue
        for dst in imports_of(name, path):
            assert not _in(dst, "vllm"), f"{name} imports {dst}: only poc_kernels.vllm talks to vLLM"
            if _in(dst, "poc_kernels.vllm"):
                assert dst == "poc_kernels.vllm", f"{name} imports {dst}, an engine internal"
        for imported, line in _names_imported(path, _package_of(name, path), "poc_kernels.vllm"):
            assert imported in public, f"{path}:{line} imports {imported} from poc_kernels.vllm, not in its __all__"


def test_the_node_uses_no_private_attribute_of_a_runner():
    """``runner._x`` or ``self.runner._x`` anywhere in the node: it would reach past the runner's public methods."""
    bad = []
    for name, path in MODULES.items():
        if not _in(name, "poc_kernels.node"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = node.value
                owner_name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", None)
                if owner_name in ("runner", "engine", "engine_client"):
                    bad.append(f"{path.name}:{node.lineno} {owner_name}.{node.attr}")
    assert not bad, bad


def test_the_engine_side_imports_nothing_from_the_node():
    """poc_kernels.vllm never imports the node, but for its former-name module, which only re-exports it."""
    for src, dst in EDGES:
        if _in(src, "poc_kernels.vllm") and _in(dst, "poc_kernels.node"):
            assert FORMER_NAMES.get(src) == dst, f"{src} imports {dst}: the engine side must not depend on the node"


@pytest.mark.parametrize("name", sorted(FORMER_NAMES))
def test_former_names_only_re_export(name):
    """A former-name module holds a docstring, imports from its target and a ``__main__`` guard: nothing else."""
    tree = ast.parse(MODULES[name].read_text())
    target = FORMER_NAMES[name]
    package = _package_of(name, MODULES[name])
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue  # the docstring
        if isinstance(node, ast.ImportFrom):
            where = _source_of(node, package)
            assert where == target, f"{name} imports from {where}, not from {target}"
            continue
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            continue
        raise AssertionError(f"{name} holds code besides its re-export: {ast.unparse(node)[:80]}")


def _cycles(modules, edges) -> list:
    """The import circles among ``modules`` (strongly connected components of more than one module) under
    ``edges`` (``(importer, imported)`` pairs)."""
    graph: dict = {name: set() for name in modules}
    for src, dst in edges:
        if dst in graph and dst != src:
            graph[src].add(dst)
    index: dict = {}
    low: dict = {}
    stack: list = []
    on_stack: set = set()
    found: list = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    circles = _cycles(MODULES, EDGES)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_the_circle_check_finds_a_circle(tmp_path):
    """The check itself: two modules that import each other (lazily, inside a function) are a circle."""
    (tmp_path / "a.py").write_text("def f():\n    from . import b\n")
    (tmp_path / "b.py").write_text("from .a import f\n")
    edges = []
    for mod in ("a", "b"):
        for dst in imports_of(f"pkg.{mod}", tmp_path / f"{mod}.py", known={"pkg.a", "pkg.b"}):
            edges.append((f"pkg.{mod}", dst))
    assert _cycles(["pkg.a", "pkg.b"], edges) == [["pkg.a", "pkg.b"]]
    assert _cycles(["pkg.a", "pkg.b"], [e for e in edges if e[0] == "pkg.a"]) == []


def test_the_contract_layers_import_no_integration_library():
    """The contract, the oracle, the backends and the API need no web, model or plotting library."""
    heavy = ("vllm", "fastapi", "pydantic", "transformers", "matplotlib", "httpx", "uvicorn")
    for src, dst in EDGES:
        if layer_of(src) <= 3 or src == "poc_kernels.api":
            assert dst.split(".")[0] not in heavy, (src, dst)


def _layout_table() -> list:
    rows = []
    for line in (ROOT / "docs" / "layout.md").read_text().splitlines():
        if not line.startswith("| `"):
            continue
        cell = line.split("|")[1]
        names = re.findall(r"`([^`]+)`", cell)
        first = pathlib.PurePosixPath(names[0])
        base = first.parent if "." in first.name else first
        rows.append([names[0]] + [str(base / n) if "/" not in n else n for n in names[1:]])
    return rows


def test_docs_layout_table_matches_the_tree():
    rows = _layout_table()
    listed = [p for row in rows for p in row]
    assert listed, "docs/layout.md has no layout table"
    missing = [p for p in listed if not (ROOT / p.rstrip("/")).exists()]
    assert not missing, f"docs/layout.md's table names paths that do not exist: {missing}"
    # every module of the package is listed, itself or through its folder
    covered = {p.rstrip("/") for p in listed}
    unlisted = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if path.name in ("__init__.py", "__main__.py") and str(rel.parent) in covered:
            continue
        if not any(str(rel) == c or str(rel).startswith(c + "/") for c in covered):
            unlisted.append(str(rel))
    assert not unlisted, f"docs/layout.md's table leaves out: {sorted(unlisted)}"


@pytest.mark.parametrize("name", ["poc_kernels.ops.backend", "poc_kernels.ops.compile_check"])
def test_former_triton_module_names_are_the_same_modules(name):
    import importlib

    pytest.importorskip("triton")
    old = importlib.import_module(name)
    new = importlib.import_module(name.replace("poc_kernels.ops", "poc_kernels.backends.triton"))
    assert old is new

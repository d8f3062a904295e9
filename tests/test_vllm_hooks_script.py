"""bench/vllm_hooks.py: a release's hook points read from its wheel, on two small fake wheels (no vLLM needed)."""

import importlib.util
import pathlib
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "vllm_hooks.py"


def _load():
    spec = importlib.util.spec_from_file_location("vllm_hooks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["vllm_hooks"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def _wheel(path, files):
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


REFERENCE = {
    "vllm/w.py": 'class Worker:\n    def load_model(self, *, dummy=False):\n        """Load."""\n'
    "        self.model_runner.load()\n    def step(self, a, b):\n        return a\n",
    "vllm/gone.py": "def f():\n    pass\n",
    "vllm/line.py": "x = 1\nself.input_batch = InputBatch()\n",
}
RELEASE = {
    # docstring and comments differ only: same; a body edit: edited; the signature changed: CHANGED
    "vllm/w.py": "class Worker:\n    def load_model(self, *, dummy=False):\n        # a comment\n"
    "        self.model_runner.load()\n    def step(self, a, c, d):\n        return a\n",
    "vllm/line.py": "self.input_batch = InputBatch(1)\n",
    "vllm/new.py": "def hook():\n    pass\n",
}


def test_statuses(tmp_path):
    mod = _load()
    ref = mod.Release(_wheel(tmp_path / "vllm-0.32.0-py3-none-any.whl", REFERENCE))
    rel = mod.Release(_wheel(tmp_path / "vllm-0.33.0-py3-none-any.whl", RELEASE))
    hooks = [
        mod.Hook("g", "vllm/w.py", "Worker.load_model", "", ("model_runner",)),
        mod.Hook("g", "vllm/w.py", "Worker.step", ""),
        mod.Hook("g", "vllm/w.py", "Worker.step", "", uses=1),
        mod.Hook("g", "vllm/w.py", "Worker.absent", ""),
        mod.Hook("g", "vllm/gone.py", "f", ""),
        mod.Hook("g", "vllm/line.py", r"re:\s*self\.input_batch = .*", ""),
        mod.Hook("g", "vllm/line.py", r"re:\s*self\.input_batch = .*", "", ("nothing_like_this",)),
        mod.Hook("g", "vllm/absent.py or vllm/new.py", "hook", ""),
    ]
    mod.HOOKS[:] = hooks
    rows = mod.compare([rel], ref)
    assert [cells[0] for _, _, cells in rows] == [
        "same",
        "CHANGED (signature)",
        "edited",  # only the first parameter is used, and it is the same
        "missing",
        "file missing",
        "edited",
        "CHANGED (no nothing_like_this)",
        "new",
    ]
    assert [r for _, r, _ in rows][-1] == "file missing"
    table = mod.render(rows, [rel], ref)
    assert "| 0.32.0 (reference) | 0.33.0 |" in table and "`absent.py` or `new.py` `hook`" in table


def test_the_command_line_refuses_a_missing_wheel(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "nothing.whl"), "--reference", str(tmp_path / "none.whl")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "wheels: " in out.stderr and "is not a file" in out.stderr


def test_the_command_line_writes_the_table(tmp_path):
    ref = _wheel(tmp_path / "vllm-0.32.0-py3-none-any.whl", REFERENCE)
    rel = _wheel(tmp_path / "vllm-0.25.1-py3-none-any.whl", RELEASE)
    out = tmp_path / "hooks.md"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(rel), "--reference", str(ref), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert text.startswith("# vLLM hook points by release") and "| 0.25.1 |" in text
    assert f"{len(_load().HOOKS)} hook points" in text


@pytest.mark.parametrize("name", ["vllm.whl", "x"])
def test_a_wheel_name_without_a_version_is_refused(tmp_path, name):
    with pytest.raises(ValueError, match="not a wheel file name"):
        _load().Release(_wheel(tmp_path / name, {}))

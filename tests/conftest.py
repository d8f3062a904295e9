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

import pytest
import torch

DATA = pathlib.Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def conformance():
    """The vectors of tests/data/conformance.json (produced by the original implementation)."""
    with open(DATA / "conformance.json") as f:
        return json.load(f)

import json
import pathlib

import pytest
import torch

DATA = pathlib.Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def conformance():
    """The vectors of tests/data/conformance.json (produced by the original implementation)."""
    with open(DATA / "conformance.json") as f:
        return json.load(f)


def pytest_collection_modifyitems(config, items):
    # The oracle is tested with the default thread count; pin it so a test run
    # never depends on the machine's core count for anything but speed.
    torch.manual_seed(0)

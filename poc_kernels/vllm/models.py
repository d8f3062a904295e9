"""The offline SmolLM2 weights, :mod:`poc_kernels.weights`, under their former name."""

from ..weights import *  # noqa: F403
from ..weights import __all__  # noqa: F401

"""The analytic law of PoC distances: :mod:`poc_kernels.validation.distribution`, under its former name."""

from .validation.distribution import *  # noqa: F403
from .validation.distribution import __all__  # noqa: F401

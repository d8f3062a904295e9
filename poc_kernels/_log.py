"""The package's log output: the ``poc_kernels`` logger, configured the way vLLM configures its own.

The node, the vLLM endpoint plugin and the worker extension call :func:`configure_logging` in the processes
they run in; without it Python's defaults would drop every INFO record (rounds, callbacks, shutdown timings).
"""

from __future__ import annotations

import logging
import os
import sys

#: ``0`` leaves the ``poc_kernels`` logger alone (as ``VLLM_CONFIGURE_LOGGING=0`` does for vLLM's).
CONFIGURE = "POC_CONFIGURE_LOGGING"
#: The level of the ``poc_kernels`` logger: DEBUG, INFO (default), WARNING, ERROR or CRITICAL.
LEVEL = "POC_LOGGING_LEVEL"
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_FORMAT = "%(levelname)s %(asctime)s [%(name)s] %(message)s"
_DATEFMT = "%m-%d %H:%M:%S"


def configure_logging() -> None:
    """Give the ``poc_kernels`` logger a stream handler at :data:`LEVEL`, once per process.

    Does nothing when :data:`CONFIGURE` is ``0`` or the logger already has a handler (the application
    configured it). A level outside DEBUG..CRITICAL raises a :class:`ValueError` naming :data:`LEVEL`.
    """
    if os.environ.get(CONFIGURE, "1").strip() == "0":
        return
    level = os.environ.get(LEVEL, "INFO").strip().upper()
    if level not in _LEVELS:
        raise ValueError(f"{LEVEL}: must be one of {', '.join(_LEVELS)}, got {os.environ.get(LEVEL)!r}")
    package = logging.getLogger("poc_kernels")
    if package.handlers:
        return
    handler = logging.StreamHandler(sys.stdout)  # where vLLM's own records go
    handler.setFormatter(logging.Formatter(_FORMAT, _DATEFMT))
    package.addHandler(handler)
    package.setLevel(level)
    package.propagate = False  # the handler above prints it; a configured root logger would print it twice

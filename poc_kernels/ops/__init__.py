"""Former name of :mod:`poc_kernels.backends.triton`, kept so that old imports keep working.

``poc_kernels.ops.<module>`` is the same module object as
``poc_kernels.backends.triton.<module>`` (importing this package imports Triton).
"""

import importlib as _importlib
import sys as _sys

_MODULES = ("_streams", "backend", "compile_check", "configs", "custom_ops", "distances", "inputs", "layer_hook")

for _name in _MODULES:
    _module = _importlib.import_module(f"poc_kernels.backends.triton.{_name}")
    _sys.modules[f"{__name__}.{_name}"] = _module
    globals()[_name] = _module

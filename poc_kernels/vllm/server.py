"""The former name of :mod:`poc_kernels.node.server`, so that ``python -m poc_kernels.vllm.server`` still starts a node.

The node (both HTTP APIs and its servers) lives in :mod:`poc_kernels.node`;
this module only re-exports it (``tests/test_layout.py`` checks that it holds
nothing else).
"""

from ..node.server import *  # noqa: F403
from ..node.server import __all__, main  # noqa: F401

if __name__ == "__main__":
    raise SystemExit(main())

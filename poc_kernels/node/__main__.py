"""``python -m poc_kernels.node``: the standalone PoC node (``poc-kernels-node``)."""

from .server import main

if __name__ == "__main__":
    raise SystemExit(main())

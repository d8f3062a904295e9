"""``python -m poc_kernels``: the validation command line (see ``poc_kernels.cli``)."""

import sys

from .cli import main

sys.exit(main())

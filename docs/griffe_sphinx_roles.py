"""A griffe extension for `make docs`: Sphinx roles in docstrings become plain code.

The package's docstrings name other objects with Sphinx roles
(``:class:`~.manager.PoCManager```, ``:mod:`.settings```); mkdocstrings would
show the role's text as it is. This turns each into a code span of the name,
without the ``~`` (``PoCManager``, ``.settings``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:mod|class|func|meth|attr|data|exc|obj|const):`(~)?([^`]+)`")


def _plain(match: re.Match) -> str:
    name = match.group(2)
    if match.group(1):  # ~a.b.C shows as C
        name = name.rsplit(".", 1)[-1]
    return f"``{name}``"


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx cross-reference roles into code spans, in every docstring."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_plain, obj.docstring.value)

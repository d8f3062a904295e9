"""The README is a doorway and the docs stay true to the code they describe.

The site itself is built by ``make docs`` (``mkdocs build --strict``: a broken
link, a page left out of the navigation or a missing docstring reference fails
it), in CI beside the tests. The docs' other checks live beside what they
check: the layout table in test_layout.py, the network figures in test_cli.py.
"""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SETTINGS = ROOT / "poc_kernels" / "node" / "settings.py"


def test_the_readme_is_at_most_300_lines_and_its_doc_links_exist():
    lines = README.read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines: move the detail to docs/"
    links = re.findall(r"\]\((docs/[^)#]+)", README.read_text())
    assert links, "README.md links no docs page"
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, missing


def _settings_table() -> list:
    doc = ast.get_docstring(ast.parse(SETTINGS.read_text()))
    return [line.replace("``", "`") for line in doc.splitlines() if line.startswith("| ``")]


def test_every_environment_variable_of_the_node_is_in_its_table():
    read = set(re.findall(r'_(?:int|float|str)\("([A-Z_]+)"', SETTINGS.read_text())) | {"POC_API"}
    listed = {re.match(r"\| `([A-Z_]+)`", row).group(1) for row in _settings_table()}
    assert read == listed, f"read but not listed: {sorted(read - listed)}; listed but not read: {sorted(listed - read)}"


def test_the_node_page_quotes_the_settings_table():
    """docs/node.md's table of environment variables is the one of poc_kernels/node/settings.py, row for row."""
    page = (ROOT / "docs" / "node.md").read_text().splitlines()
    rows = _settings_table()
    assert rows
    missing = [row for row in rows if row not in page]
    assert not missing, f"docs/node.md lacks (or differs in) these rows of settings.py's table: {missing}"


def test_the_node_page_quotes_the_metrics_table():
    """docs/node.md's table of metrics is the one of poc_kernels/node/metrics.py, row for row."""
    doc = ast.get_docstring(ast.parse((ROOT / "poc_kernels" / "node" / "metrics.py").read_text()))
    rows = [line.replace("``", "`") for line in doc.splitlines() if line.startswith("| ``")]
    page = (ROOT / "docs" / "node.md").read_text().splitlines()
    assert len(rows) >= 14
    missing = [row for row in rows if row not in page]
    assert not missing, f"docs/node.md lacks (or differs in) these rows of metrics.py's table: {missing}"

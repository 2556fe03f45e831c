"""Scripts import the installed uptrain package: none edits sys.path (or a child's PYTHONPATH) to reach
the checkout, which would run whatever tree the script sits in instead of what is installed. Read from
the source with ast, so a lazy edit inside a function counts too. (Scripts may import their siblings,
such as bench_common: Python puts a script's own folder on the path by itself.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
MUTATORS = {"insert", "append", "extend", "remove", "pop", "clear", "__setitem__", "__iadd__"}


def _is_sys_path(node: ast.AST) -> bool:
    """`sys.path`, or an item or slice of it."""
    if isinstance(node, ast.Subscript):
        node = node.value
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    )


def path_edits(source: str, filename: str = "<script>") -> list[str]:
    """`line: what` for every edit of the import path in one file's source."""
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in MUTATORS and _is_sys_path(node.func.value):
                found.append(f"{line}: sys.path.{node.func.attr}(...)")
            elif node.func.attr == "addsitedir":
                found.append(f"{line}: site.addsitedir(...)")
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(_is_sys_path(t) for t in targets):
                found.append(f"{line}: assigns sys.path")
        elif isinstance(node, ast.ImportFrom) and node.module == "sys":
            if any(alias.name == "path" for alias in node.names):
                found.append(f"{line}: from sys import path")
        elif isinstance(node, ast.Constant) and node.value == "PYTHONPATH":
            found.append(f"{line}: sets PYTHONPATH for a child process")
    return found


def test_no_script_edits_the_import_path():
    edits = {
        f"scripts/{path.name}:{edit}"
        for path in sorted(SCRIPTS.glob("*.py"))
        for edit in path_edits(path.read_text(encoding="utf-8"), str(path))
    }
    assert not edits, "scripts must import the installed package; remove:\n" + "\n".join(sorted(edits))


@pytest.mark.parametrize(
    "source",
    [
        "import sys\nsys.path.insert(0, 'x')\n",
        "import sys\ndef f():\n    sys.path.append('x')\n",
        "import sys\nsys.path[:0] = ['x']\n",
        "import sys\nsys.path += ['x']\n",
        "import sys\nsys.path = ['x']\n",
        "from sys import path\npath.insert(0, 'x')\n",
        "import site\nsite.addsitedir('x')\n",
        "import os\nenv = {**os.environ, 'PYTHONPATH': 'x'}\n",
    ],
)
def test_the_check_catches_each_way_of_editing_the_path(source):
    assert path_edits(source)


def test_reading_sys_path_or_importing_a_sibling_is_fine():
    assert not path_edits("import sys\nprint(sys.path[0], sys.executable)\nfrom bench_common import ROOT\n")

"""Every function in uptrain/ is at most 80 lines long and takes at most 10 parameters (self and cls
not counted), read from the source with ast. ALLOWED names the offenders left, each with the size it
has today: an allowed function may only shrink, and leaves the list once it fits."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "uptrain"
MAX_LINES, MAX_PARAMETERS = 80, 10
ALLOWED: dict[str, tuple[int, int]] = {}  # "file::function": (lines, parameters) at most; shrink only


def sizes() -> dict[str, tuple[int, int]]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            a = node.args
            names = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
            params = len(names) + (a.vararg is not None) + (a.kwarg is not None)
            params -= bool(names) and names[0] in ("self", "cls")
            key = f"{path.relative_to(PACKAGE).as_posix()}::{node.name}"
            size = (node.end_lineno - node.lineno + 1, params)
            found[key] = max(size, found.get(key, size))
    return found


def test_no_function_is_too_long_or_takes_too_many_parameters():
    over = {
        k: v
        for k, v in sizes().items()
        if (v[0] > MAX_LINES or v[1] > MAX_PARAMETERS)
        and not (k in ALLOWED and v[0] <= ALLOWED[k][0] and v[1] <= ALLOWED[k][1])
    }
    assert not over, f"over {MAX_LINES} lines or {MAX_PARAMETERS} parameters (lines, parameters): {over}"


def test_the_allowed_list_only_shrinks():
    found = sizes()
    fits = [
        k
        for k, v in ALLOWED.items()
        if k in found and found[k][0] <= MAX_LINES and found[k][1] <= MAX_PARAMETERS
    ]
    gone = [k for k in ALLOWED if k not in found]
    assert not fits and not gone, f"remove from ALLOWED (now within the limits, or gone): {fits + gone}"
    grown = {
        k: found[k]
        for k in ALLOWED
        if k in found and (found[k][0] > ALLOWED[k][0] or found[k][1] > ALLOWED[k][1])
    }
    assert not grown, f"grew past their allowance: {grown}"

"""The package's layering, read from the source with ast (every import, at any depth: lazy imports inside
functions count as much as the ones at the top of a file).

Floors, lowest first; a module may import from its own floor's package, from lower floors, and sideways
only where ALLOWED_SIDEWAYS says so (floor 2 is the only floor whose packages must not see each other):

  0  uptrain (the package __init__), uptrain.errors, uptrain.units, uptrain.threads, uptrain.heap,
     uptrain.task_table
  1  uptrain.architectures, uptrain.checkpoint, uptrain.data, uptrain.config
  2  uptrain.convert, uptrain.evaluate, uptrain.train, uptrain.hub   (train may import evaluate)
  3  uptrain.pipeline, uptrain.report, uptrain.comparison, uptrain.plots
  4  uptrain.cli, uptrain.__main__
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "uptrain"
FLOORS = {
    "uptrain": 0,
    "uptrain.errors": 0,
    "uptrain.units": 0,
    "uptrain.threads": 0,  # torch's thread count for a block: imports nothing of uptrain
    "uptrain.heap": 0,  # malloc_trim between layers: imports nothing of uptrain
    "uptrain.task_table": 0,  # lm_eval task scores as table rows and columns: imports nothing of uptrain
    "uptrain.architectures": 1,
    "uptrain.checkpoint": 1,
    "uptrain.data": 1,
    "uptrain.config": 1,
    "uptrain.convert": 2,
    "uptrain.evaluate": 2,
    "uptrain.train": 2,
    "uptrain.hub": 2,
    "uptrain.pipeline": 3,
    "uptrain.report": 3,
    "uptrain.comparison": 3,
    "uptrain.plots": 3,
    "uptrain.cli": 4,
    "uptrain.__main__": 4,
}
STRICT_FLOORS = {2}  # packages on these floors import nothing from each other...
ALLOWED_SIDEWAYS = {("uptrain.train", "uptrain.evaluate")}  # ...except these (importer, imported)
MAX_LINES = 350


@dataclass(frozen=True)
class Import:
    importer: str  # module name
    target: str  # the uptrain module it imports
    where: str  # file:line

    def __str__(self) -> str:
        return f"{self.where}: {self.importer} imports {self.target}"


def module_files() -> dict[str, Path]:
    files = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def imports_of(name: str, path: Path, known: set[str]) -> list[Import]:
    """Every import of an uptrain module in one file, with its line."""
    base = name if path.name == "__init__.py" else name.rpartition(".")[0]
    where = path.relative_to(PACKAGE.parent) if path.is_relative_to(PACKAGE.parent) else path.name
    found = []

    def add(target: str, line: int) -> None:
        while target and target not in known:  # `from a.b import c`: module a.b.c, or a name in a.b
            target = target.rpartition(".")[0]
        imp = Import(name, target, f"{where}:{line}")
        if target and target != name and imp not in found:
            found.append(imp)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = base
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                module = f"{anchor}.{module}" if module else anchor
            for alias in node.names:
                full = f"{module}.{alias.name}"
                add(full if full in known else module, node.lineno)
    return found


def all_imports() -> list[Import]:
    files = module_files()
    return [i for name, path in files.items() for i in imports_of(name, path, set(files))]


def unit_of(module: str) -> str | None:
    """The entry of FLOORS a module belongs to (the longest matching prefix)."""
    best = None
    for unit in FLOORS:
        inside = module == unit or (unit != "uptrain" and module.startswith(unit + "."))
        if inside and (best is None or len(unit) > len(best)):
            best = unit
    return best


def layering_violations(imports: list[Import]) -> list[str]:
    bad = []
    for imp in imports:
        a, b = unit_of(imp.importer), unit_of(imp.target)
        if a == b or a is None or b is None:  # modules on no floor fail test_every_module_has_a_floor
            continue
        if FLOORS[b] > FLOORS[a]:
            bad.append(f"{imp} (upward: floor {FLOORS[a]} -> {FLOORS[b]})")
        elif FLOORS[b] == FLOORS[a] and FLOORS[a] in STRICT_FLOORS and (a, b) not in ALLOWED_SIDEWAYS:
            bad.append(f"{imp} (sideways on floor {FLOORS[a]}: {a} -> {b})")
    return bad


def import_loops(imports: list[Import], packages: bool = False) -> list[list[Import]]:
    """One chain of imports per loop (strongly connected set of modules, or with `packages` of FLOORS'
    entries). A package __init__ importing its own children is not counted: re-exporting is not a loop
    of substance."""
    files = module_files()
    node = unit_of if packages else (lambda module: module)
    edges: dict[str, dict[str, Import]] = {}
    for imp in imports:
        reexport = files[imp.importer].name == "__init__.py" and imp.target.startswith(imp.importer + ".")
        a, b = node(imp.importer), node(imp.target)
        if not reexport and a != b and a is not None and b is not None:
            edges.setdefault(a, {}).setdefault(b, imp)
            edges.setdefault(b, {})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    loops = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                members = set(component)
                loops.append([i for m in sorted(members) for t, i in edges[m].items() if t in members])

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return loops


def test_every_module_has_a_floor():
    unplaced = sorted(m for m in module_files() if unit_of(m) is None)
    assert not unplaced, f"modules on no floor (add them to FLOORS): {unplaced}"


@pytest.mark.parametrize("packages", [False, True], ids=["modules", "packages"])
def test_no_import_loop(packages):
    loops = import_loops(all_imports(), packages)
    text = "\n\n".join("\n".join(f"  {imp}" for imp in loop) for loop in loops)
    assert not loops, f"{len(loops)} import loop(s); the imports inside each:\n{text}"


def test_no_upward_or_sideways_import():
    bad = layering_violations(all_imports())
    assert not bad, "imports against the layering:\n" + "\n".join(f"  {b}" for b in bad)


def test_the_checks_see_lazy_imports_and_catch_violations(tmp_path):
    """The checks can fail: a lazy upward import, a sideways one and a two-module loop, written here."""
    known = {"uptrain.convert.x", "uptrain.pipeline.run", "uptrain.evaluate.y", "uptrain.train.z"}
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from uptrain.pipeline.run import go\n    import uptrain.evaluate.y\n")
    found = imports_of("uptrain.convert.x", source, known)
    assert [(i.target, i.where.rsplit(":", 1)[1]) for i in found] == [
        ("uptrain.pipeline.run", "2"),
        ("uptrain.evaluate.y", "3"),
    ]
    bad = layering_violations(found)
    assert len(bad) == 2 and "upward" in bad[0] and "sideways" in bad[1]
    assert not layering_violations([Import("uptrain.train.z", "uptrain.evaluate.y", "t.py:1")])
    a = Import("uptrain.errors", "uptrain.units", "uptrain/errors.py:1")
    b = Import("uptrain.units", "uptrain.errors", "uptrain/units.py:9")
    assert import_loops([a, b]) == [[a, b]]
    c = Import("uptrain.data", "uptrain.config.load", "uptrain/data.py:3")
    d = Import("uptrain.config.schema", "uptrain.data", "uptrain/config/schema.py:5")
    assert import_loops([c, d]) == []  # no module loop: config.load and config.schema differ...
    assert import_loops([c, d], packages=True) == [[d, c]]  # ...but the packages import each other


def test_no_file_is_over_350_lines():
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in sorted(PACKAGE.rglob("*.py"))
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"files over {MAX_LINES} lines: {long}"

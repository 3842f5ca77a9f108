"""xaitf's modules import each other without circles.

Every module under ``xaitf/`` is parsed with :mod:`ast`; every ``import`` and ``from ... import``
counts, at module level or inside a function (an import hidden in a function is still a circle:
it only moves the failure to the first call). Relative imports are resolved, and ``from .pkg
import name`` points at the submodule ``pkg.name`` when there is one, else at ``pkg``.

Not counted (they cannot make a circle that matters):

* imports of the package root ``xaitf`` itself (``import xaitf`` is done first everywhere, to set
  ``TF_USE_LEGACY_KERAS`` before TensorFlow is imported; the root's public API is lazy);
* the implicit import of a package's ``__init__`` when one of its submodules is imported (a
  package that re-exports its submodules is not a circle with them).

Dynamic imports (``importlib.import_module`` with a computed name) are not seen.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "xaitf"


def module_names():
    """``{dotted name: path}`` of every module under xaitf/ (packages by their ``__init__``)."""
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _package_of(name, path):
    """The package a module's relative imports start from."""
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imports_of(name, path, modules):
    """The xaitf modules that ``name`` imports, anywhere in its code, as ``{target: line}``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = {}

    def add(target, line):
        # the most specific existing module: "xaitf.a.b.func" -> "xaitf.a.b"
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != PACKAGE and target != name:
            found.setdefault(target, line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(name, path).split(".")
                if node.level > 1:
                    base = base[:-(node.level - 1)]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base != PACKAGE and not base.startswith(PACKAGE + "."):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if sub in modules else base, node.lineno)
    return found


def import_graph():
    modules = module_names()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph):
    """One cycle as a list of modules (first == last), or None; depth-first search."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = {n: WHITE for n in graph}
    stack = []

    def visit(n):
        color[n] = GREY
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if color.get(m, BLACK) == GREY:
                return stack[stack.index(m):] + [m]
            if color.get(m) == WHITE:
                cycle = visit(m)
                if cycle:
                    return cycle
        stack.pop()
        color[n] = BLACK
        return None

    for n in sorted(graph):
        if color[n] == WHITE:
            cycle = visit(n)
            if cycle:
                return cycle
    return None


def describe(cycle, graph):
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + \
        f" -> {cycle[-1]}"


def test_the_graph_sees_relative_and_lazy_imports():
    graph = import_graph()
    assert "xaitf.keras_bridge" in graph["xaitf.training"]          # from .keras_bridge import tfk
    assert "xaitf.keras_bridge" in graph["xaitf.zoo.mnist"]         # from ..keras_bridge import tfk
    assert "xaitf.runs" in graph["xaitf.__main__"]                  # from . import runs (a package)
    assert "xaitf.tracking" in graph["xaitf.runs.cli"]              # inside a function
    assert "xaitf.runs.store" in graph["xaitf.runs.track"]           # from .store import ...
    assert not any(PACKAGE in targets for targets in graph.values())   # the root is not counted


def test_find_cycle_reports_a_cycle():
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}}) is None


def test_no_import_cycles():
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + describe(cycle, graph)

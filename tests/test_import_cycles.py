"""No import cycles between the modules of ``backend/`` and ``worker/``.

The graph is built from the source with ``ast`` (nothing is imported): an edge
``a -> b`` for every first-party module ``b`` that module ``a`` imports,
relative imports resolved against ``a``'s package, and ``from pkg import name``
counted as an import of ``pkg.name`` when that is a module (else of ``pkg``).
Importing ``pkg.sub`` also runs ``pkg/__init__``, so ``pkg`` gets an edge too,
except from a module inside ``pkg`` itself: Python runs a package's
``__init__`` before any of its modules, so by the time ``pkg.a`` imports
``pkg.b`` the package is already there (a package's ``__init__`` re-exporting
its modules' names is not a cycle).

Two graphs, checked separately:

- **Module level** (the rule): statements run when the module loads, including
  inside top-level ``if``/``try``/``with`` blocks, but not under
  ``if TYPE_CHECKING:`` (never executed) and not inside functions or classes.
  A cycle here makes the import order decide whether a name exists yet (a
  half-initialised module), and it ties together packages that should depend
  one way.
- **Every import**, those inside functions and under ``TYPE_CHECKING``
  included. An import deferred into a function cannot leave a half-initialised
  module behind, which is why it is kept apart from the rule above; but a
  first-party cycle hidden that way is still a two-way dependency, and it is
  exactly how the old ``services`` <-> ``webhooks`` and ``openapi`` <->
  ``openapi_routes`` cycles hid. Deferring heavy third-party imports (torch,
  yt_dlp) into functions is unaffected: only first-party edges count.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("backend", "worker")


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Module name -> file, for every module of the first-party packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _every_import(body: list[ast.stmt]):
    """Every import statement of the module, wherever it sits."""
    for node in ast.walk(ast.Module(body=body, type_ignores=[])):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


def _module_level(body: list[ast.stmt]):
    """Import statements executed when the module loads (see the module docstring)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            test = node.test
            if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
                    (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
                yield from _module_level(node.orelse)
                continue
            yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                yield from _module_level(block)
        elif isinstance(node, ast.With):
            yield from _module_level(node.body)


def _with_parents(name: str, modules: dict[str, Path]) -> set[str]:
    """``name`` and the packages above it (their ``__init__`` runs first), first-party only."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & modules.keys()


def import_graph(*, every_import: bool = False, root: Path = ROOT) -> dict[str, set[str]]:
    modules = module_files(root)
    statements = _every_import if every_import else _module_level
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in statements(ast.parse(path.read_text(), str(path)).body):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    edges |= _with_parents(alias.name, modules)
                continue
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            edges |= _with_parents(target, modules)
            for alias in node.names:
                if f"{target}.{alias.name}" in modules:
                    edges.add(f"{target}.{alias.name}")
        edges.discard(name)
        edges -= {parent for parent in _with_parents(name, modules) if parent != name}  # see the docstring
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None. Iterative depth-first search."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {node: WHITE for node in graph}
    for start in sorted(graph):
        if colour[start] != WHITE:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        colour[start] = GREY
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = BLACK
                stack.pop()
                path.pop()
            elif colour.get(child, BLACK) == GREY:
                return path[path.index(child):] + [child]
            elif colour.get(child) == WHITE:
                colour[child] = GREY
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
    return None


def test_the_graph_sees_the_imports():
    graph = import_graph()
    assert "backend.core.store" in graph["backend.core.connections"]
    assert "backend.core.connections" in graph["worker.serving.runtime"]
    # relative imports: worker/serving/jobs.py's "from ..pipeline import stages as pipeline"
    assert "worker.pipeline.stages" in graph["worker.serving.jobs"]


def test_deferred_imports_are_seen_only_in_the_second_graph():
    # backend/client/cli.py imports the audiocraft converter inside the command that needs it.
    assert "worker.models.audiocraft_convert" not in import_graph()["backend.client.cli"]
    assert "worker.models.audiocraft_convert" in import_graph(every_import=True)["backend.client.cli"]


def test_the_search_reports_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_level_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycles_through_deferred_imports_either():
    cycle = find_cycle(import_graph(every_import=True))
    assert cycle is None, "import cycle (counting imports inside functions): " + " -> ".join(cycle)

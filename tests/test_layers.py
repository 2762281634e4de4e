"""The package's layering: imports point one way (no cycle, lazy imports included), no module
imports a private name of a sibling, and no module outgrows what a reader holds in their head."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "flask_tickstock_monitor"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import that runs (at module level or inside a function), not those for typing."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _resolve(module: str, node: ast.ImportFrom) -> str:
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))
    return node.module or ""


def _with_parents(name: str) -> list[str]:
    """Importing ``a.b.c`` runs ``a``, ``a.b`` and ``a.b.c``: each that is ours."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts) + 1) if ".".join(parts[:i]) in MODULES]


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """Module -> the package modules it imports; and each private name taken from a sibling."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    private: list[str] = []
    for module, path in MODULES.items():
        for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                source = _resolve(module, node)
                if not source.startswith(PACKAGE):
                    continue
                targets = []
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    if submodule in MODULES:  # ``from . import events``: the module itself
                        targets.append(submodule)
                    else:
                        targets.append(source)
                        if alias.name.startswith("_"):
                            private.append(f"{module} imports {alias.name} from {source}")
            for target in targets:
                for name in _with_parents(target):
                    if name != module and not module.startswith(name + "."):
                        graph[module].add(name)
    return graph, private


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    graph, _ = import_graph()
    assert len(graph) > 20  # the walk found the package
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_checker_sees_a_cycle_and_a_lazy_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    lazy = ast.parse("def f():\n    from . import x\nif TYPE_CHECKING:\n    from . import y\n")
    imported = [alias.name for node in _runtime_imports(lazy) for alias in node.names]
    assert imported == ["x"]


def test_the_extension_sits_on_top_and_the_state_below_the_planes():
    graph, _ = import_graph()
    ext = f"{PACKAGE}.extension"
    importers = {module for module, targets in graph.items() if ext in targets}
    assert importers == {PACKAGE}  # its __init__ re-exports it; no module below imports it
    for plane in ("capture", "health", "relay", "errorlog", "dashboard"):
        assert f"{PACKAGE}.{plane}" in graph[ext]
        assert f"{PACKAGE}.{plane}" not in graph[f"{PACKAGE}.state"]
    transport = [m for m in graph if m.startswith(f"{PACKAGE}.transport")]
    for module in transport:  # the transport knows no plane, no config, no state
        assert all(
            t.startswith(f"{PACKAGE}.transport") or t in {f"{PACKAGE}._util", f"{PACKAGE}.events"}
            for t in graph[module]
        ), (module, graph[module])


def test_no_module_imports_a_private_name_of_a_sibling():
    _, private = import_graph()
    assert private == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_outgrows_what_a_reader_holds_in_their_head(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines"

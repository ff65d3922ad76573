"""The package's shape, read from its source: no import cycle, and a core that
never imports its windows (the D-Bus layer, momctl).

Every import counts: at the top of a module, inside a function, under
``TYPE_CHECKING``.  Only the composition root (``momservice.assembly``,
``momservice.momd``) may join the core to the bus.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "momservice"

#: The windows onto the core, and the modules that assemble the two.
WINDOWS = ("momservice.bus", "momservice.cli")
COMPOSITION_ROOT = {"momservice.assembly", "momservice.momd"}

def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in its text.

    ``from .pkg import thing`` imports ``pkg`` and, when ``thing`` is a
    module, ``pkg.thing`` too.  The implicit import of a parent package is
    not counted: every submodule would otherwise form a cycle with it.
    """
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _in(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_the_walk_sees_imports_inside_functions_and_relative_ones():
    # The walk itself must be able to fail: known edges of each kind.
    graph = _graph()
    assert "momservice.hypervisor.libvirt" in graph["momservice.assembly"]   # in a function
    assert "momservice.bus.server" in graph["momservice.assembly"]           # in a function
    assert "momservice.policy.compiler" in graph["momservice.policy.policyset"]  # relative
    assert "momservice.engine.core" in graph["momservice.bus.publisher"]     # two levels up
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_the_package_has_no_import_cycle():
    cycles = _cycles(_graph())
    assert not cycles, f"import cycles: {[sorted(c) for c in cycles]}"


def test_the_core_never_imports_the_bus_or_the_cli():
    wrong = {name: sorted(t for t in targets if _in(t, WINDOWS))
             for name, targets in _graph().items()
             if not _in(name, WINDOWS) and name not in COMPOSITION_ROOT}
    wrong = {name: targets for name, targets in wrong.items() if targets}
    assert not wrong, f"core modules importing a window: {wrong}"


def test_the_bus_is_attached_by_the_composition_root_only():
    importers = {name for name, targets in _graph().items()
                 if any(_in(t, ("momservice.bus",)) for t in targets)
                 and not _in(name, WINDOWS)}
    assert importers == {"momservice.assembly", "momservice.momd"}

"""momctl's modules import one another without a cycle, function-level imports included."""

from __future__ import annotations

import ast
from pathlib import Path

CLI = Path(__file__).resolve().parents[2] / "momservice" / "cli"


def _imports(path: Path) -> set[str]:
    """The cli modules ``path`` imports, wherever in the module the import stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:  # from .x import y, from . import x
                names = [node.module] if node.module else [a.name for a in node.names]
            elif (node.module or "").startswith("momservice.cli."):
                names = [node.module.removeprefix("momservice.cli.")]
            else:
                continue
            found.update(n.partition(".")[0] for n in names)
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("momservice.cli.").partition(".")[0]
                         for a in node.names if a.name.startswith("momservice.cli."))
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        for imported in sorted(graph.get(module, ())):
            cycle = visit(imported, path + [module])
            if cycle:
                return cycle
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module, [])
        if cycle:
            return cycle
    return None


def test_cli_modules_have_no_import_cycle():
    graph = {p.stem: _imports(p) for p in CLI.glob("*.py")}
    assert "monitor" in graph["momctl"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
